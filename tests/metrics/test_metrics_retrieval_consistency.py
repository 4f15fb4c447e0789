"""Image<->report retrieval recall on a constructed example, and per-label agreement with Cohen's kappa."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score

from codixr.metrics import binarize_scores, finding_agreement, retrieval_metrics
from codixr.metrics.errors import MetricInputError


def test_retrieval_on_a_latin_square():
    # images = identity; report j = column j of the Latin square L[i, j] = v[(i + j) % 5], v = 5..1.
    # Every row and column holds each value once, so the rank of the match is the rank of L[i, i]:
    # diagonal v[2i % 5] = 5, 3, 1, 4, 2 -> ranks 1, 3, 5, 2, 4 (both directions: L is symmetric).
    v = np.array([5.0, 4, 3, 2, 1])
    square = np.array([[v[(i + j) % 5] for j in range(5)] for i in range(5)])
    images, reports = np.eye(5) * np.arange(1, 6)[:, None], square.T * 3.0  # scaling must not matter (cosine)
    result = retrieval_metrics(images, reports, ks=(1, 3, 5))
    for direction in ("image_to_report", "report_to_image"):
        r = result[direction]
        assert r.recall == pytest.approx({1: 1 / 5, 3: 3 / 5, 5: 1.0}), direction
        assert r.median_rank == 3.0 and r.n == 5
    assert result["image_to_report"].to_dict()["R@1"] == pytest.approx(0.2)


def test_retrieval_perfect_and_degenerate_embeddings():
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(20, 8))
    perfect = retrieval_metrics(emb, emb * 2.0)
    assert perfect["image_to_report"].recall[1] == 1.0 and perfect["report_to_image"].median_rank == 1.0
    constant = retrieval_metrics(np.ones((20, 4)), np.ones((20, 4)))  # ties count against the model
    assert constant["image_to_report"].recall == {1: 0.0, 5: 0.0, 10: 0.0}
    with pytest.raises(MetricInputError, match="paired"):
        retrieval_metrics(emb, emb[:10])
    with pytest.raises(MetricInputError, match="all-zero"):
        retrieval_metrics(np.zeros((3, 2)), np.ones((3, 2)))


def test_finding_agreement_matches_sklearn_kappa():
    labels = ("Edema", "Pneumonia", "Pneumothorax")
    frontal = [{"Edema": 1, "Pneumonia": 0}, {"Edema": 1, "Pneumonia": 1}, {"Edema": 0, "Pneumonia": -1},
               {"Edema": 0, "Pneumonia": 1}, {"Edema": None, "Pneumonia": 0}]
    lateral = [{"Edema": 1, "Pneumonia": 0}, {"Edema": 0, "Pneumonia": 1}, {"Edema": 0, "Pneumonia": 1},
               {"Edema": 0, "Pneumonia": 1}, {"Edema": 1, "Pneumonia": 0}]
    report = finding_agreement(frontal, lateral, labels)
    edema_a, edema_b = [1, 1, 0, 0, 0], [1, 0, 0, 0, 1]  # None -> negative
    pneu_a, pneu_b = [0, 1, 0, 1, 0], [0, 1, 1, 1, 0]  # -1 -> negative
    assert report.agreement["Edema"] == pytest.approx(3 / 5)
    assert report.kappa["Edema"] == pytest.approx(cohen_kappa_score(edema_a, edema_b))
    assert report.kappa["Pneumonia"] == pytest.approx(cohen_kappa_score(pneu_a, pneu_b))
    assert report.agreement["Pneumothorax"] == 1.0 and report.kappa["Pneumothorax"] is None  # never stated
    assert report.kappa["mean"] == pytest.approx((report.kappa["Edema"] + report.kappa["Pneumonia"]) / 2)
    excluded = finding_agreement(frontal, lateral, labels, uncertain="exclude", missing="exclude")
    assert excluded.n == {"Edema": 4, "Pneumonia": 4, "Pneumothorax": 0}
    assert excluded.agreement["Pneumothorax"] is None


def test_binarize_scores_feeds_agreement():
    labels = ("Edema", "Pneumonia")
    scores_f = np.array([[0.9, 0.2], [0.6, 0.7], [0.1, np.nan]])
    binary = binarize_scores(scores_f, labels, thresholds={"Edema": 0.7, "Pneumonia": 0.5})
    np.testing.assert_array_equal(binary, [[1, 0], [0, 1], [0, np.nan]])
    report = finding_agreement(binary, [[1, 0], [1, 1], [0, 0]], labels, missing="exclude")
    assert report.agreement == pytest.approx({"Edema": 2 / 3, "Pneumonia": 1.0, "mean": 5 / 6})
    with pytest.raises(MetricInputError, match="paired"):
        finding_agreement(binary, [[1, 0]], labels)


def test_retrieval_from_similarity_matches_embeddings_and_takes_two_directions():
    from codixr.metrics.retrieval import retrieval_from_similarity

    rng = np.random.default_rng(0)
    images, reports = rng.normal(size=(12, 5)), rng.normal(size=(12, 5))
    images /= np.linalg.norm(images, axis=1, keepdims=True)  # retrieval_metrics compares by cosine
    reports /= np.linalg.norm(reports, axis=1, keepdims=True)
    by_embedding = retrieval_metrics(images, reports)
    by_similarity = retrieval_from_similarity(images @ reports.T)
    for direction in ("image_to_report", "report_to_image"):
        assert by_similarity[direction].recall == by_embedding[direction].recall
    # a different report->image similarity (AdaMatch's s^T): identity ranks every report's image first
    result = retrieval_from_similarity(images @ reports.T, np.eye(12))
    assert result["report_to_image"].recall[1] == 1.0 and result["report_to_image"].median_rank == 1
