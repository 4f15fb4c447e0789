"""Turning per-study label data (dicts or arrays) into one (N, C) float matrix with NaN for "no label"."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from codixr.metrics.errors import MetricInputError

UNCERTAIN_POLICIES: tuple[str, ...] = ("exclude", "negative", "positive")


def label_matrix(rows: Any, labels: Sequence[str], what: str = "labels") -> np.ndarray:
    """Return a float (N, C) matrix, columns in the order of ``labels``, NaN where there is no value.

    ``rows`` is either a sequence of mappings label -> value (a missing key or ``None`` means no
    value; e.g. the output of :func:`codixr.metrics.label_reports`) or an array-like / tensor of
    shape (N, C) whose columns already follow ``labels``.
    """
    if hasattr(rows, "detach"):  # torch tensor
        rows = rows.detach().cpu().numpy()
    if isinstance(rows, np.ndarray) or (len(rows) > 0 and not isinstance(rows[0], Mapping)):
        matrix = np.asarray(rows, dtype=np.float64)
        if matrix.ndim == 1 and len(labels) == 1:
            matrix = matrix[:, None]
        if matrix.ndim != 2 or matrix.shape[1] != len(labels):
            raise MetricInputError(
                f"{what} must have shape (N, {len(labels)}) with one column per label "
                f"({', '.join(labels)}); got shape {matrix.shape}."
            )
        return matrix
    matrix = np.full((len(rows), len(labels)), np.nan)
    for i, row in enumerate(rows):
        for j, label in enumerate(labels):
            value = row.get(label)
            if value is not None:
                matrix[i, j] = float(value)
    return matrix


def apply_uncertain(matrix: np.ndarray, uncertain: str) -> np.ndarray:
    """Map uncertain (-1) entries: ``"exclude"`` -> NaN (no value), ``"negative"`` -> 0, ``"positive"`` -> 1."""
    if uncertain not in UNCERTAIN_POLICIES:
        raise MetricInputError(f"uncertain must be one of {UNCERTAIN_POLICIES}; got {uncertain!r}.")
    out = matrix.copy()
    out[out == -1] = {"exclude": np.nan, "negative": 0.0, "positive": 1.0}[uncertain]
    return out


def check_binary(matrix: np.ndarray, what: str) -> None:
    """Raise MetricInputError unless every non-NaN entry is 0 or 1."""
    values = matrix[~np.isnan(matrix)]
    bad = values[(values != 0) & (values != 1)]
    if bad.size:
        raise MetricInputError(
            f"{what} must be 0 or 1 (or -1 for uncertain, NaN/None for no label); found {sorted(set(bad.tolist()))[:5]}."
        )


def threshold_vector(thresholds: float | Mapping[str, float] | Sequence[float] | None, labels: Sequence[str]) -> np.ndarray:
    """Per-label operating points as a (C,) array from one float, a dict label -> float or a sequence; default 0.5."""
    if thresholds is None:
        return np.full(len(labels), 0.5)
    if isinstance(thresholds, (int, float)):
        return np.full(len(labels), float(thresholds))
    if isinstance(thresholds, Mapping):
        missing = [label for label in labels if label not in thresholds]
        if missing:
            raise MetricInputError(f"thresholds has no operating point for: {', '.join(missing)}.")
        return np.array([float(thresholds[label]) for label in labels])
    values = np.asarray(thresholds, dtype=np.float64)
    if values.shape != (len(labels),):
        raise MetricInputError(f"thresholds must give one value per label ({len(labels)}); got shape {values.shape}.")
    return values
