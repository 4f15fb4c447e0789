"""Per-pathology AUROC/F1 and their averages agree with scikit-learn; missing ground truth is left out."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import f1_score, roc_auc_score

from codixr.metrics import classification_metrics, f1_metrics
from codixr.metrics.errors import MetricInputError
from codixr.modality import PATHOLOGIES


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    n, c = 80, len(PATHOLOGIES)
    truth = (rng.random((n, c)) < np.linspace(0.1, 0.6, c)).astype(float)
    truth[:2] = [1, 0] * (c // 2)  # every class has both values
    truth[2:4] = [0, 1] * (c // 2)
    scores = np.clip(0.35 * truth + rng.random((n, c)) * 0.7, 0, 1)
    return truth, scores


def test_matches_sklearn_without_missing_labels(data):
    truth, scores = data
    report = classification_metrics(truth, scores)
    pred = scores >= 0.5
    per_auc = roc_auc_score(truth, scores, average=None)
    per_f1 = f1_score(truth, pred, average=None, zero_division=0.0)
    for j, label in enumerate(PATHOLOGIES):
        assert report.auroc[label] == pytest.approx(per_auc[j])
        assert report.f1[label] == pytest.approx(per_f1[j])
        assert report.support[label] == truth[:, j].sum() and report.n_samples[label] == len(truth)
    for avg in ("micro", "macro", "weighted"):
        assert report.auroc[avg] == pytest.approx(roc_auc_score(truth, scores, average=avg)), avg
        assert report.f1[avg] == pytest.approx(f1_score(truth, pred, average=avg, zero_division=0.0)), avg


def test_missing_ground_truth_is_excluded_per_class(data):
    truth, scores = data
    rng = np.random.default_rng(1)
    missing = rng.random(truth.shape) < 0.3
    missing[:4] = False
    with_gaps = np.where(missing, np.nan, truth)
    report = classification_metrics(with_gaps, scores)
    for j, label in enumerate(PATHOLOGIES):
        keep = ~missing[:, j]
        assert report.n_samples[label] == keep.sum()
        assert report.auroc[label] == pytest.approx(roc_auc_score(truth[keep, j], scores[keep, j]))
        assert report.f1[label] == pytest.approx(f1_score(truth[keep, j], scores[keep, j] >= 0.5, zero_division=0.0))
    keep = ~missing
    assert report.auroc["micro"] == pytest.approx(roc_auc_score(truth[keep], scores[keep]))
    assert report.f1["micro"] == pytest.approx(f1_score(truth[keep], scores[keep] >= 0.5))
    support = np.array([report.support[label] for label in PATHOLOGIES])
    aucs = np.array([report.auroc[label] for label in PATHOLOGIES])
    assert report.auroc["macro"] == pytest.approx(aucs.mean())
    assert report.auroc["weighted"] == pytest.approx((aucs * support).sum() / support.sum())
    # The same gaps given as dicts with None (labeler style) give the same numbers.
    rows = [{label: (None if np.isnan(v) else v) for label, v in zip(PATHOLOGIES, row)} for row in with_gaps]
    assert classification_metrics(rows, scores).to_dict() == report.to_dict()


def test_single_class_auroc_is_none_not_half(data):
    truth, scores = data
    truth = truth.copy()
    truth[:, 0] = 0.0
    report = classification_metrics(truth, scores)
    assert report.auroc[PATHOLOGIES[0]] is None
    others = [report.auroc[label] for label in PATHOLOGIES[1:]]
    assert report.auroc["macro"] == pytest.approx(np.mean(others))
    assert report.f1[PATHOLOGIES[0]] == 0.0  # no true positive can exist; sklearn zero_division=0


def test_uncertain_policies(data):
    truth, scores = data
    uncertain = truth.copy()
    uncertain[4:14, 1] = -1
    excluded = classification_metrics(uncertain, scores)
    assert excluded.n_samples[PATHOLOGIES[1]] == len(truth) - 10
    keep = np.ones(len(truth), bool)
    keep[4:14] = False
    assert excluded.auroc[PATHOLOGIES[1]] == pytest.approx(roc_auc_score(truth[keep, 1], scores[keep, 1]))
    as_positive = classification_metrics(uncertain, scores, uncertain="positive")
    ones = truth.copy()
    ones[4:14, 1] = 1
    assert as_positive.auroc[PATHOLOGIES[1]] == pytest.approx(roc_auc_score(ones[:, 1], scores[:, 1]))
    with pytest.raises(MetricInputError, match="uncertain"):
        classification_metrics(uncertain, scores, uncertain="maybe")


def test_per_class_thresholds(data):
    truth, scores = data
    thresholds = {label: 0.3 + 0.04 * j for j, label in enumerate(PATHOLOGIES)}
    report = classification_metrics(truth, scores, thresholds=thresholds)
    pred = scores >= np.array(list(thresholds.values()))
    assert report.f1["macro"] == pytest.approx(f1_score(truth, pred, average="macro"))
    with pytest.raises(MetricInputError, match="operating point"):
        classification_metrics(truth, scores, thresholds={"Edema": 0.5})


def test_input_errors(data):
    truth, scores = data
    with pytest.raises(MetricInputError, match="shape"):
        classification_metrics(truth[:, :3], scores)
    bad = scores.copy()
    bad[0, 0] = np.nan
    with pytest.raises(MetricInputError, match="missing"):
        classification_metrics(truth, bad)
    with pytest.raises(MetricInputError, match="0 or 1"):
        classification_metrics(truth * 2, scores)


def test_f1_metrics_on_labels_treats_missing_and_uncertain_as_negative():
    labels = ("Edema", "Pneumonia")
    reference = [{"Edema": 1, "Pneumonia": None}, {"Edema": 0, "Pneumonia": 1}, {"Edema": -1, "Pneumonia": 1}, {}]
    generated = [{"Edema": 1, "Pneumonia": 1}, {"Edema": None, "Pneumonia": 1}, {"Edema": -1, "Pneumonia": -1}, {"Edema": 1}]
    report = f1_metrics(reference, generated, labels)
    t = np.array([[1, 0], [0, 1], [0, 1], [0, 0]])
    p = np.array([[1, 1], [0, 1], [0, 0], [1, 0]])
    for avg in ("micro", "macro", "weighted"):
        assert report.f1[avg] == pytest.approx(f1_score(t, p, average=avg)), avg
    assert report.auroc is None
    lenient = f1_metrics(reference, generated, labels, uncertain="positive")
    t[2, 0] = p[2, 0] = p[2, 1] = 1
    assert lenient.f1["micro"] == pytest.approx(f1_score(t, p, average="micro"))
