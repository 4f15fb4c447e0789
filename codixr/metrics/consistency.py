"""Cross-modal consistency: do two sources of findings for the same studies agree?

Typical pairs: classifier findings on the jointly generated frontal and lateral views, or the
labels of a generated report and the classifier findings on its generated image. Each source is a
list of dicts label -> 1/0/-1/None (labeler style) or an (N, C) array (e.g. thresholded scores,
see :func:`binarize_scores`). Per label: the fraction of studies where both sources agree and
Cohen's kappa (scikit-learn), ``None`` when undefined (fewer than two distinct values overall).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
from sklearn.metrics import cohen_kappa_score

from codixr.metrics._labels import apply_uncertain, check_binary, label_matrix, threshold_vector
from codixr.metrics.errors import MetricInputError
from codixr.modality import PATHOLOGIES


@dataclass(frozen=True)
class AgreementReport:
    """Per-label agreement rate and kappa, plus their means over labels where defined ("mean")."""

    labels: tuple[str, ...]
    agreement: dict[str, float | None]
    kappa: dict[str, float | None]
    n: dict[str, int]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def binarize_scores(scores: Any, labels: Sequence[str] = PATHOLOGIES,
                    thresholds: float | Mapping[str, float] | Sequence[float] | None = None) -> np.ndarray:
    """Scores (N, C) -> 1/0 findings at per-label operating points (``score >= threshold``, default 0.5); NaN stays NaN."""
    matrix = label_matrix(scores, labels, "scores")
    out = (matrix >= threshold_vector(thresholds, labels)[None, :]).astype(np.float64)
    out[np.isnan(matrix)] = np.nan
    return out


def finding_agreement(
    a: Any,
    b: Any,
    labels: Sequence[str] = PATHOLOGIES,
    uncertain: str = "negative",
    missing: str = "negative",
) -> AgreementReport:
    """Agreement of findings ``a`` and ``b`` (same studies, same order) per label.

    ``uncertain`` maps -1 to "negative" (default), "positive" or "exclude"; ``missing`` (None/NaN)
    is "negative" (default: a finding that is not stated is absent) or "exclude" (the study does
    not count for that label).
    """
    if missing not in ("negative", "exclude"):
        raise MetricInputError(f"missing must be 'negative' or 'exclude'; got {missing!r}.")
    x, y = (apply_uncertain(label_matrix(m, labels, name), uncertain) for m, name in ((a, "a"), (b, "b")))
    if x.shape != y.shape:
        raise MetricInputError(f"the two sources describe {x.shape[0]} and {y.shape[0]} studies; they must be paired.")
    check_binary(x, "a")
    check_binary(y, "b")
    if missing == "negative":
        x, y = np.nan_to_num(x, nan=0.0), np.nan_to_num(y, nan=0.0)
    agreement: dict[str, float | None] = {}
    kappa: dict[str, float | None] = {}
    n: dict[str, int] = {}
    for j, label in enumerate(labels):
        rows = ~np.isnan(x[:, j]) & ~np.isnan(y[:, j])
        u, v = x[rows, j], y[rows, j]
        n[label] = int(rows.sum())
        agreement[label] = float((u == v).mean()) if u.size else None
        kappa[label] = float(cohen_kappa_score(u, v)) if len(np.unique(np.concatenate([u, v]))) > 1 else None
    for values in (agreement, kappa):
        defined = [values[label] for label in labels if values[label] is not None]
        values["mean"] = float(np.mean(defined)) if defined else None
    return AgreementReport(tuple(labels), agreement, kappa, n)
