"""A rule-based chest X-ray report labeler in the spirit of the CheXpert labeler (Irvin et al., 2019).

For each of the paper's 10 pathologies and "No Finding" a report gets, as in CheXpert:
``1`` (positive), ``0`` (negative), ``-1`` (uncertain) or ``None`` (not mentioned).

How a report is read:

1. **Sentences and clauses.** The lowercased text is split into sentences (``. ! ? ;`` and line
   breaks, not decimal points) and each sentence into clauses at scope breakers: "but", "however",
   "although", "though", "whereas", "except", "aside from", "apart from", and ", the/there/which…"
   / "and there/the…" starting a new statement.
2. **Mentions.** Each label has phrase patterns (e.g. Cardiomegaly: "cardiomegaly", "enlarged
   heart", "cardiac silhouette is enlarged"; Lung Lesion: "nodule", "mass", "lesion"; see
   :data:`MENTIONS`). "Normal" statements about an organ ("heart size is normal", "normal
   cardiomediastinal silhouette") are negative mentions of the matching label (:data:`NORMAL_SUBJECTS`).
3. **Negation and uncertainty.** Triggers act inside the clause only. A mention takes the status of
   the nearest trigger before it (any distance within the clause: "no pleural effusion or
   pneumothorax" negates both) and of the nearest trigger after it (at most 6 words away, no comma
   in between: "pneumothorax is not seen"). An uncertainty trigger does not reach past a comma, and
   one right after a negation is governed by it ("no suspicious nodules"). Priority: uncertain negations ("cannot exclude",
   "not ruled out") -> -1, then negations ("no", "without", "negative for", "free of", "resolved",
   "clear of", …) -> 0, then uncertainty ("possible", "may represent", "questionable", "likely",
   "suggestive of", "versus", "borderline", …) -> -1, else positive. Pseudo-negations such as
   "no change in" or "no interval increase" are not negations.
4. **Per report.** A label is 1 if any mention is positive, else -1 if any is uncertain, else 0 if
   any is negative, else None. "No Finding" is 1 when no pathology is positive or uncertain, no
   other CheXpert finding (fracture, pleural thickening) is positive, and the report either states
   normality ("no acute cardiopulmonary process", "normal chest", "no active disease") or negates
   at least one pathology; otherwise None (CheXpert never marks No Finding 0).

The labeler reads whatever text it is given; feed it the impression (and findings), not the
indication/history section.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Sequence

from codixr.metrics.classification import ClassificationReport, f1_metrics
from codixr.metrics.errors import MetricInputError
from codixr.modality import CONDITION_LABELS, NO_FINDING, PATHOLOGIES

POSITIVE, NEGATIVE, UNCERTAIN = 1, 0, -1

# Organ subjects whose size/shape statements decide Cardiomegaly and Enlarged Cardiomediastinum.
_HEART = r"heart(?: size)?|cardiac (?:silhouette|size|shadow|contours?)(?: size)?"
_MEDIASTINUM = (r"cardiomediastinal (?:silhouette|contours?|size|shadow)|cardiomediastinum|"
                r"mediastinum|mediastinal (?:silhouette|contours?|width|shadow)")
_BORDERLINE = r"borderline|top normal|upper limits? of normal|upper normal"
_ENLARGED = r"enlarged|enlargement|large|increased|prominent|prominence|widened|widening|wide"


def _organ_enlarged(subject: str) -> tuple[str, ...]:
    """'<subject> is (mildly) enlarged' and 'enlarged <subject>' phrasings."""
    return (
        rf"(?:{subject})(?:\s+(?!but\b|normal\b)[\w-]+){{0,5}}?\s+(?:{_ENLARGED})",
        rf"(?:{_ENLARGED})(?:\s+of the)?\s+(?:[\w-]+\s+){{0,2}}?(?:{subject})",
    )


# label -> regular expressions of its mentions (status decided by the context rules).
MENTIONS: dict[str, tuple[str, ...]] = {
    "Atelectasis": (r"atelecta(?:sis|ses|tic)", r"(?:lobar|lung|lobe|segmental|subsegmental) collapse",
                    r"collapse of the (?:[\w-]+ ){0,2}(?:lung|lobe)"),
    "Cardiomegaly": (r"cardiomegaly", r"cardiac enlargement", *_organ_enlarged(_HEART),
                     rf"borderline (?:enlarged )?(?:{_HEART})", rf"(?:{_HEART}) (?:is |are )?(?:{_BORDERLINE})"),
    "Consolidation": (r"consolidat(?:ion|ions|ive|ed)",),
    "Edema": (r"o?edema(?:tous)?", r"(?:pulmonary |vascular |venous )+(?:congestion|engorgement)",
              r"congestion", r"congestive (?:heart failure|changes?)", r"heart failure", r"chf", r"fluid overload",
              r"cephalization", r"kerley b", r"(?:vascular(?:ity|ure)?|vessels) (?:is |are )?(?:prominen(?:ce|t)|engorged)",
              r"prominen(?:ce|t) (?:of the )?(?:[\w-]+ ){0,2}?(?:vascular(?:ity|ure)?|vessels)", r"engorged"),
    "Enlarged Cardiomediastinum": (r"mediastinal (?:widening|enlargement|prominence)", r"cardiomediastinal enlargement",
                                   *_organ_enlarged(_MEDIASTINUM)),
    "Lung Lesion": (r"nodul(?:e|es|ar (?:density|densities|opacity|opacities|opacification))", r"mass(?:es)?(?! effect)",
                    r"(?<!osseous )(?<!bony )(?<!bone )(?<!skin )lesions?", r"tumou?rs?", r"neoplasms?", r"carcinoma",
                    r"malignan(?:cy|t)", r"metasta(?:sis|ses|tic)", r"lump"),
    "Lung Opacity": (r"opacit(?:y|ies)", r"opacification", r"opacified", r"air[- ]?space (?:disease|opacit(?:y|ies)|process)",
                     r"infiltrat(?:e|es|ion|ive)", r"(?<!bone )densit(?:y|ies)", r"haziness", r"hazy", r"ground[- ]glass"),
    "Pleural Effusion": (r"(?<!pericardial )effusions?", r"pleural fluid", r"hydrothorax",
                         r"fluid in the (?:[\w-]+ ){0,2}(?:pleural|fissure)"),
    "Pneumonia": (r"(?:broncho)?pneumonias?", r"pneumonitis", r"(?<!granulomatous )(?<!tuberculous )(?<!tuberculosis )infection",
                  r"infectious(?: process)?"),
    "Pneumothorax": (r"(?:hydro)?pneumothora(?:x|ces)", r"ptx"),
}

# label -> organ subjects; "<subject> ... normal" or "normal <subject>" is a negative mention.
NORMAL_SUBJECTS: dict[str, str] = {"Cardiomegaly": _HEART, "Enlarged Cardiomediastinum": _MEDIASTINUM}
_NORMAL_WORD = r"normal|within normal limits|within limits of normal|unremarkable"

# Statements that the study as a whole is normal (evidence for No Finding).
NORMAL_STUDY: tuple[str, ...] = (
    r"no (?:(?:radiographic )?evidence (?:of|for) )?(?:significant |new |other )?(?:acute|active) (?:(?:cardiopulmonary|cardiac|pulmonary|lung|"
    r"intrathoracic|thoracic|chest|radiographic|cardiothoracic|osseous|bony|xxxx|related|or|and|chronic) )*"
    r"(?:process(?:es)?|abnormalit(?:y|ies)|disease|findings?|pathology|changes?)",
    r"no (?:radiographic )?(?:evidence of )?(?:significant )?(?:abnormalit(?:y|ies)|abnormal findings)",
    r"(?:normal|negative|unremarkable) (?:chest|study|exam(?:ination)?|radiograph(?:s|ic examination)?)",
    r"(?:chest|study|exam(?:ination)?|radiographs?) (?:is |are )?(?:otherwise )?(?:normal|negative|unremarkable)",
)

# Other CheXpert findings that, when positive, rule out "No Finding" (they are not labels here).
OTHER_FINDINGS: tuple[str, ...] = (r"fractures?", r"pleural (?:thickening|scarring|plaques?|fibrosis)", r"fibrothorax")

# Trigger phrases. Overlapping triggers: the longest wins ("can not exclude" is not a negation).
_NEG_UNCERTAIN_PRE = (r"(?:cannot|can not|can't|could not|unable to) (?:be )?(?:exclude|excluded|rule out|ruled out)",
                      r"not (?:be )?(?:excluded|ruled out)", r"rule out", r"r/o", r"(?:evaluate|assess) for")
_NEG_UNCERTAIN_POST = (r"(?:cannot|can not|can't|could not) be (?:entirely |completely )?(?:excluded|ruled out)",
                       r"(?:may |might |will |would |could )?not be (?:well )?(?:seen|demonstrated|visible|visualized|identified|detected)",
                       r"(?:is |are )?not (?:entirely |completely )?(?:excluded|ruled out)")
_NEG_PRE = (r"no", r"not", r"without", r"negative for", r"free of", r"absence of", r"absent", r"resolution of",
            r"resolved", r"clear of", r"no longer", r"rather than", r"neither", r"nor", r"never")
_NEG_POST = (r"(?:is |are |was |were |has been |have been )?(?:not|no longer) (?:seen|identified|present|visualized|visible|"
             r"demonstrated|appreciated|noted|evident|detected|apparent|definitely seen)",
             r"(?:has |have )?(?:resolved|cleared)", r"(?:is |are )?absent", r"(?:is |are |was |were )?(?:excluded|ruled out)",
             r"(?:is |are |appears? |remains? )?within (?:normal limits|limits of normal)",
             r"(?:is|are|appears?|remains?) (?:normal|unremarkable)")
_UNCERTAIN_PRE = (r"possibl[ey]", r"probabl[ey]", r"likely", r"may", r"might", r"could", r"questionabl[ey]", r"question of",
                  r"suspect(?:ed)?", r"suspicious for", r"suggest(?:s|ed|ing|ive of)?", r"concern(?:ing)?(?: for)?",
                  r"worrisome(?: for)?", _BORDERLINE, r"equivocal", r"indeterminate", r"uncertain", r"presum(?:ed|ably)",
                  r"differential(?: diagnosis)?", r"consider(?:ed)?", r"versus", r"vs\.?", r"correlate (?:clinically )?(?:for|with)")
_UNCERTAIN_POST = (r"(?:is |are )?(?:possible|suspected|questioned|likely|probable|questionable|not excluded)",
                   r"versus", r"vs\.?", r"(?:may|could) be (?:present|seen)", r"(?:would be |is |another )?(?:a )?consideration")
_PSEUDO_NEG = (r"no (?:significant |interval |appreciable |substantial |definite )?(?:change|increase|decrease|improvement|worsening|progression)",
               r"not (?:significantly )?(?:changed|increased|decreased|improved)", r"without (?:significant |interval )?change",
               r"not only", r"gram[- ]negative")

_SENTENCE_SPLIT = re.compile(r"\.(?!\d)|(?<!\d)\.|[!?;\n]")
_CLAUSE_SPLIT = re.compile(
    r"\b(?:but|however|although|though|whereas|except|aside from|apart from|with the exception of)\b"
    r"|,\s*(?=(?:the|there|which|this|these|it)\b)|\band\s+(?=(?:there|the)\b)"
)
_POST_WINDOW_WORDS = 6


def _compile(patterns: Iterable[str]) -> re.Pattern[str]:
    return re.compile(r"\b(?:" + "|".join(patterns) + r")\b")


_MENTION_RE = {label: _compile(p) for label, p in MENTIONS.items()}
_NORMAL_RE = {
    label: _compile([rf"(?:{subject})(?:\s+(?!but\b)[\w/-]+){{0,7}}?\s+(?:{_NORMAL_WORD})",
                     rf"normal(?:[- ]sized?)?\s+(?:[\w-]+\s+){{0,2}}?(?:{subject})"])
    for label, subject in NORMAL_SUBJECTS.items()
}
_NORMAL_STUDY_RE = _compile(NORMAL_STUDY)
_OTHER_RE = _compile(OTHER_FINDINGS)
# (kind, is_pre) -> pattern; kinds in priority order.
_TRIGGERS = (
    ("neg_uncertain", True, _compile(_NEG_UNCERTAIN_PRE)), ("neg_uncertain", False, _compile(_NEG_UNCERTAIN_POST)),
    ("negation", True, _compile(_NEG_PRE)), ("negation", False, _compile(_NEG_POST)),
    ("uncertain", True, _compile(_UNCERTAIN_PRE)), ("uncertain", False, _compile(_UNCERTAIN_POST)),
)
_PSEUDO_RE = _compile(_PSEUDO_NEG)
_KIND_STATUS = {"neg_uncertain": UNCERTAIN, "negation": NEGATIVE, "uncertain": UNCERTAIN}
_KIND_RANK = {"neg_uncertain": 0, "negation": 1, "uncertain": 2}
_AGGREGATE_RANK = {POSITIVE: 3, UNCERTAIN: 2, NEGATIVE: 1}


@dataclass(frozen=True)
class Mention:
    """One mention found in a report: the label, its status, and the clause text it was read in."""

    label: str
    status: int
    text: str
    clause: str


@dataclass(frozen=True)
class _Trigger:
    kind: str
    pre: bool
    start: int
    end: int


def _clauses(text: str) -> list[str]:
    clauses = []
    for sentence in _SENTENCE_SPLIT.split(re.sub(r"\s+", " ", text.lower().replace("\n", " . "))):
        clauses.extend(c.strip(" ,:") for c in _CLAUSE_SPLIT.split(sentence))
    return [c for c in clauses if c]


def _triggers(clause: str, consumed: list[tuple[int, int]]) -> list[_Trigger]:
    """Triggers in a clause; those inside a pseudo-negation, a normal-study phrase or a longer trigger are dropped."""
    found = [_Trigger(kind, pre, m.start(), m.end()) for kind, pre, rx in _TRIGGERS for m in rx.finditer(clause)]
    blocked = consumed + [m.span() for m in _PSEUDO_RE.finditer(clause)]
    found.sort(key=lambda t: t.start - t.end)  # longest first
    kept: list[_Trigger] = []
    for t in found:
        if any(t.start < e and s < t.end for s, e in blocked):
            continue
        if any(t.start < k.end and k.start < t.end and (k.end - k.start) > (t.end - t.start) for k in kept):
            continue
        kept.append(t)
    return kept


def _status(clause: str, start: int, end: int, triggers: list[_Trigger]) -> int:
    """Status of the mention at clause[start:end] from the nearest trigger before and the nearest after it.

    An uncertainty trigger right after a negation is governed by it ("no suspicious opacity"); an
    uncertainty trigger does not reach across a comma, a negation does (lists: "no X, Y, or Z").
    """
    before = sorted((t for t in triggers if t.pre and t.end <= end), key=lambda t: t.start)  # may sit inside: "heart is not enlarged"
    after = [t for t in triggers if not t.pre and t.start >= end]
    candidates = []
    for i in range(len(before) - 1, -1, -1):
        t = before[i]
        if t.kind == "uncertain":
            if "," in clause[t.end:start]:  # uncertainty does not reach across a comma
                continue
            negators = [n for n in before[:i] if n.kind == "negation" and "," not in clause[n.end:t.start]]
            t = negators[-1] if negators else t  # "no suspicious nodules", "no opacity to suggest pneumonia"
        candidates.append(t)
        break
    if after:
        nearest = min(after, key=lambda t: t.start)
        gap = clause[end:nearest.start]
        if "," not in gap and len(gap.split()) <= _POST_WINDOW_WORDS:
            candidates.append(nearest)
    if not candidates:
        return POSITIVE
    return _KIND_STATUS[min(candidates, key=lambda t: _KIND_RANK[t.kind]).kind]


class ReportLabeler:
    """Rule-based labeler: ``ReportLabeler()(text)`` -> {label: 1/0/-1/None} for CONDITION_LABELS."""

    labels: tuple[str, ...] = CONDITION_LABELS

    def mentions(self, text: str) -> list[Mention]:
        """Every label mention in ``text`` with its status (for inspection and debugging)."""
        if not isinstance(text, str):
            raise MetricInputError(f"a report must be a string; got {type(text).__name__}.")
        found: list[Mention] = []
        for clause in _clauses(text):
            normal_study = [m.span() for m in _NORMAL_STUDY_RE.finditer(clause)]
            triggers = _triggers(clause, normal_study)
            found.extend(Mention(NO_FINDING, POSITIVE, clause[s:e], clause) for s, e in normal_study)
            for label, rx in _NORMAL_RE.items():
                found.extend(Mention(label, NEGATIVE, m.group(), clause) for m in rx.finditer(clause))
            for label, rx in _MENTION_RE.items():
                found.extend(Mention(label, _status(clause, m.start(), m.end(), triggers), m.group(), clause)
                             for m in rx.finditer(clause))
            found.extend(Mention("other", _status(clause, m.start(), m.end(), triggers), m.group(), clause)
                         for m in _OTHER_RE.finditer(clause))
        return found

    def __call__(self, text: str) -> dict[str, int | None]:
        mentions = self.mentions(text)
        result: dict[str, int | None] = {}
        for label in PATHOLOGIES:
            statuses = [m.status for m in mentions if m.label == label]
            result[label] = max(statuses, key=_AGGREGATE_RANK.__getitem__) if statuses else None
        abnormal = any(result[label] in (POSITIVE, UNCERTAIN) for label in PATHOLOGIES) or any(
            m.label == "other" and m.status == POSITIVE for m in mentions)
        says_normal = any(m.label == NO_FINDING for m in mentions) or NEGATIVE in result.values()
        result[NO_FINDING] = POSITIVE if says_normal and not abnormal else None
        return result


_DEFAULT = ReportLabeler()


def label_report(text: str) -> dict[str, int | None]:
    """Label one report: {label: 1 (positive) / 0 (negative) / -1 (uncertain) / None (not mentioned)}."""
    return _DEFAULT(text)


def label_reports(texts: Iterable[str]) -> list[dict[str, int | None]]:
    """Label many reports (see :func:`label_report`)."""
    if isinstance(texts, str):
        raise MetricInputError("label_reports takes a list of reports; use label_report for a single string.")
    return [_DEFAULT(t) for t in texts]


def report_label_f1(
    generated: Sequence[str],
    reference: Sequence[str],
    labels: Sequence[str] = CONDITION_LABELS,
    uncertain: str = "negative",
) -> ClassificationReport:
    """F1 between the labels of generated and reference reports, per label and micro/macro/weighted (Table V).

    Both sides are labelled with :func:`label_reports`. Convention: positive = 1; negative, not
    mentioned and (by default) uncertain all count as negative; ``uncertain="positive"`` counts
    uncertain as positive instead. Every report pair counts for every label.
    """
    if len(generated) != len(reference):
        raise MetricInputError(f"got {len(generated)} generated reports but {len(reference)} reference reports.")
    return f1_metrics(label_reports(reference), label_reports(generated), labels=labels,
                      uncertain=uncertain, missing="negative")
