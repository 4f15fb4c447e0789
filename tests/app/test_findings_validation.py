"""Findings that are not findings (issue 14, defect 7): a pathology the classifier did not validate gets no call.

The shipped classifier's card gives Atelectasis AUROC 0.505 and Lung Lesion 0.563 on validation, Pneumonia 0.845.
A classifier with that card (a tiny DenseNet, its outputs forced above every operating point) must show each
score with its validation AUROC, call Pneumonia positive, and call Atelectasis, Lung Lesion and Edema (0.647)
"not validated", never positive, in the findings table, the chart and the JSON download; pathologies it does not
score (Consolidation, Enlarged Cardiomediastinum) stay "not assessed".
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from codixr.app.downloads import write_downloads
from codixr.app.findings import ItemFindings, agreement_table, findings_chart_image, findings_table
from codixr.findings import classifier as C
from codixr.findings import plots
from codixr.findings.result import Findings
from codixr.modality import PATHOLOGIES

SHIPPED_CARD = Path(__file__).resolve().parents[2] / "assets" / "classifier" / "config.json"
TINY = {"growth_rate": 4, "block_config": [1, 1, 1, 1], "num_init_features": 8, "bn_size": 2}
# The shipped card's validation (assets/classifier/config.json), the numbers the issue quotes.
CARD_AUROC = {"Atelectasis": 0.50472334682861, "Cardiomegaly": 0.7435897435897436, "Edema": 0.6469428007889546,
              "Lung Lesion": 0.5629991126885536, "Lung Opacity": 0.7247818876631336,
              "Pleural Effusion": 0.7025386313465783, "Pneumonia": 0.8448964828275174,
              "Pneumothorax": 0.7529940119760479}
NOT_VALIDATED = {"Atelectasis", "Edema", "Lung Lesion"}
NOT_ASSESSED = {"Consolidation", "Enlarged Cardiomediastinum"}


@pytest.fixture(scope="module")
def card() -> dict:
    """The shipped card's targets, thresholds and validation (the file is read; its weights are not needed)."""
    config = json.loads(SHIPPED_CARD.read_text())
    shipped = {C.pathology_name(str(v.get("name") or k)): v["auroc"] for k, v in config["validation"].items()
               if v.get("assessed")}
    assert shipped == pytest.approx(CARD_AUROC)  # the numbers this test is about are the shipped ones
    return {k: config[k] for k in ("targets", "op_threshs", "validation", "source")}


@pytest.fixture(scope="module")
def reading(card, tmp_path_factory) -> Findings:
    """A tiny classifier saved with the shipped card and loaded back, its outputs forced above every threshold."""
    model = C.build_densenet(card["targets"], card["op_threshs"], TINY)
    folder = C.XRVClassifier(model, card["source"], card=card).save_pretrained(tmp_path_factory.mktemp("clf"))
    classifier = C.XRVClassifier.from_pretrained(folder)
    n = len(classifier.targets)
    classifier.outputs = lambda image: (torch.full((1, n), 0.99), torch.full((1, n), 0.9))  # all "above"
    return classifier.predict(np.full((64, 64), 0.5, np.float32))


def test_each_score_carries_its_validation_auroc_and_only_validated_ones_are_called(reading):
    from codixr.findings.result import MIN_VALIDATION_AUROC

    assert MIN_VALIDATION_AUROC == 0.65
    assert {p: reading.validation_auroc[p] for p in CARD_AUROC} == pytest.approx(CARD_AUROC)
    assert all(reading.validation_auroc[p] is None for p in NOT_ASSESSED)
    status = {p: reading.status(p) for p in PATHOLOGIES}
    assert {p for p, s in status.items() if s == "not validated"} == NOT_VALIDATED
    assert {p for p, s in status.items() if s == "not assessed"} == NOT_ASSESSED
    assert status["Pneumonia"] == "positive" and "Atelectasis" not in reading.positive
    assert set(reading.positive) == set(CARD_AUROC) - NOT_VALIDATED


def test_table_shows_auroc_beside_every_score_and_no_call_where_not_validated(reading):
    item = ItemFindings("Frontal (given)", "frontal", readings=[reading])
    headers, rows = findings_table([item])
    cells = {row[0]: row[1] for row in rows}
    assert cells["Pneumonia"] == "0.90 positive (validation AUROC 0.845)"
    assert cells["Atelectasis"] == "0.90 not validated (validation AUROC 0.505)"
    assert cells["Lung Lesion"] == "0.90 not validated (validation AUROC 0.563)"
    assert cells["Consolidation"] == "not assessed"
    for p in NOT_VALIDATED:
        assert "positive" not in cells[p] and "negative" not in cells[p]
    assert all("AUROC" in cells[p] for p in PATHOLOGIES if p not in NOT_ASSESSED)
    # the review's agreement table does not compare a finding that is not one
    _, agreement, _ = agreement_table(item, item)
    verdicts = {row[0]: row[3] for row in agreement}
    assert {p for p, v in verdicts.items() if v == "not compared"} == NOT_VALIDATED | NOT_ASSESSED


def test_chart_greys_out_what_is_not_validated(reading):
    fig = plots.findings_chart(reading)
    ax = fig.axes[0]
    texts = [t.get_text() for t in ax.texts]
    assert sum("not validated" in t for t in texts) == len(NOT_VALIDATED)
    assert "0.90 not validated (AUROC 0.505)" in texts and "0.90 (AUROC 0.845)" in texts
    grey_color = _rgb(getattr(plots, "NOT_VALIDATED_COLOR", "#c8c8c8"))
    red = [p for p in ax.patches if np.allclose(p.get_facecolor()[:3], _rgb(plots.POSITIVE_COLOR))]
    grey = [p for p in ax.patches if np.allclose(p.get_facecolor()[:3], grey_color)]
    assert (len(red), len(grey)) == (len(CARD_AUROC) - len(NOT_VALIDATED), len(NOT_VALIDATED))
    image = findings_chart_image(ItemFindings("Frontal (given)", "frontal", readings=[reading]))
    assert isinstance(image, Image.Image)


def test_json_download_says_not_validated_and_flags_nothing_unvalidated(reading, tmp_path):
    item = ItemFindings("Frontal (given)", "frontal", readings=[reading])
    paths = write_downloads(tmp_path, images={}, report=None, findings={"items": [item.to_dict()]},
                            description="from labels only", model="tiny")
    document = json.loads(next(p for p in paths if p.suffix == ".json").read_text())
    saved = document["items"][0]["readings"][0]
    assert saved["min_validation_auroc"] == 0.65
    assert saved["validation_auroc"]["Atelectasis"] == pytest.approx(0.5047, abs=1e-4)
    assert {p for p, s in saved["status"].items() if s == "not validated"} == NOT_VALIDATED
    assert saved["status"]["Pneumonia"] == "positive" and saved["status"]["Consolidation"] == "not assessed"
    assert NOT_VALIDATED.isdisjoint(saved["positive"]) and set(saved["not_validated"]) == NOT_VALIDATED


def test_readers_without_validation_make_no_calls():
    """The official weights (no card validation here) and the zero-shot reading: scores, never calls."""
    scores = {p: 0.9 for p in PATHOLOGIES}
    unvalidated = Findings(scores=scores, thresholds={p: 0.5 for p in PATHOLOGIES}, source="zero-shot")
    assert unvalidated.positive == () and set(unvalidated.not_validated) == set(PATHOLOGIES)
    cells = {row[0]: row[1] for row in findings_table([ItemFindings("F", "frontal", readings=[unvalidated])])[1]}
    assert cells["Pneumonia"] == "0.90 not validated (no validation AUROC)"


def _rgb(color: str) -> tuple[float, float, float]:
    color = color.lstrip("#")
    return tuple(int(color[i:i + 2], 16) / 255 for i in (0, 2, 4))
