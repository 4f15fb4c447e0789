"""The textual codebook of AdaMatch (Sec. 3.2.1): the most frequent clinical entities of the training reports.

AdaMatch extracts entities from the training reports with a biomedical NER model and keeps the top kappa_0
of each of four groups (biological structure, detailed description, disease disorder, sign symptom). We have
no NER weights offline, so entities come from a documented rule set instead, applied to lower-cased
impressions:

1. **Phrases.** The text is cut into candidate phrases at punctuation, digits, de-identification gaps
   ("___") and stop words (:data:`STOP_WORDS`: function words, negation and hedging cues, report filler),
   as in RAKE keyword extraction. What remains are runs of content words such as "left lower lobe
   consolidation" (from "No left lower lobe consolidation.").
2. **Entities.** Every n-gram of 1-3 consecutive words inside a phrase whose *head* (last word) is a
   category cue of :data:`CATEGORY_CUES` is an entity of that category: "anatomy" (lobe, lung, heart,
   mediastinum, costophrenic, hilar, ...), "descriptor" (mild, small, bilateral, left, ...), "disorder"
   (the label vocabulary of the paper's Table I and its synonyms: effusion, pneumothorax, emphysema, ...)
   and "sign" (opacity, blunting, silhouette, markings, and visible devices such as tubes and clips).
   Plurals find their cue through a naive singular ("opacities" -> "opacity"). Adjectives (descriptors and
   anatomical adjectives such as "perihilar") are entities as single words only, so that "left lower" or
   "calcified lingular" are not entities of their own while "left lower lobe" is.
   A noun head followed by another noun cue is a modifier, not a head ("lung" in "low lung volumes"), so
   "low lung" is not an entity.
3. **Counting.** An entity counts once per report it occurs in (document frequency), so one long report
   cannot dominate; singular and plural forms count together and the entry shows the more frequent form.
   An n-gram is dropped when a longer entity that contains it is as frequent (it never occurs on its own).
4. **Selection.** The ``top`` most frequent entries are kept, ``ceil(top / 4)`` per category (the paper's
   top kappa_0 per group), ties broken alphabetically, so the file is the same on every run.

``python -m training.build_codebook --out assets/codebook.json`` writes the file read by
:func:`load_codebook`.
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from codixr.errors import CoDiXRError, InputError

DEFAULT_CODEBOOK_PATH = Path(__file__).resolve().parents[2] / "assets" / "codebook.json"
ENV_CODEBOOK = "CODIXR_CODEBOOK"
CATEGORIES: tuple[str, ...] = ("anatomy", "descriptor", "disorder", "sign")
MAX_NGRAM = 3

# Function words, negation/hedging cues and report filler. They delimit phrases and are never entities.
STOP_WORDS: frozenset[str] = frozenset("""
a about above after again against all also although an and any are as at be been being below between both
but by can cannot could did do does done due during each either for from further had has have having here
however if in into is it its itself may might more most much must near nor not of off on once only or other
otherwise our out over own per same should since so some such than that the their them then there these they
this those through thus to too under until up upon very was were what when where whether which while who
whom why will with within without would yet
no none negative neither absent absence free resolved resolution removed
possible possibly probable probably likely unlikely suggest suggests suggesting suggestive suspicious
consistent concerning compatible represent represents representing reflect reflects reflecting may
cannot excluded exclude excluding question questionable definite definitely evidence
seen noted identified demonstrated visualized visualised present appear appears appearing appearance
again interval since prior previous previously compared comparison study studies exam examination
radiograph radiographs radiographic film films view views image images imaging x ray xray pa ap frontal
lateral portable upright supine semi-upright dr md am pm patient findings finding impression report
reported recommend recommended recommendation followup follow-up clinical correlation further
dictated discussed telephone time date given limits limit overall otherwise essentially grossly
now today yesterday
""".split())

# Anatomical adjectives: entities alone ("perihilar"), never the head of a longer n-gram ("calcified lingular").
ANATOMY_ADJECTIVES: frozenset[str] = frozenset("""
mediastinal cardiomediastinal cardiac costophrenic hilar perihilar apical basilar bibasilar basal lingular
thoracic vertebral aortic tracheal sternal osseous bony pulmonary vascular cardiopulmonary parenchymal
abdominal atrial cardiophrenic pleural airspace
""".split())

# Head words that make an n-gram an entity, per category of the paper's four entity groups.
CATEGORY_CUES: dict[str, frozenset[str]] = {
    "anatomy": frozenset("""
lobe lung heart mediastinum cardiomediastinum angle hila hilum apex apices base lingula diaphragm
hemidiaphragm rib spine thorax vertebra vertebrae aorta arch knob pleura trachea carina clavicle sternum tissue
structure chest vasculature vascularity contour abdomen quadrant shoulder humerus airway bronchus bronchi zone
field parenchyma interstitium lymph node space midline border margin hemithorax bone skeleton glenoid scapula
ventricle atrium esophagus stomach bowel colon
""".split()) | ANATOMY_ADJECTIVES,
    "descriptor": frozenset("""
mild mildly small large moderate moderately minimal minor bilateral left right upper lower middle mid stable
chronic acute old new calcified patchy focal diffuse diffusely multifocal increased decreased enlarged normal
clear degenerative interstitial streaky subsegmental linear nodular reticular hyperexpanded low borderline
slight slightly severe prominent tortuous elevated healed posterior anterior medial superior inferior
unremarkable vague trace tiny scattered multiple extensive marked small-to-moderate well-expanded
hyperinflated ectatic atherosclerotic coarse dense faint subtle residual central peripheral
""".split()),
    "disorder": frozenset("""
atelectasis cardiomegaly consolidation edema effusion pneumonia pneumothorax lesion mass nodule infiltrate
congestion chf failure emphysema copd fibrosis scarring scar granuloma granulomata hernia fracture scoliosis
kyphosis spondylosis cardiomyopathy tuberculosis bronchitis bronchiectasis malignancy metastasis metastases
disease abnormality process pneumoperitoneum hydropneumothorax hemothorax osteopenia deformity cyst bulla
bullae cardiomediastinomegaly aneurysm dextroscoliosis levoscoliosis atherosclerosis arthritis osteoarthritis
infection aspiration empyema pneumomediastinum sarcoidosis histoplasmosis lymphadenopathy adenopathy
""".split()),
    "sign": frozenset("""
opacity blunting silhouette marking density calcification hyperinflation hyperexpansion thickening tortuosity
prominence enlargement elevation widening shift deviation change volume lucency haziness size
shadow pattern collapse loss overload cephalization sternotomy clip wire tube catheter pacemaker stent device
line port hardware prosthesis graft suture drain osteophyte spur implant
""".split()),
}
_CATEGORY_OF: dict[str, str] = {w: c for c in CATEGORIES for w in CATEGORY_CUES[c]}
# Cues that only stand alone as entities (adjectives): descriptors and anatomical adjectives.
SINGLE_WORD_CUES: frozenset[str] = CATEGORY_CUES["descriptor"] | ANATOMY_ADJECTIVES

_WORD = re.compile(r"[a-z][a-z'-]*[a-z]|[a-z]")
_BREAK = re.compile(r"[^a-z'\- ]+")  # punctuation, digits, underscores: phrase boundaries


class CodebookError(CoDiXRError, OSError):
    """The textual codebook file is missing or unreadable; the message says how to build it."""


@dataclass(frozen=True)
class CodebookEntry:
    """One keyword of the codebook: its text (lower case), entity group and report count in the source."""

    text: str
    category: str
    count: int


@dataclass
class Codebook:
    """The textual codebook: ranked entries plus where they came from (source, licence, rules)."""

    entries: list[CodebookEntry]
    source: str = ""
    licence: str = ""
    num_reports: int = 0
    rules: str = "codixr.findings.codebook rule set (see module docstring)"
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[CodebookEntry]:
        return iter(self.entries)

    @property
    def texts(self) -> list[str]:
        return [e.text for e in self.entries]

    def lookup(self, text: str) -> CodebookEntry | None:
        """The entry for a phrase, matching singular and plural forms ("effusions" finds "effusion"); else None."""
        return self._by_key.get(entity_key(text.lower()))

    @functools.cached_property
    def _by_key(self) -> dict[str, CodebookEntry]:
        index: dict[str, CodebookEntry] = {}
        for e in self.entries:
            index.setdefault(entity_key(e.text), e)
        return index

    def to_dict(self) -> dict:
        return {"name": "CoDiXR textual codebook (AdaMatch Sec. 3.2.1)", "source": self.source,
                "licence": self.licence, "num_reports": self.num_reports, "rules": self.rules, **self.meta,
                "categories": list(CATEGORIES), "entries": [asdict(e) for e in self.entries]}

    def save(self, path: str | os.PathLike) -> Path:
        """Write the codebook as JSON (stable key order, one entry per line)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = self.to_dict()
        entries = data.pop("entries")
        head = json.dumps(data, indent=2, ensure_ascii=False)[:-2]
        lines = ",\n".join("    " + json.dumps(e, ensure_ascii=False) for e in entries)
        path.write_text(f"{head},\n  \"entries\": [\n{lines}\n  ]\n}}\n", encoding="utf-8")
        return path

    @classmethod
    def from_dict(cls, data: dict) -> "Codebook":
        known = {"name", "source", "licence", "num_reports", "rules", "categories", "entries"}
        try:
            entries = [CodebookEntry(str(e["text"]), str(e["category"]), int(e["count"])) for e in data["entries"]]
        except (KeyError, TypeError, ValueError) as err:
            raise CodebookError(f"The codebook's entries are malformed ({err}); rebuild it with "
                                "`python -m training.build_codebook --out assets/codebook.json`.") from err
        return cls(entries=entries, source=data.get("source", ""), licence=data.get("licence", ""),
                   num_reports=int(data.get("num_reports", 0)), rules=data.get("rules", ""),
                   meta={k: v for k, v in data.items() if k not in known})


def _singular(word: str) -> str:
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith(("ss", "is", "us")) or len(word) <= 3 or not word.endswith("s"):
        return word
    return word[:-2] if word.endswith(("ches", "shes", "xes", "sses")) else word[:-1]


def _is_adjective(word: str) -> bool:
    return word in SINGLE_WORD_CUES or _singular(word) in SINGLE_WORD_CUES


def entity_key(text: str) -> str:
    """The key entities are counted under: words in naive singular ("pleural effusions" -> "pleural effusion")."""
    return " ".join(_singular(w) for w in text.split())


def cue_category(word: str) -> str | None:
    """The entity group a word cues ("anatomy", "descriptor", "disorder", "sign"), or None."""
    return _CATEGORY_OF.get(word) or _CATEGORY_OF.get(_singular(word))


def is_stop_word(word: str) -> bool:
    return word in STOP_WORDS or len(word) < 2


def phrase_spans(text: str) -> list[list[tuple[str, int, int]]]:
    """Candidate phrases of a text: runs of content words, each word as (lower-case word, start, end).

    Character offsets index the original ``text``; phrases break at punctuation, digits, "___" and stop words.
    """
    lowered = text.lower()
    if len(lowered) != len(text):  # a few characters change length when lower-cased ("İ"): keep offsets exact
        lowered = "".join(c.lower() if len(c.lower()) == 1 else c for c in text)
    phrases: list[list[tuple[str, int, int]]] = []
    for chunk in _chunks(lowered):
        current: list[tuple[str, int, int]] = []
        for m in _WORD.finditer(lowered, chunk[0], chunk[1]):
            word = m.group()
            if is_stop_word(word):
                if current:
                    phrases.append(current)
                current = []
            else:
                current.append((word, m.start(), m.end()))
        if current:
            phrases.append(current)
    return phrases


def _chunks(lowered: str) -> Iterator[tuple[int, int]]:
    start = 0
    for m in _BREAK.finditer(lowered):
        if m.start() > start:
            yield start, m.start()
        start = m.end()
    if start < len(lowered):
        yield start, len(lowered)


def extract_entities(text: str, max_ngram: int = MAX_NGRAM) -> list[tuple[str, str]]:
    """Entities of one report as (text, category), in order of their first word (duplicates kept)."""
    found = []
    for phrase in phrase_spans(text):
        words = [w for w, _, _ in phrase]
        for i in range(len(words)):
            for n in range(1, max_ngram + 1):
                if i + n > len(words):
                    break
                head = words[i + n - 1]
                category = cue_category(head)
                if category is None:
                    continue
                if _is_adjective(head):
                    if n > 1:
                        continue
                elif i + n < len(words) and cue_category(words[i + n]) and not _is_adjective(words[i + n]):
                    continue  # a modifier inside a longer compound ("lung" in "lung volumes")
                found.append((" ".join(words[i:i + n]), category))
    return found


def build_codebook(reports: Iterable[str], top: int = 200, min_count: int = 2, source: str = "",
                   licence: str = "", max_ngram: int = MAX_NGRAM) -> Codebook:
    """Build the codebook from report texts with the module's rule set (deterministic for a given input).

    Args:
        reports: report impressions (training split only, so that evaluation reports do not leak in).
        top: total number of entries; ``ceil(top / 4)`` per category (fewer where a group has fewer).
        min_count: entities found in fewer reports are never kept.
        source / licence: recorded in the file (the codebook is derived from those reports).
    """
    if top < 1:
        raise InputError("The codebook needs at least one entry per category (top >= 1).")
    counts: Counter[tuple[str, str]] = Counter()  # (key, category) -> number of reports
    surface: Counter[tuple[str, str]] = Counter()  # (key, surface text) -> occurrences
    num_reports = 0
    for text in reports:
        if not text:
            continue
        num_reports += 1
        found = extract_entities(text, max_ngram)
        counts.update({(entity_key(e), c) for e, c in found})
        surface.update((entity_key(e), e) for e, _ in found)
    # An n-gram never seen outside a longer entity containing it adds nothing: drop it.
    longest: dict[str, int] = {}
    for (key, _), count in counts.items():
        words = key.split()
        for n in range(1, len(words)):
            for i in range(len(words) - n + 1):
                sub = " ".join(words[i:i + n])
                longest[sub] = max(longest.get(sub, 0), count)
    # Each key is shown in its most frequent surface form ("effusions" and "effusion" count as one entry).
    shown: dict[str, str] = {}
    for (key, text), n in sorted(surface.items(), key=lambda item: (-item[1], item[0][1])):
        shown.setdefault(key, text)
    per_category = math.ceil(top / len(CATEGORIES))
    entries: list[CodebookEntry] = []
    for category in CATEGORIES:
        ranked = sorted(((shown[k], c) for (k, cat), c in counts.items()
                         if cat == category and c >= min_count and longest.get(k, 0) < c),
                        key=lambda item: (-item[1], item[0]))
        entries += [CodebookEntry(e, category, c) for e, c in ranked[:per_category]]
    entries.sort(key=lambda e: (-e.count, e.text))
    return Codebook(entries=entries[:top], source=source, licence=licence, num_reports=num_reports)


@functools.lru_cache(maxsize=4)
def _load(path: str, mtime_ns: int) -> Codebook:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise CodebookError(f"Cannot read the textual codebook {path} ({err}); rebuild it with "
                            "`python -m training.build_codebook --out assets/codebook.json`.") from err
    return Codebook.from_dict(data)


def load_codebook(path: str | os.PathLike | None = None) -> Codebook:
    """Read a codebook JSON (default: ``$CODIXR_CODEBOOK`` or the bundled ``assets/codebook.json``)."""
    path = Path(path or os.environ.get(ENV_CODEBOOK) or DEFAULT_CODEBOOK_PATH)
    if not path.is_file():
        raise CodebookError(f"The textual codebook {path} does not exist. Build it with "
                            f"`python -m training.build_codebook --out {path}` (needs torchxrayvision's IU reports).")
    return _load(str(path.resolve()), path.stat().st_mtime_ns)


def as_codebook(codebook: Codebook | str | os.PathLike | Sequence[str] | None) -> Codebook:
    """A Codebook from a Codebook, a JSON path, a list of keyword strings, or None (the bundled file)."""
    if isinstance(codebook, Codebook):
        return codebook
    if codebook is None or isinstance(codebook, (str, os.PathLike)):
        return load_codebook(codebook)
    words = [str(w).strip().lower() for w in codebook if str(w).strip()]
    if not words:
        raise InputError("The keyword list is empty: give at least one keyword, or None for the bundled codebook.")
    return Codebook(entries=[CodebookEntry(w, cue_category(w.split()[-1]) or "other", 0)
                             for w in dict.fromkeys(words)], source="given by the caller")
