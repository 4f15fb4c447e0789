"""The `Findings` result: what one classifier reads on one image, for the paper's ten pathologies.

A score is only a finding where the reader was shown to separate the pathology on held-out data: every
`Findings` carries the reader's validation AUROC per pathology (from its card), and a pathology whose AUROC is
below `MIN_VALIDATION_AUROC`, or that was never validated, is "not validated": its score is shown, never a
positive/negative call.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

from codixr.modality import PATHOLOGIES

# What Findings.source says for each reader.
XRV_SOURCE = "torchxrayvision densenet121-res224-all"
TRAINED_SOURCE = "CoDiXR-trained DenseNet"
ZERO_SHOT_SOURCE = "CoDiXR zero-shot (model's own reading, not a validated classifier)"

#: Validation AUROC a pathology needs before its score is called positive or negative (issue 14: the trained
#: classifier's Atelectasis, 0.505, and Lung Lesion, 0.563, are chance-level and were flagged like Pneumonia, 0.845).
MIN_VALIDATION_AUROC = 0.65
#: What `Findings.status` says per pathology.
POSITIVE, NEGATIVE, NOT_VALIDATED, NOT_ASSESSED = "positive", "negative", "not validated", "not assessed"


def _clean(value: float | None) -> float | None:
    """A score as a plain float, None when missing or NaN."""
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


@dataclass
class Findings:
    """What one reader (classifier or zero-shot scorer) finds on one image.

    Attributes:
        scores: pathology -> score in [0, 1] for every one of the ten pathologies of the paper's Table I
            (`codixr.PATHOLOGIES`), in that order. ``None`` means *this reader does not assess the
            pathology*; it never means 0 or 0.5. For the classifiers the score is calibrated the
            torchxrayvision way (``xrv.models.op_norm``): 0.5 is the operating point, so the
            threshold is 0.5. For the zero-shot reading it is the scorer's probability.
        thresholds: pathology -> the score at and above which the reader calls the finding positive
            (``None`` where the pathology is not assessed or no operating point exists).
        validation_auroc: pathology -> the reader's AUROC on its validation split (its card), ``None`` where it
            was not validated. Only pathologies at or above `MIN_VALIDATION_AUROC` get a positive/negative call.
        source: which reader spoke (e.g. "torchxrayvision densenet121-res224-all").
        available: False when the reader could not run (weights absent, no model given, ...).
        message: plain-language reason when not available (what to install or pass), else "".
        probabilities: the uncalibrated sigmoid outputs of a classifier (``None`` where not assessed);
            empty for readers that only give one score.
        operating_points: the thresholds on `probabilities` that map to 0.5 in `scores`.
        extra_scores / extra_thresholds: other targets of the reader (e.g. "Fracture"), only when asked for.
    """

    scores: dict[str, float | None]
    source: str
    thresholds: dict[str, float | None] = field(default_factory=dict)
    validation_auroc: dict[str, float | None] = field(default_factory=dict)
    available: bool = True
    message: str = ""
    probabilities: dict[str, float | None] = field(default_factory=dict)
    operating_points: dict[str, float | None] = field(default_factory=dict)
    extra_scores: dict[str, float] = field(default_factory=dict)
    extra_thresholds: dict[str, float | None] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = set(self.scores) - set(PATHOLOGIES)
        if unknown:
            raise ValueError(
                f"Findings.scores only holds the ten Table I pathologies; put {sorted(unknown)} in extra_scores."
            )
        # Every pathology is a key, in the paper's order; missing means not assessed.
        self.scores = {p: _clean(self.scores.get(p)) for p in PATHOLOGIES}
        self.thresholds = {p: _clean(self.thresholds.get(p)) if self.scores[p] is not None else None
                           for p in PATHOLOGIES}
        self.validation_auroc = {p: _clean(self.validation_auroc.get(p)) for p in PATHOLOGIES}
        if self.probabilities:
            self.probabilities = {p: _clean(self.probabilities.get(p)) for p in PATHOLOGIES}
        if self.operating_points:
            self.operating_points = {p: _clean(self.operating_points.get(p)) for p in PATHOLOGIES}
        self.extra_scores = {k: float(v) for k, v in self.extra_scores.items() if _clean(v) is not None}
        self.extra_thresholds = {k: _clean(self.extra_thresholds.get(k)) for k in self.extra_scores}

    @classmethod
    def unavailable(cls, source: str, message: str) -> "Findings":
        """The documented "cannot read" state: every pathology None, `available` False, and why."""
        return cls(scores={}, source=source, available=False, message=message)

    @property
    def validated(self) -> tuple[str, ...]:
        """Pathologies scored with an operating point and a validation AUROC of at least `MIN_VALIDATION_AUROC`."""
        return tuple(p for p in PATHOLOGIES if self.scores[p] is not None and self.thresholds[p] is not None
                     and (self.validation_auroc[p] or 0.0) >= MIN_VALIDATION_AUROC)

    @property
    def not_validated(self) -> tuple[str, ...]:
        """Pathologies scored but not validated (AUROC below `MIN_VALIDATION_AUROC`, unknown, or no threshold)."""
        validated = set(self.validated)
        return tuple(p for p in PATHOLOGIES if self.scores[p] is not None and p not in validated)

    def status(self, pathology: str) -> str:
        """"positive", "negative", "not validated" or "not assessed" (`POSITIVE`, ... ) for one pathology."""
        if self.scores[pathology] is None:
            return NOT_ASSESSED
        if pathology not in self.validated:
            return NOT_VALIDATED
        return POSITIVE if _is_positive(self.scores[pathology], self.thresholds[pathology]) else NEGATIVE

    @property
    def positive(self) -> tuple[str, ...]:
        """Validated pathologies whose score is at or above the reader's threshold, in the paper's order."""
        return tuple(p for p in self.validated if _is_positive(self.scores[p], self.thresholds[p]))

    @property
    def extra_positive(self) -> tuple[str, ...]:
        """Other targets (see `extra_scores`) at or above their threshold."""
        return tuple(k for k, v in self.extra_scores.items() if _is_positive(v, self.extra_thresholds.get(k)))

    @property
    def not_assessed(self) -> tuple[str, ...]:
        """Pathologies this reader does not assess (score None)."""
        return tuple(p for p in PATHOLOGIES if self.scores[p] is None)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (for a download button); `None` stays `null`, never 0."""
        out: dict[str, Any] = {
            "source": self.source,
            "available": self.available,
            "message": self.message,
            "scores": dict(self.scores),
            "thresholds": dict(self.thresholds),
            "validation_auroc": dict(self.validation_auroc),
            "min_validation_auroc": MIN_VALIDATION_AUROC,
            "status": {p: self.status(p) for p in PATHOLOGIES},
            "positive": list(self.positive),
            "not_validated": list(self.not_validated),
            "not_assessed": list(self.not_assessed),
        }
        if self.probabilities:
            out["probabilities"] = dict(self.probabilities)
            out["operating_points"] = dict(self.operating_points)
        if self.extra_scores:
            out["extra_scores"] = dict(self.extra_scores)
            out["extra_thresholds"] = dict(self.extra_thresholds)
            out["extra_positive"] = list(self.extra_positive)
        return out


def _is_positive(score: float | None, threshold: float | None) -> bool:
    return score is not None and threshold is not None and score >= threshold


def findings_from(
    source: str,
    scores: Mapping[str, float | None],
    thresholds: Mapping[str, float | None],
    **kwargs: Any,
) -> Findings:
    """Split a reader's scores into the ten pathologies and the extra targets (kept only when asked)."""
    include_extra = kwargs.pop("include_extra", False)
    if "validation_auroc" in kwargs:
        kwargs["validation_auroc"] = {k: v for k, v in kwargs["validation_auroc"].items() if k in PATHOLOGIES}
    main = {k: v for k, v in scores.items() if k in PATHOLOGIES}
    extra = {k: v for k, v in scores.items() if k not in PATHOLOGIES} if include_extra else {}
    return Findings(
        scores=main,
        source=source,
        thresholds={k: v for k, v in thresholds.items() if k in PATHOLOGIES},
        extra_scores=extra,  # type: ignore[arg-type]
        extra_thresholds={k: thresholds.get(k) for k in extra},
        **kwargs,
    )
