"""IU X-ray reports from the installed torchxrayvision wheel, MeSH labels and the image join."""

from __future__ import annotations

import pytest

from codixr.data import load_iu_xray, mesh_to_labels, patient_overlap
from codixr.modality import PATHOLOGIES


@pytest.fixture(scope="module")
def iu():
    return load_iu_xray()


def test_reports_are_read_from_the_wheel(iu):
    summary = iu.summary()
    assert 3900 <= summary["studies"] <= 4000  # the collection has 3,955 reports
    assert 3850 <= summary["impressions"] <= summary["studies"]  # 3,921 with an impression
    assert summary["patients"] == summary["studies"]  # one report per patient id
    assert summary["images"] == {"frontal": 0, "lateral": 0, "unknown": 0}  # no images folder given
    assert sum(summary["images_listed_in_reports"].values()) > 7000  # 7,470 image ids in the XML
    first = iu.by_id("CXR1")
    assert first.impression == "Normal chest x-___."  # "XXXX" de-identification gap normalised
    assert first.meta["mesh"] == ["normal"] and first.labels["No Finding"] == 1.0
    assert all(s.source == "iu-xray" and s.meta["license"] == "CC BY-NC-ND 4.0" for s in iu)


def test_split_is_patient_disjoint_and_deterministic(iu):
    assert patient_overlap(iu) == {}
    counts = iu.summary()["splits"]
    assert 0.07 < counts["validate"] / len(iu) < 0.13 and counts["test"] == 0
    assert [s.split for s in load_iu_xray()] == [s.split for s in iu]


def test_mesh_mapping():
    labels = mesh_to_labels(["Cardiomegaly/borderline", "Opacity/lung/base/left", "Mass/breast/large",
                             "Mediastinum/lymph nodes/enlarged", "Pulmonary Congestion/mild", "Hydropneumothorax"])
    assert labels["Cardiomegaly"] == -1.0 and labels["Lung Opacity"] == 1.0 and labels["Edema"] == 1.0
    assert labels["Pneumothorax"] == 1.0 and labels["Pleural Effusion"] == 1.0
    assert labels["Lung Lesion"] is None and labels["Enlarged Cardiomediastinum"] is None  # not lung / nodes
    assert labels["No Finding"] == 0.0
    normal = mesh_to_labels(["normal"])
    assert normal["No Finding"] == 1.0 and all(normal[p] == 0.0 for p in PATHOLOGIES)
    assert all(v is None for v in mesh_to_labels(["No Indexing", "Spine/degenerative"]).values())


def test_mesh_labels_agree_with_the_terms(iu):
    for study in iu:
        heads = {t.split("/")[0].lower() for t in study.meta["mesh"]}
        assert (study.labels["Pleural Effusion"] in (1.0, -1.0)) == bool(heads & {"pleural effusion", "hydropneumothorax"})
        assert (study.labels["No Finding"] == 1.0) == ("normal" in heads)


def test_images_are_joined_by_id(iu, tmp_path):
    ids = [im["image_id"] for im in iu.by_id("CXR1").meta["images"]]
    (tmp_path / "png").mkdir()
    (tmp_path / "png" / f"{ids[0]}.png").write_bytes(b"")  # OpenI PNG name
    (tmp_path / "dcm").mkdir()
    dicom_name = ids[1].removeprefix("CXR").replace("_1_IM", "_IM")  # NLMCXR DICOM name, e.g. 1_IM-0001-4001
    (tmp_path / "dcm" / f"{dicom_name}.dcm").write_bytes(b"")
    ds = load_iu_xray(tmp_path, require_both_views=False)
    study = ds.by_id("CXR1")
    assert sorted(r.image_id for r in study.images) == sorted(ids)
    listed = {im["image_id"]: im["view"] for im in study.meta["images"]}
    assert all(r.view == listed[r.image_id] for r in study.images)
    assert sum(len(s.images) for s in ds) == 2
    assert len(load_iu_xray(tmp_path, require_both_views=True)) == (1 if study.has_both_views else 0)
