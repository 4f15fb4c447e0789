"""Which real data each setting is evaluated on, and which ground truth exists for it.

Two layouts are understood:

* ``mimic``: a MIMIC-CXR folder (``files/pXX/...``): triplets of frontal, lateral and impression, as in
  the paper. Labels come from ``mimic-cxr-2.0.0-chexpert.csv`` when present, else from the rule-based
  labeler (:func:`codixr.metrics.label_report`) applied to the impression (the table is itself
  CheXpert-labeler output).
* ``public``: the shared data folder (covid-cxr, rsna-pneumonia; NIH 64 px is left out: too coarse to
  compare with generated 256-px images). No image has an impression: the only image-text pairs are
  covid-cxr images with clinical notes (case descriptions, not impressions); report impressions with
  labels come from IU X-ray (its human MeSH labels), which has no images here.

Every setting draws its conditions from a pool: settings conditioned on an image use the image
studies of the evaluation split; settings conditioned only on text and/or labels use the report
impressions of the evaluation split. Items are taken in a fixed pseudo-random order (a hash of their
id), so ``--n 8`` evaluates the first 8 of what ``--n 16`` evaluates.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from codixr.errors import InputError
from codixr.evaluate.settings import Setting
from codixr.modality import CONDITION_LABELS, Modality

logger = logging.getLogger(__name__)

KINDS: tuple[str, ...] = ("auto", "mimic", "public")
PUBLIC_IMAGE_SETS: tuple[str, ...] = ("covid-cxr", "rsna-pneumonia")
NOTES = "clinical notes"
IMPRESSION = "impression"


@dataclass
class EvalItem:
    """One evaluation case: its real images, its text (and what kind of text) and its labels.

    ``labels`` follow the CheXpert convention over CONDITION_LABELS (1, 0, -1, None = no ground truth).
    """

    key: str
    source: str
    frontal: str | None = None
    lateral: str | None = None
    text: str | None = None
    text_kind: str | None = None
    labels: dict[str, float | None] = field(default_factory=dict)
    label_source: str = ""

    def has(self, modality: Modality) -> bool:
        return bool({Modality.FRONTAL: self.frontal, Modality.LATERAL: self.lateral, Modality.REPORT: self.text}[modality])

    def image(self, modality: Modality) -> str | None:
        return self.frontal if modality is Modality.FRONTAL else self.lateral if modality is Modality.LATERAL else None

    @property
    def positive_labels(self) -> list[str]:
        return [name for name in CONDITION_LABELS if self.labels.get(name) == 1]

    @property
    def has_labels(self) -> bool:
        return any(v is not None for v in self.labels.values())

    @property
    def impression(self) -> str | None:
        """The reference impression, when this item has one (clinical notes are not impressions)."""
        return self.text if self.text_kind == IMPRESSION else None


@dataclass
class EvalData:
    """The evaluation split of one dataset, ready for per-setting selection.

    ``studies``: image studies (with their text where any); ``texts``: report impressions with labels
    (for settings conditioned on text or labels only); ``train_impressions``: the training split's
    impressions (for the text baselines); ``train_studies``: the training split's image studies (for readers
    fit on real training images, e.g. the view reader); ``describe``: where each kind of ground truth comes from.
    """

    kind: str
    root: str
    split: str
    studies: list[EvalItem]
    texts: list[EvalItem]
    train_impressions: list[str]
    describe: dict[str, str] = field(default_factory=dict)
    train_studies: list[EvalItem] = field(default_factory=list)


@dataclass
class Selection:
    """The items a setting is evaluated on (``items``), out of ``available`` usable ones in ``pool``."""

    items: list[EvalItem]
    available: int
    pool: str


def stable_order(items: list[EvalItem]) -> list[EvalItem]:
    """A fixed pseudo-random order (by a hash of the key), independent of how many are taken."""
    return sorted(items, key=lambda it: hashlib.sha256(f"{it.source}:{it.key}".encode()).hexdigest())


def detect_kind(root: str | os.PathLike) -> str:
    """"mimic" when ``root`` holds ``files/``, "public" when it holds the public sets; else InputError."""
    root = Path(root)
    if (root / "files").is_dir():
        return "mimic"
    if any((root / name / "metadata.csv").is_file() for name in PUBLIC_IMAGE_SETS):
        return "public"
    raise InputError(
        f"{root} is neither a MIMIC-CXR folder (with files/pXX/...) nor the public data folder (with "
        f"{' or '.join(PUBLIC_IMAGE_SETS)}/metadata.csv). Point --data at one of them, or pass --kind."
    )


def _item(study, label_fallback: bool = False) -> EvalItem:
    """An EvalItem from a codixr.data Study (first image of each view; impression, else other text)."""
    from codixr.metrics import label_report

    if study.impression:
        text, kind = study.impression, IMPRESSION
    elif study.findings_text:
        text, kind = study.findings_text, NOTES if study.source == "covid-cxr" else "findings"
    else:
        text, kind = None, None
    labels = {name: study.labels.get(name) for name in CONDITION_LABELS}
    source = "dataset"
    if label_fallback and not any(v is not None for v in labels.values()) and study.impression:
        labels, source = label_report(study.impression), "labeler on the impression"
    return EvalItem(key=study.study_id, source=study.source, frontal=study.frontal[0].path if study.frontal else None,
                    lateral=study.lateral[0].path if study.lateral else None, text=text, text_kind=kind,
                    labels=labels, label_source=source)


def _pick_split(studies, split: str) -> str:
    if split != "auto":
        return split
    return "test" if any(s.split == "test" for s in studies) else "validate"


def load_eval_data(root: str | os.PathLike | None, kind: str = "auto", split: str = "auto") -> EvalData:
    """Load the evaluation split (``split="auto"``: "test" when the dataset has one, else "validate")."""
    from codixr.data import default_data_dir, load_iu_xray, load_mimic_cxr, load_public_cxr

    if kind not in KINDS:
        raise InputError(f"Unknown --kind {kind!r}: use one of {', '.join(KINDS)}.")
    root = Path(root) if root is not None else default_data_dir()
    kind = detect_kind(root) if kind == "auto" else kind
    if kind == "mimic":
        studies = load_mimic_cxr(root)
        split = _pick_split(studies, split)
        evaluation = [_item(s, label_fallback=True) for s in studies if s.split == split]
        fallback = sum(1 for it in evaluation if it.label_source != "dataset")
        data = EvalData(kind, str(root), split, stable_order(evaluation), [], [
            s.impression for s in studies if s.split == "train" and s.impression])
        data.texts = list(data.studies)
        data.train_studies = stable_order([_item(s) for s in studies if s.split == "train"])
        data.describe = {
            "images": f"MIMIC-CXR {split} split (frontal and lateral of the same study)",
            "texts": f"MIMIC-CXR {split} impressions",
            "labels": f"CheXpert table ({len(evaluation) - fallback} studies); rule-based labeler on the impression "
                      f"({fallback} studies without a table row)",
            "baseline corpus": "MIMIC-CXR train impressions",
        }
    elif kind == "public":
        sets = tuple(name for name in PUBLIC_IMAGE_SETS if (root / name / "metadata.csv").is_file())
        if not sets:
            detect_kind(root)  # raises with the explanation
        studies = load_public_cxr(root, datasets=sets)
        split = _pick_split(studies, split)
        iu = load_iu_xray()  # same split rule as training (patient hash, 10 % validate)
        text_split = split if any(s.split == split for s in iu) else "validate"
        data = EvalData(
            kind, str(root), split,
            stable_order([_item(s) for s in studies if s.split == split and (s.frontal or s.lateral)]),
            stable_order([_item(s) for s in iu if s.split == text_split and s.impression]),
            [s.impression for s in iu if s.split == "train" and s.impression],
        )
        data.train_studies = stable_order([_item(s) for s in studies if s.split == "train" and (s.frontal or s.lateral)])
        data.describe = {
            "images": f"{' + '.join(sets)} {split} split (covid-cxr: the only lateral views)",
            "texts": f"IU X-ray {text_split} impressions (no IU images here)",
            "labels": "dataset labels of the images (covid-cxr diagnosis, RSNA target); IU MeSH labels of the impressions",
            "image-text pairs": "covid-cxr images with clinical notes (case descriptions, not impressions)",
            "baseline corpus": "IU X-ray train impressions",
        }
    else:
        raise InputError(f"Unknown --kind {kind!r}: use one of {', '.join(KINDS)}.")
    logger.info("evaluation data (%s, split %s): %d image studies, %d impressions, %d training impressions",
                kind, data.split, len(data.studies), len(data.texts), len(data.train_impressions))
    return data


def select_items(setting: Setting, data: EvalData, n: int) -> Selection:
    """The first ``n`` items (fixed order) that have every input of ``setting``."""
    pool_name = "image studies" if setting.image_inputs else "report impressions"
    pool = data.studies if setting.image_inputs else data.texts

    def usable(item: EvalItem) -> bool:
        return all(item.has(m) for m in setting.inputs) and (not setting.labels or bool(item.positive_labels))

    chosen = [item for item in pool if usable(item)]
    return Selection(chosen[:n], len(chosen), pool_name)


def real_reference(data: EvalData, view: Modality, n: int) -> list[EvalItem]:
    """The real images of one view for FID and the "Real Data" rows: the first ``n`` studies having that view."""
    return [item for item in data.studies if item.has(view)][:n]
