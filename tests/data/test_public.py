"""The public sets in ../shared/data (skipped where the folder is absent), counts as in its README."""

from __future__ import annotations

import pytest

from codixr.data import DatasetNotFoundError, default_data_dir, load_public_cxr, patient_overlap
from codixr.data.public import COVID, NIH, RSNA
from codixr.errors import InputError


def by_source(ds, source):
    return ds.filter(lambda s: s.source == source)


def test_counts_match_the_readme(shared_data_dir):
    ds = load_public_cxr(shared_data_dir, drop_duplicate_images=False)
    covid, rsna, nih = (by_source(ds, name).summary() for name in (COVID, RSNA, NIH))
    assert sum(covid["images"].values()) == 531 and covid["patients"] == 289
    assert covid["images"] == {"frontal": 452, "lateral": 46, "unknown": 33}
    assert sum(rsna["images"].values()) == rsna["images"]["frontal"] == rsna["studies"] == 1350
    assert rsna["labels"]["Pneumonia"]["positive"] == 343 and rsna["labels"]["Pneumonia"]["negative"] == 1007
    assert sum(nih["images"].values()) == nih["images"]["frontal"] == nih["studies"] == 882
    assert covid["impressions"] == 0 and 0 < covid["findings_texts"] <= covid["studies"]


def test_duplicate_covid_images_are_kept_once_and_their_patients_together(shared_data_dir):
    ds = load_public_cxr(shared_data_dir, datasets=[COVID])
    paths = [r.path for s in ds for r in s.images]
    assert len(paths) == len(set(paths)) == 526  # 531 rows, 5 images listed under two patient ids
    kept_both = load_public_cxr(shared_data_dir, datasets=[COVID], drop_duplicate_images=False)
    splits = {}
    for study in kept_both:
        for ref in study.images:
            splits.setdefault(ref.path, set()).add(study.split)
    assert all(len(v) == 1 for v in splits.values())  # the same image never lands in two splits


def test_covid_studies_group_views_per_patient_and_day(shared_data_dir):
    ds = load_public_cxr(shared_data_dir, datasets=[COVID])
    pairs = [s for s in ds if s.has_both_views]
    assert 0 < len({s.patient_id for s in pairs}) <= 34  # README: 34 patients have both views
    for study in ds:
        offsets = {r.extra["offset"] for r in study.images}
        assert len(offsets) == 1  # one day per study
        assert study.impression is None  # clinical notes are not impressions
        assert study.meta["license"] and all("license" in r.extra for r in study.images)
    normal = [s for s in ds if s.meta["finding"] == ["No Finding"]]
    assert normal and all(s.labels["No Finding"] == 1.0 and s.labels["Pneumonia"] == 0.0 for s in normal)
    covid19 = [s for s in ds if s.meta["finding"] == ["COVID-19"]]
    assert covid19 and all(s.labels["Pneumonia"] == 1.0 and s.labels["No Finding"] == 0.0 for s in covid19)


def test_rsna_boxes_and_nih_labels(shared_data_dir):
    ds = load_public_cxr(shared_data_dir, datasets=[RSNA, NIH])
    for study in by_source(ds, RSNA):
        boxes = study.meta["boxes"]
        assert bool(boxes) == (study.labels["Lung Opacity"] == 1.0) == (study.labels["Pneumonia"] == 1.0)
        assert all(len(b) == 4 and b[2] > 0 and b[3] > 0 and b[0] + b[2] <= 512 and b[1] + b[3] <= 512 for b in boxes)
        assert study.frontal[0].spacing_mm > 0.1
    nih = by_source(ds, NIH)
    effusion = [s for s in nih if "Effusion" in s.meta["finding_labels"].split("|")]
    assert len(effusion) == 142 and all(s.labels["Pleural Effusion"] == 1.0 for s in effusion)
    lesion = [s for s in nih if {"Mass", "Nodule"} & set(s.meta["finding_labels"].split("|"))]
    assert lesion and all(s.labels["Lung Lesion"] == 1.0 for s in lesion)
    assert all(s.frontal[0].extra["resolution_px"] == 64 for s in nih)


def test_split_is_patient_disjoint_with_the_asked_fraction(shared_data_dir):
    ds = load_public_cxr(shared_data_dir, validate_fraction=0.2, test_fraction=0.1)
    assert patient_overlap(ds) == {}
    patients = {}
    for s in ds:
        patients[(s.source, s.patient_id)] = s.split
    share = {name: sum(v == name for v in patients.values()) / len(patients) for name in ("validate", "test")}
    assert 0.15 < share["validate"] < 0.25 and 0.06 < share["test"] < 0.14


def test_data_dir_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("CODIXR_DATA_DIR", str(tmp_path))
    assert default_data_dir() == tmp_path
    with pytest.raises(DatasetNotFoundError, match="metadata.csv"):
        load_public_cxr()
    with pytest.raises(InputError, match="Unknown public dataset"):
        load_public_cxr(tmp_path, datasets=["chexpert"])
