"""Training the findings classifier: label mapping, patient split, masked loss, and a 2-step smoke run."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from codixr.findings import classifier as C
from codixr.modality import PATHOLOGIES
from training import train_classifier as T



def _write_source(root: Path, folder: str, header: list[str], rows: list[dict], size: tuple[int, int], ext: str,
                  rng: np.random.Generator) -> None:
    (root / folder / "images").mkdir(parents=True)
    for row in rows:
        yy, xx = np.mgrid[0 : size[0], 0 : size[1]]
        blob = np.exp(-((yy - rng.uniform(0, size[0])) ** 2 + (xx - rng.uniform(0, size[1])) ** 2) / (size[0] * 4.0))
        pixels = np.clip(60 + 150 * blob + rng.normal(0, 10, size), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(root / folder / row["image"])
    with open(root / folder / "metadata.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=header, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


@pytest.fixture
def tiny_data(tmp_path) -> Path:
    """A data folder laid out like ../shared/data, with a few generated images per source."""
    rng = np.random.default_rng(0)
    root = tmp_path / "data"
    rsna = [{"image": f"images/r{i}.jpg", "patientId": f"r{i}", "view": "PA", "target": i % 2} for i in range(16)]
    _write_source(root, "rsna-pneumonia", ["image", "patientId", "view", "target"], rsna, (96, 80), "jpg", rng)
    nih_labels = ["Effusion", "No Finding", "Mass|Atelectasis", "Nodule", "Cardiomegaly|Effusion", "Hernia"]
    nih = [{"image": f"images/n{i}.png", "patient_id": str(i // 2), "view": "PA", "finding_labels": nih_labels[i % 6]}
           for i in range(12)]
    _write_source(root, "nih-cxr14-64px", ["image", "patient_id", "view", "finding_labels"], nih, (64, 64), "png", rng)
    covid = [("COVID-19", "frontal"), ("No Finding", "frontal"), ("todo", "frontal"), ("ARDS", "frontal"),
             ("Streptococcus", "frontal"), ("COVID-19, ARDS", "frontal"), ("COVID-19", "lateral")]
    rows = [{"image": f"images/c{i}.png", "patientid": str(i), "finding": f, "view": v} for i, (f, v) in enumerate(covid)]
    _write_source(root, "covid-cxr", ["image", "patientid", "finding", "view"], rows, (70, 90), "png", rng)
    return root


def _label(record: T.Record, target: str) -> float:
    return record.labels[T.TARGETS.index(target)]


def test_label_mapping_follows_the_sources(tiny_data):
    records = T.load_records(tiny_data)
    by_image = {r.path.name: r for r in records}
    assert _label(by_image["r1.jpg"], "Lung Opacity") == 1 == _label(by_image["r1.jpg"], "Pneumonia")
    assert math.isnan(_label(by_image["r1.jpg"], "Effusion"))
    assert _label(by_image["n2.png"], "Lung Lesion") == 1 and _label(by_image["n2.png"], "Atelectasis") == 1
    assert _label(by_image["n3.png"], "Lung Lesion") == 1 and _label(by_image["n5.png"], "Effusion") == 0
    assert math.isnan(_label(by_image["n0.png"], "Lung Opacity"))
    assert _label(by_image["c0.png"], "Pneumonia") == 1 and _label(by_image["c1.png"], "Pneumonia") == 0
    assert _label(by_image["c4.png"], "Pneumonia") == 1 and _label(by_image["c5.png"], "Pneumonia") == 1
    assert {"c2.png", "c3.png", "c6.png"}.isdisjoint(by_image)  # unknown finding, ARDS alone, lateral view
    assert "Enlarged Cardiomediastinum" not in {C.pathology_name(t) for t in T.TARGETS}
    with pytest.raises(T.TrainingDataError):
        T.load_records(tiny_data / "nowhere")


def test_patient_split_is_disjoint_and_seeded(tiny_data):
    records = T.load_records(tiny_data)
    train, val = T.patient_split(records, 0.3, seed=0)
    assert len(train) + len(val) == len(records) and len(val) > 0
    key = lambda i: (records[i].source, records[i].patient)  # noqa: E731
    assert {key(i) for i in train}.isdisjoint({key(i) for i in val})
    again = T.patient_split(records, 0.3, seed=0)
    assert np.array_equal(again[1], val)


def test_masked_bce_ignores_missing_labels():
    logits = torch.tensor([[2.0, -1.0], [0.5, 3.0]], requires_grad=True)
    labels = torch.tensor([[1.0, float("nan")], [0.0, float("nan")]])
    loss = T.masked_bce(logits, labels)
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits[:, 0], labels[:, 0])
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert torch.all(logits.grad[:, 1] == 0) and torch.all(logits.grad[:, 0] != 0)


def test_epoch_shuffle_is_reproducible():
    s = T.EpochShuffle(10, seed=3)
    first = list(s)
    s.set_epoch(1)
    assert sorted(first) == list(range(10)) and list(s) != first
    s.set_epoch(0)
    assert list(s) == first


def test_training_smoke_run_saves_a_loadable_classifier(tiny_data, tmp_path, monkeypatch):
    out = tmp_path / "classifier"
    common = ["--data", str(tiny_data), "--out", str(out), "--batch-size", "4", "--image-size", "64",
              "--val-fraction", "0.35", "--min-val-positives", "1", "--log-every", "1", "--cpu"]
    T.main(common + ["--max-steps", "1", "--keep-checkpoint"])
    assert json.loads((out / "checkpoint" / "progress.json").read_text())["step"] == 1
    summary = T.main(common + ["--max-steps", "2"])  # resumes from step 1
    assert summary["training"]["steps"] == 2
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    config = json.loads((out / "config.json").read_text())
    assert "Enlarged Cardiomediastinum" in config["not_assessed"]
    assert set(config["assessed"]) | set(config["not_assessed"]) == set(PATHOLOGIES)
    for target, thr in zip(config["targets"], config["op_threshs"]):
        assert (thr is not None) == bool(target)
    for m in config["validation"].values():
        assert {"auroc", "n_pos", "n_neg", "threshold"} <= set(m)
    card = (out / "README.md").read_text()
    assert "AUROC" in card and "Not assessed" in card and "Enlarged Cardiomediastinum" in card
    monkeypatch.setenv(C.ENV_CLASSIFIER, str(out))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no official weights: "auto" uses the trained one
    monkeypatch.delenv(C.ENV_XRV_WEIGHTS, raising=False)
    C.clear_cache()
    try:
        found = C.classify(np.full((80, 70), 0.4, np.float32))
    finally:
        C.clear_cache()
    assert found.available and found.source.startswith("CoDiXR-trained DenseNet")
    assert found.scores["Enlarged Cardiomediastinum"] is None
    assert [p for p in PATHOLOGIES if found.scores[p] is not None] == [p for p in PATHOLOGIES if p in config["assessed"]]
