"""Fixtures for the dataset reader tests: a tiny synthetic MIMIC-CXR tree and a small WordPiece tokenizer."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from tests.data.fixtures import HEADER_VIEWS, MIMIC_STUDIES, TOKENIZER_TEXTS, train_wordpiece, write_csv_gz, write_dicom, write_png


@pytest.fixture
def mimic_root(tmp_path: Path) -> Path:
    """A PhysioNet-layout MIMIC-CXR tree with six studies, metadata and CheXpert tables (no split file)."""
    root = tmp_path / "mimic"
    metadata, labels = [], []
    for patient, study, images, report in MIMIC_STUDIES:
        patient_dir = root / "files" / f"p{patient[:2]}" / f"p{patient}"
        for dicom_id, position, suffix in images:
            path = patient_dir / f"s{study}" / f"{dicom_id}{suffix}"
            if suffix == ".dcm":
                write_dicom(path, position or HEADER_VIEWS.get(dicom_id))
            else:
                write_png(path, np.full((16, 16), 90))
            if position is not None:
                metadata.append([dicom_id, patient, study, position])
        if report is not None:
            (patient_dir / f"s{study}.txt").write_text(report)
        labels.append([patient, study, "1.0" if study == "50000004" else "", "-1.0" if study == "50000004" else "", "1.0" if study == "50000001" else ""])
    write_csv_gz(root / "mimic-cxr-2.0.0-metadata.csv.gz", ["dicom_id", "subject_id", "study_id", "ViewPosition"], metadata)
    with open(root / "mimic-cxr-2.0.0-chexpert.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["subject_id", "study_id", "Cardiomegaly", "Edema", "No Finding"])
        writer.writerows(labels)
    return root


@pytest.fixture(scope="session")
def wordpiece_tokenizer():
    """A small WordPiece tokenizer built here (no download)."""
    return train_wordpiece(TOKENIZER_TEXTS)
