"""MIMIC-CXR reader on a tiny synthetic PhysioNet tree built by the test."""

from __future__ import annotations

import pytest

from codixr.data import DatasetNotFoundError, load_mimic_cxr, patient_overlap
from tests.data.fixtures import KEPT_STUDIES, REPORT_KEPT, write_csv_gz, write_dicom


def test_keeps_studies_with_impression_and_both_views(mimic_root):
    ds = load_mimic_cxr(mimic_root)
    assert {s.study_id for s in ds} == KEPT_STUDIES
    study = ds.by_id("s50000001")
    assert study.patient_id == "p10000001" and study.source == "mimic-cxr"
    assert [r.image_id for r in study.frontal] == ["a1"] and [r.image_id for r in study.lateral] == ["a2"]
    assert study.impression == "No acute cardiopulmonary process."
    assert study.findings_text.startswith("There is no focal consolidation")
    assert study.labels["No Finding"] == 1.0 and study.labels["Cardiomegaly"] is None


def test_view_from_dicom_header_when_metadata_lacks_it(mimic_root):
    study = load_mimic_cxr(mimic_root).by_id("s50000004")
    assert [r.image_id for r in study.lateral] == ["c2"] and study.lateral[0].position == "LL"
    assert study.labels["Cardiomegaly"] == 1.0 and study.labels["Edema"] == -1.0
    assert study.impression == "Moderate cardiomegaly with mild pulmonary edema, as seen on ___."


def test_selection_rules_can_be_switched_off(mimic_root):
    ds = load_mimic_cxr(mimic_root, require_impression=False, require_both_views=False)
    assert len(ds) == 6
    assert ds.by_id("s50000003").impression is None
    assert [r.position for r in ds.by_id("s50000006").unknown_view] == ["LAO"]  # oblique: neither view
    assert ds.by_id("s50000005").impression is None  # no report file
    kept = {s.study_id for s in load_mimic_cxr(mimic_root, require_impression=False)}
    assert kept == KEPT_STUDIES | {"s50000003", "s50000005"}  # both views, no impression


def test_official_split_file_is_used(mimic_root):
    write_csv_gz(mimic_root / "mimic-cxr-2.0.0-split.csv.gz", ["dicom_id", "study_id", "subject_id", "split"],
                 [["a1", "50000001", "10000001", "test"], ["c1", "50000004", "10000003", "validate"]])
    ds = load_mimic_cxr(mimic_root)
    assert {s.study_id: s.split for s in ds} == {"s50000001": "test", "s50000004": "validate"}
    # A study the file misses follows its patient's official split.
    ds = load_mimic_cxr(mimic_root, require_both_views=False)
    assert ds.by_id("s50000002").split == "test"


def test_hash_split_is_patient_disjoint_and_deterministic(tmp_path):
    root = tmp_path / "mimic"
    for p in range(40):
        patient = f"1{p:07d}"
        for k in range(3):
            study_dir = root / "files" / f"p{patient[:2]}" / f"p{patient}" / f"s5{p:04d}{k:03d}"
            write_dicom(study_dir / "f.dcm", "PA")
            write_dicom(study_dir / "l.dcm", "LATERAL")
            (study_dir.parent / f"{study_dir.name}.txt").write_text(REPORT_KEPT)
    ds = load_mimic_cxr(root, test_fraction=0.3, validate_fraction=0.2)
    assert len(ds) == 120 and patient_overlap(ds) == {}
    counts = ds.summary()["splits"]
    assert all(counts[name] > 0 for name in ("train", "validate", "test"))
    again = load_mimic_cxr(root, test_fraction=0.3, validate_fraction=0.2)
    assert [s.split for s in ds] == [s.split for s in again]
    other_salt = load_mimic_cxr(root, test_fraction=0.3, validate_fraction=0.2, salt="another")
    assert [s.split for s in ds] != [s.split for s in other_salt]


def test_missing_tree_is_a_clear_error(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="files/"):
        load_mimic_cxr(tmp_path)
