"""Fixtures for the evaluation command: the tiny model package, a tiny MIMIC-CXR tree, a tiny classifier, no weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from codixr.modality import CONDITION_LABELS
from codixr.testing import FIXTURE_IMPRESSIONS
from tests.data.fixtures import write_csv_gz, write_dicom, write_png

N_STUDIES = 8  # studies 0-3: test split, 4-7: train split
TEST_STUDIES = 4
LABELLED_STUDIES = 6  # studies 6-7 have no CheXpert row: their labels come from the labeler
CLASSIFIER_TARGETS = ["Atelectasis", "Cardiomegaly", "Effusion", "Lung Opacity", "Pneumonia"]
TINY_DENSENET = {"growth_rate": 4, "block_config": [1, 1, 1, 1], "num_init_features": 8, "bn_size": 2}



@pytest.fixture(autouse=True)
def no_weights(tmp_path_factory, monkeypatch):
    """No Inception, XRV or trained-classifier weights, whatever this machine holds."""
    from codixr.findings import clear_cache

    missing = tmp_path_factory.mktemp("no-weights")
    monkeypatch.setenv("CODIXR_INCEPTION_WEIGHTS", str(missing / "inception.pth"))
    monkeypatch.setenv("CODIXR_XRV_WEIGHTS", str(missing / "xrv.pt"))
    monkeypatch.setenv("CODIXR_CLASSIFIER", str(missing / "classifier"))
    clear_cache()
    yield missing
    clear_cache()


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """The seeded tiny pipeline saved as a model package folder."""
    from codixr.testing import tiny_pipeline

    path = tmp_path_factory.mktemp("model") / "tiny"
    tiny_pipeline().save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_classifier(tmp_path_factory) -> Path:
    """A small, randomly initialised torchxrayvision DenseNet saved as a trained-classifier folder (5 of the 10 pathologies)."""
    from codixr.findings.classifier import XRVClassifier, build_densenet

    torch.manual_seed(0)
    clf = XRVClassifier(build_densenet(CLASSIFIER_TARGETS, [0.5] * len(CLASSIFIER_TARGETS), TINY_DENSENET),
                        "CoDiXR-trained DenseNet (evaluation test)", 64)
    return clf.save_pretrained(tmp_path_factory.mktemp("classifier") / "clf", dtype=torch.float32)


def _chest(rng: np.random.Generator, size: int = 48, lateral: bool = False) -> np.ndarray:
    """A smooth synthetic radiograph-like 8-bit image (two bright lung fields, or one for a lateral view)."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    centres = [(0.5, 0.5)] if lateral else [(0.5, 0.3), (0.5, 0.7)]
    img = sum(np.exp(-((yy - cy) ** 2 / 0.06 + (xx - cx) ** 2 / 0.02)) for cy, cx in centres)
    img = 40 + 160 * img + rng.normal(0, 6, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.fixture(scope="session")
def mimic_root(tmp_path_factory) -> Path:
    """A PhysioNet-layout MIMIC-CXR tree: 8 studies with frontal + lateral (DICOM or PNG), impressions, split and label tables."""
    root = tmp_path_factory.mktemp("mimic")
    rng = np.random.default_rng(0)
    metadata, splits, labels = [], [], []
    for i in range(N_STUDIES):
        patient, study = f"1000000{i}", f"5000000{i}"
        study_dir = root / "files" / f"p{patient[:2]}" / f"p{patient}" / f"s{study}"
        for view, position in (("f", "PA"), ("l", "LATERAL")):
            dicom_id = f"{view}{i}"
            pixels = _chest(rng, lateral=view == "l")
            if i % 2:
                write_dicom(study_dir / f"{dicom_id}.dcm", position, pixels)
            else:
                write_png(study_dir / f"{dicom_id}.png", pixels)
            metadata.append([dicom_id, patient, study, position])
            splits.append([dicom_id, study, patient, "test" if i < TEST_STUDIES else "train"])
        impression = FIXTURE_IMPRESSIONS[i % len(FIXTURE_IMPRESSIONS)]
        (study_dir.parent / f"s{study}.txt").write_text(
            f" FINDINGS: Lungs are clear.\n\n IMPRESSION: {impression}\n", encoding="utf-8")
        if i < LABELLED_STUDIES:
            row = {name: "0.0" for name in CONDITION_LABELS}  # test studies: 0 normal, 1 effusion, 2 pneumonia, 3 normal
            row["No Finding" if i % 3 == 0 else ("Cardiomegaly", "Pleural Effusion", "Pneumonia")[i % 3]] = "1.0"
            row["Edema"] = ""  # not stated
            labels.append([patient, study, *[row[name] for name in CONDITION_LABELS]])
    write_csv_gz(root / "mimic-cxr-2.0.0-metadata.csv.gz", ["dicom_id", "subject_id", "study_id", "ViewPosition"], metadata)
    write_csv_gz(root / "mimic-cxr-2.0.0-split.csv.gz", ["dicom_id", "study_id", "subject_id", "split"], splits)
    write_csv_gz(root / "mimic-cxr-2.0.0-chexpert.csv.gz", ["subject_id", "study_id", *CONDITION_LABELS], labels)
    return root
