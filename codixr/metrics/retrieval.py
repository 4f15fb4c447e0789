"""Image <-> report retrieval from paired embeddings: Recall@K and median rank (AdaMatch Table 4 style).

Row i of the image embeddings and row i of the report embeddings belong to the same study (the only
correct match). Similarity is cosine. The rank of the correct match is 1 + the number of candidates
scoring *at least as high* as it (ties count against the model, so constant embeddings cannot score).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from codixr.metrics.errors import MetricInputError


@dataclass(frozen=True)
class RetrievalResult:
    """Recall@K (fraction in [0, 1]) and median rank (1 = best) for one direction."""

    recall: dict[int, float]
    median_rank: float
    n: int

    def to_dict(self) -> dict[str, Any]:
        out = {f"R@{k}": v for k, v in self.recall.items()}
        out.update(median_rank=self.median_rank, n=self.n)
        return out


def _as_matrix(x: Any, what: str) -> np.ndarray:
    x = x.detach().float().cpu().numpy() if hasattr(x, "detach") else np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or not np.isfinite(x).all():
        raise MetricInputError(f"{what} must be a finite (N, D) matrix; got shape {x.shape}.")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    if (norms == 0).any():
        raise MetricInputError(f"{what} has all-zero rows; cosine similarity is undefined for them.")
    return x / norms


def ranks_of_matches(similarity: np.ndarray) -> np.ndarray:
    """Rank (1-based, ties pessimistic) of the diagonal entry within each row of a square similarity matrix."""
    correct = np.diagonal(similarity)[:, None]
    return (similarity >= correct).sum(axis=1)


def _result(ranks: np.ndarray, ks: Sequence[int]) -> RetrievalResult:
    return RetrievalResult({k: float((ranks <= k).mean()) for k in ks}, float(np.median(ranks)), len(ranks))


def retrieval_metrics(image_embeddings: Any, report_embeddings: Any, ks: Sequence[int] = (1, 5, 10)) -> dict[str, RetrievalResult]:
    """``{"image_to_report": ..., "report_to_image": ...}`` Recall@K and median rank from paired (N, D) embeddings."""
    images, reports = _as_matrix(image_embeddings, "image_embeddings"), _as_matrix(report_embeddings, "report_embeddings")
    if images.shape != reports.shape:
        raise MetricInputError(f"image and report embeddings must be paired with equal shapes; got {images.shape} and {reports.shape}.")
    return retrieval_from_similarity(images @ reports.T, ks=ks)


def retrieval_from_similarity(image_to_report: Any, report_to_image: Any | None = None,
                              ks: Sequence[int] = (1, 5, 10)) -> dict[str, RetrievalResult]:
    """Recall@K and median rank from (N, N) similarity matrices of paired images (rows) and reports (columns).

    ``report_to_image`` defaults to the transpose of ``image_to_report``; give it when the two directions use
    different similarities (AdaMatch's s^T vs s^I).
    """
    forward = np.asarray(image_to_report, dtype=np.float64)
    backward = forward.T if report_to_image is None else np.asarray(report_to_image, dtype=np.float64).T
    if forward.ndim != 2 or forward.shape[0] != forward.shape[1] or backward.shape != forward.shape:
        raise MetricInputError(f"similarity matrices must be square and equal in shape; got {forward.shape}.")
    return {"image_to_report": _result(ranks_of_matches(forward), ks),
            "report_to_image": _result(ranks_of_matches(backward), ks)}
