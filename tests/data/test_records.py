"""Record types, view mapping, label conventions and the hash split."""

from __future__ import annotations

import pytest

from codixr.data import ImageRef, Study, StudyDataset, assign_splits, patient_overlap, view_from_position
from codixr.data.records import finalize_labels, merge_label
from codixr.data.splits import hash_fraction, split_for_key
from codixr.errors import InputError
from codixr.modality import CONDITION_LABELS, PATHOLOGIES


@pytest.mark.parametrize("position, view", [
    ("PA", "frontal"), ("ap supine", "frontal"), ("LL", "lateral"), ("LATERAL", "lateral"), ("RL", "lateral"),
    ("LAO", "unknown"), ("AP LLD", "unknown"), ("XTABLE LATERAL", "unknown"), ("", "unknown"), (None, "unknown"),
])
def test_view_from_position(position, view):
    assert view_from_position(position) == view


def test_label_conventions():
    assert merge_label(None, 0.0) == 0.0 and merge_label(0.0, -1.0) == -1.0 and merge_label(1.0, -1.0) == 1.0
    normal = finalize_labels({}, normal=True)
    assert normal["No Finding"] == 1.0 and all(normal[p] == 0.0 for p in PATHOLOGIES)
    sick = finalize_labels({"Edema": -1.0})
    assert sick["No Finding"] == 0.0 and sick["Atelectasis"] is None and list(sick) == list(CONDITION_LABELS)


def make(n: int) -> list[Study]:
    studies = []
    for i in range(n):
        study = Study(study_id=f"s{i}", patient_id=f"p{i // 2}", source="test")
        study.add_image(ImageRef(path=f"/x/{i}.png", view="frontal"))
        if i % 2:
            study.add_image(ImageRef(path=f"/x/{i}l.png", view="lateral"))
        studies.append(study)
    return studies


def test_dataset_is_list_like_and_summarises():
    ds = StudyDataset(make(6), "t")
    assert len(ds) == 6 and ds[0].study_id == "s0" and isinstance(ds[1:3], StudyDataset) and len(ds[1:3]) == 2
    assert len(ds + ds[:2]) == 8 and ds.by_id("s3").has_both_views
    summary = ds.summary()
    assert summary["images"] == {"frontal": 6, "lateral": 3, "unknown": 0} and summary["patients"] == 3
    assert summary["studies_with_both_views"] == 3 and summary["labels"]["Edema"]["not_stated"] == 6
    with pytest.raises(InputError):
        ds.split("holdout")
    with pytest.raises(InputError):
        ds[0].images_of("oblique")


def test_repr_does_not_show_patient_or_text():
    study = Study(study_id="s1", patient_id="PATIENT-42", impression="private words", source="t")
    assert "PATIENT-42" not in repr(study) and "private" not in repr(study)


def test_hash_split_is_stable_and_near_its_fractions():
    assert hash_fraction("a") == hash_fraction("a") != hash_fraction("b")
    splits = [split_for_key(str(i), validate_fraction=0.1, test_fraction=0.2) for i in range(5000)]
    assert abs(splits.count("test") / 5000 - 0.2) < 0.02 and abs(splits.count("validate") / 5000 - 0.1) < 0.02
    with pytest.raises(InputError):
        split_for_key("a", validate_fraction=0.6, test_fraction=0.5)


def test_linked_patients_share_a_split():
    studies = make(200)
    assign_splits(studies, validate_fraction=0.5, linked=[("test/p1", "test/p2"), ("test/p2", "test/p7")])
    assert patient_overlap(studies) == {}
    assert len({s.split for s in studies if s.patient_id in ("p1", "p2", "p7")}) == 1
