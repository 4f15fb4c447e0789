"""Per-pathology AUROC and F1 with micro, macro and weighted averages (paper Sec. IV.B, Tables III and V).

Conventions (the paper computes every class "only when a ground truth was available"):

* Ground truth is 1 (positive), 0 (negative), -1 (uncertain) or NaN/None (no ground truth).
  Samples without ground truth for a class are left out of that class and of the micro average.
  Uncertain labels follow ``uncertain``: ``"exclude"`` (default: treated as no ground truth),
  ``"negative"`` (U-zeros) or ``"positive"`` (U-ones).
* AUROC of a class where only one of {0, 1} occurs is undefined and reported as ``None``
  (never 0.5); such classes are skipped by the macro and weighted averages.
* F1 binarises scores as ``score >= threshold`` (per-class operating points, default 0.5).
  A class with no predicted and no true positive scores 0.0 (scikit-learn ``zero_division=0``).
* micro: all (sample, class) pairs with ground truth pooled into one binary problem.
  macro: unweighted mean over classes. weighted: mean weighted by the number of positives,
  as scikit-learn's ``average="weighted"``.
Every number comes from :mod:`sklearn.metrics`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
from sklearn.metrics import f1_score, roc_auc_score

from codixr.metrics._labels import apply_uncertain, check_binary, label_matrix, threshold_vector
from codixr.metrics.errors import MetricInputError
from codixr.modality import PATHOLOGIES

AVERAGES: tuple[str, ...] = ("micro", "macro", "weighted")


@dataclass(frozen=True)
class ClassificationReport:
    """Per-label and averaged metrics. ``auroc``/``f1`` map each label and "micro", "macro", "weighted"
    to a value in [0, 1] or ``None`` (undefined); ``auroc`` is ``None`` for label-vs-label F1 (Table V)."""

    labels: tuple[str, ...]
    f1: dict[str, float | None]
    auroc: dict[str, float | None] | None
    support: dict[str, int]  # positives among the samples with ground truth
    n_samples: dict[str, int]  # samples with ground truth

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return dataclasses.asdict(self)


def _average(values: dict[str, float | None], support: dict[str, int], labels: Sequence[str]) -> tuple[float | None, float | None]:
    """Macro and positive-support-weighted means over the labels whose value is defined."""
    defined = [label for label in labels if values[label] is not None]
    if not defined:
        return None, None
    macro = float(np.mean([values[label] for label in defined]))
    weights = np.array([support[label] for label in defined], dtype=np.float64)
    weighted = float(np.dot(weights, [values[label] for label in defined]) / weights.sum()) if weights.sum() else None
    return macro, weighted


def _report(truth: np.ndarray, pred: np.ndarray, scores: np.ndarray | None, labels: Sequence[str]) -> ClassificationReport:
    """Metrics of binary predictions (and optionally scores) against truth with NaN = no ground truth."""
    has_truth = ~np.isnan(truth)
    f1: dict[str, float | None] = {}
    auroc: dict[str, float | None] = {}
    support: dict[str, int] = {}
    n_samples: dict[str, int] = {}
    for j, label in enumerate(labels):
        rows = has_truth[:, j]
        t, p = truth[rows, j], pred[rows, j]
        n_samples[label], support[label] = int(rows.sum()), int(t.sum())
        f1[label] = float(f1_score(t, p, zero_division=0.0)) if t.size else None
        if scores is not None:
            auroc[label] = float(roc_auc_score(t, scores[rows, j])) if len(np.unique(t)) == 2 else None
    t_all, p_all = truth[has_truth], pred[has_truth]
    support["micro"], n_samples["micro"] = int(t_all.sum()), int(t_all.size)
    f1["micro"] = float(f1_score(t_all, p_all, zero_division=0.0)) if t_all.size else None
    f1["macro"], f1["weighted"] = _average(f1, support, labels)
    if scores is None:
        return ClassificationReport(tuple(labels), f1, None, support, n_samples)
    auroc["micro"] = float(roc_auc_score(t_all, scores[has_truth])) if len(np.unique(t_all)) == 2 else None
    auroc["macro"], auroc["weighted"] = _average(auroc, support, labels)
    return ClassificationReport(tuple(labels), f1, auroc, support, n_samples)


def classification_metrics(
    y_true: Any,
    y_score: Any,
    labels: Sequence[str] = PATHOLOGIES,
    thresholds: float | Mapping[str, float] | Sequence[float] | None = None,
    uncertain: str = "exclude",
) -> ClassificationReport:
    """Per-label AUROC and F1 of classifier scores, with micro/macro/weighted averages (Table III).

    Args:
        y_true: ground truth, (N, C) array in the order of ``labels`` or a list of dicts label -> 1/0/-1/None.
        y_score: classifier scores (probabilities) in the same layout; must be finite where ground truth exists.
        labels: the classes, by default the paper's 10 pathologies.
        thresholds: F1 operating points: one float, a dict label -> float or a sequence; default 0.5.
        uncertain: how to treat -1 ground truth: "exclude" (default), "negative" or "positive".
    """
    truth = apply_uncertain(label_matrix(y_true, labels, "y_true"), uncertain)
    check_binary(truth, "y_true")
    scores = label_matrix(y_score, labels, "y_score")
    if scores.shape != truth.shape:
        raise MetricInputError(f"y_true has {truth.shape[0]} samples but y_score has {scores.shape[0]}.")
    if np.isnan(scores[~np.isnan(truth)]).any():
        raise MetricInputError("y_score has missing (NaN/None) scores for samples that have ground truth.")
    pred = (scores >= threshold_vector(thresholds, labels)[None, :]).astype(np.float64)
    return _report(truth, pred, scores, labels)


def f1_metrics(
    y_true: Any,
    y_pred: Any,
    labels: Sequence[str] = PATHOLOGIES,
    uncertain: str = "negative",
    missing: str = "negative",
) -> ClassificationReport:
    """Per-label F1 of binary predictions against binary ground truth, with micro/macro/weighted averages.

    Both inputs take 1/0/-1/None values (e.g. labeler output). ``uncertain`` says how -1 is read
    on both sides ("negative" by default, or "positive" or "exclude"); ``missing`` says how a
    missing value (None/NaN) is read: "negative" (default, the convention of report-labeler F1:
    a finding that is not mentioned is absent) or "exclude" (drop the sample for that label).
    """
    if missing not in ("negative", "exclude"):
        raise MetricInputError(f"missing must be 'negative' or 'exclude'; got {missing!r}.")
    truth = apply_uncertain(label_matrix(y_true, labels, "y_true"), uncertain)
    pred = apply_uncertain(label_matrix(y_pred, labels, "y_pred"), uncertain)
    if pred.shape != truth.shape:
        raise MetricInputError(f"y_true has {truth.shape[0]} samples but y_pred has {pred.shape[0]}.")
    check_binary(truth, "y_true")
    check_binary(pred, "y_pred")
    if missing == "negative":
        truth, pred = np.nan_to_num(truth, nan=0.0), np.nan_to_num(pred, nan=0.0)
    else:  # a sample counts for a label only where both sides have a value
        both = ~np.isnan(truth) & ~np.isnan(pred)
        truth = np.where(both, truth, np.nan)
        pred = np.nan_to_num(pred, nan=0.0)
    return _report(truth, pred, None, labels)
