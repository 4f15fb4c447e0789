"""The record types every dataset reader returns: an image reference, a study and a list of studies.

A :class:`Study` is one radiological examination: its frontal and lateral images, its report text
and its labels over :data:`codixr.modality.CONDITION_LABELS` in the CheXpert convention
(1 positive, 0 negative, -1 uncertain, ``None`` not stated).
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Any, Callable, Iterable, Iterator, Literal, overload

from codixr.modality import CONDITION_LABELS, NO_FINDING, PATHOLOGIES

View = Literal["frontal", "lateral", "unknown"]
SPLITS: tuple[str, ...] = ("train", "validate", "test")

# Acquisition positions (DICOM ViewPosition and the datasets' own view columns) -> view.
# Oblique, decubitus, swimmer's and cross-table projections are deliberately "unknown": they are
# neither the frontal nor the lateral modality of the paper.
FRONTAL_POSITIONS = frozenset({"PA", "AP", "AP SUPINE", "AP ERECT", "FRONTAL", "POSTERO_ANTERIOR", "ANTERO_POSTERIOR"})
LATERAL_POSITIONS = frozenset({"LATERAL", "LL", "RL", "LAT", "L", "LARGE LATERAL"})


def view_from_position(position: str | None) -> View:
    """Map an acquisition position such as ``"PA"``, ``"AP Supine"``, ``"LL"`` or ``"LATERAL"`` to a view.

    Returns ``"unknown"`` for empty values and for projections that are neither frontal nor lateral
    (oblique, decubitus, swimmer's, cross-table lateral).
    """
    key = " ".join(str(position or "").upper().split())
    if key in FRONTAL_POSITIONS:
        return "frontal"
    if key in LATERAL_POSITIONS:
        return "lateral"
    return "unknown"


def empty_labels() -> dict[str, float | None]:
    """A label dict with every condition label "not stated" (``None``)."""
    return {name: None for name in CONDITION_LABELS}


def merge_label(old: float | None, new: float | None) -> float | None:
    """Combine two statements about one label: positive beats uncertain beats negative beats not stated."""
    order = {None: 0, 0.0: 1, -1.0: 2, 1.0: 3}
    return new if order[new] > order[old] else old


def finalize_labels(labels: dict[str, float | None], normal: bool = False) -> dict[str, float | None]:
    """Make "No Finding" consistent with the pathologies.

    ``normal=True`` (the source explicitly calls the study normal) sets "No Finding" to 1 and every
    pathology not otherwise stated to 0; a positive or uncertain pathology sets "No Finding" to 0.
    """
    out = {name: labels.get(name) for name in CONDITION_LABELS}
    if normal:
        out[NO_FINDING] = 1.0
        for name in PATHOLOGIES:
            if out[name] is None:
                out[name] = 0.0
    if any(out[name] in (1.0, -1.0) for name in PATHOLOGIES):
        out[NO_FINDING] = 0.0
    return out


@dataclasses.dataclass
class ImageRef:
    """One image of a study.

    Attributes:
        path: absolute path of the image file.
        view: "frontal", "lateral" or "unknown".
        position: the acquisition position as the dataset gives it ("PA", "AP", "LL", ...), if any.
        spacing_mm: pixel spacing of the stored file in mm, when the dataset states it.
        image_id: the dataset's id of the image (file stem, DICOM id), if any.
        extra: other per-image facts (licence/doi/url for covid-cxr, resolution for NIH 64 px, ...).
    """

    path: str
    view: View
    position: str | None = None
    spacing_mm: float | None = None
    image_id: str | None = None
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Study:
    """One examination: images per view, report text, labels and the split it belongs to.

    Attributes:
        study_id: unique within its source (prefixed with the source for the public sets).
        patient_id: the dataset's (de-identified) patient id; never logged.
        frontal, lateral: images of each view; ``unknown_view`` holds images whose view is not known.
        impression: the report's IMPRESSION section (the paper's report modality), or ``None``.
        findings_text: the FINDINGS section, or another free text (covid-cxr clinical notes), or ``None``.
        labels: CONDITION_LABELS -> 1 positive, 0 negative, -1 uncertain, None not stated.
        split: "train", "validate" or "test"; patient-disjoint.
        source: dataset name ("mimic-cxr", "iu-xray", "covid-cxr", "rsna-pneumonia", "nih-cxr14-64px").
        meta: other facts (licence/doi/url, boxes, MeSH terms, ...).
    """

    study_id: str
    patient_id: str = dataclasses.field(repr=False)
    frontal: list[ImageRef] = dataclasses.field(default_factory=list, repr=False)
    lateral: list[ImageRef] = dataclasses.field(default_factory=list, repr=False)
    unknown_view: list[ImageRef] = dataclasses.field(default_factory=list, repr=False)
    impression: str | None = dataclasses.field(default=None, repr=False)
    findings_text: str | None = dataclasses.field(default=None, repr=False)
    labels: dict[str, float | None] = dataclasses.field(default_factory=empty_labels, repr=False)
    split: str = "train"
    source: str = ""
    meta: dict[str, Any] = dataclasses.field(default_factory=dict, repr=False)

    def add_image(self, ref: ImageRef) -> None:
        """Append an image to the list of its view."""
        self.images_of(ref.view).append(ref)

    def images_of(self, view: str) -> list[ImageRef]:
        """The images of one view ("frontal", "lateral" or "unknown")."""
        lists = {"frontal": self.frontal, "lateral": self.lateral, "unknown": self.unknown_view}
        if view not in lists:
            from codixr.errors import UnknownModalityError

            raise UnknownModalityError(f"Unknown view {view!r}: use frontal, lateral or unknown.")
        return lists[view]

    @property
    def images(self) -> list[ImageRef]:
        """Every image of the study, frontal first."""
        return [*self.frontal, *self.lateral, *self.unknown_view]

    @property
    def has_both_views(self) -> bool:
        """True when the study has at least one frontal and one lateral image."""
        return bool(self.frontal) and bool(self.lateral)

    @property
    def text(self) -> str | None:
        """The report text to use for the report modality: the impression, else ``findings_text``."""
        return self.impression or self.findings_text


class StudyDataset:
    """A list of :class:`Study` with filtering, per-split views and a count summary.

    Behaves like a read-only list: ``len(ds)``, ``ds[i]``, ``ds[a:b]`` (a new dataset), iteration.
    """

    def __init__(self, studies: Iterable[Study] = (), name: str = "") -> None:
        self.studies: list[Study] = list(studies)
        self.name = name

    def __len__(self) -> int:
        return len(self.studies)

    def __iter__(self) -> Iterator[Study]:
        return iter(self.studies)

    @overload
    def __getitem__(self, index: int) -> Study: ...

    @overload
    def __getitem__(self, index: slice) -> "StudyDataset": ...

    def __getitem__(self, index):
        if isinstance(index, slice):
            return StudyDataset(self.studies[index], self.name)
        return self.studies[index]

    def __add__(self, other: "StudyDataset") -> "StudyDataset":
        name = "+".join(n for n in (self.name, other.name) if n)
        return StudyDataset([*self.studies, *other.studies], name)

    def __repr__(self) -> str:
        return f"StudyDataset(name={self.name!r}, studies={len(self)})"

    def filter(self, keep: Callable[[Study], bool]) -> "StudyDataset":
        """A new dataset with the studies for which ``keep(study)`` is true."""
        return StudyDataset([s for s in self.studies if keep(s)], self.name)

    def split(self, name: str) -> "StudyDataset":
        """The studies of one split ("train", "validate" or "test")."""
        if name not in SPLITS:
            from codixr.errors import InputError

            raise InputError(f"Unknown split {name!r}: use one of {', '.join(SPLITS)}.")
        return self.filter(lambda s: s.split == name)

    def by_id(self, study_id: str) -> Study:
        """The study with this id (KeyError when absent)."""
        for study in self.studies:
            if study.study_id == study_id:
                return study
        raise KeyError(study_id)

    def summary(self) -> dict[str, Any]:
        """Counts: studies, patients, images per view, studies with each/both views, texts, splits, sources
        and label prevalence (positive/negative/uncertain/not stated per condition label)."""
        images = collections.Counter()
        labels = {name: {"positive": 0, "negative": 0, "uncertain": 0, "not_stated": 0} for name in CONDITION_LABELS}
        key = {1.0: "positive", 0.0: "negative", -1.0: "uncertain", None: "not_stated"}
        for study in self.studies:
            for view in ("frontal", "lateral", "unknown"):
                images[view] += len(study.images_of(view))
            for name in CONDITION_LABELS:
                labels[name][key[study.labels.get(name)]] += 1
        out: dict[str, Any] = {
            "studies": len(self.studies),
            "patients": len({(s.source, s.patient_id) for s in self.studies}),
            "images": {view: images[view] for view in ("frontal", "lateral", "unknown")},
            "studies_with_frontal": sum(1 for s in self.studies if s.frontal),
            "studies_with_lateral": sum(1 for s in self.studies if s.lateral),
            "studies_with_both_views": sum(1 for s in self.studies if s.has_both_views),
            "impressions": sum(1 for s in self.studies if s.impression),
            "findings_texts": sum(1 for s in self.studies if s.findings_text),
            "splits": {name: sum(1 for s in self.studies if s.split == name) for name in SPLITS},
            "sources": dict(sorted(collections.Counter(s.source for s in self.studies).items())),
            "labels": labels,
        }
        # Reports that list images not found on disk (IU X-ray read without its images folder).
        listed = collections.Counter(im["view"] for s in self.studies for im in s.meta.get("images", ()))
        if listed:
            out["images_listed_in_reports"] = {view: listed[view] for view in ("frontal", "lateral", "unknown")}
        return out
