"""Prevalence specs, label assignment, reports files and batching of conditions (no model needed)."""

from __future__ import annotations

import collections

import pytest

from codixr.errors import InputError, UnknownLabelError
from codixr.generate import assign_labels, parse_prevalence, read_reports
from codixr.generate.conditions import Condition, batch_inputs, parse_study_inputs
from codixr.modality import NO_FINDING


def test_prevalence_spec_accepts_names_abbreviations_and_percentages():
    spec = parse_prevalence("pleural effusion=0.3, Ptx.=10% ,Cardiomegaly:0")
    assert spec == {"Pleural Effusion": 0.3, "Pneumothorax": 0.1, "Cardiomegaly": 0.0}


@pytest.mark.parametrize("spec, error, words", [
    ("Pleural Effusion=0.3,No Finding=0.5", InputError, "remains"),
    ("Effusion=0.3,Pleural Effusion=0.2", InputError, "twice"),
    ("Pneumothorax=1.5", InputError, "between 0 and 1"),
    ("Pneumothorax=lots", InputError, "must be a number"),
    ("Pneumothorax", InputError, "LABEL=FRACTION"),
    ("Broken Leg=0.1", UnknownLabelError, "Accepted labels"),
    (" , ", InputError, "names no label"),
])
def test_prevalence_spec_errors_say_what_to_write(spec, error, words):
    with pytest.raises(error, match=words):
        parse_prevalence(spec)


def test_exact_mode_gives_exactly_the_requested_mix_and_no_finding_for_the_rest():
    spec = {"Pleural Effusion": 0.3, "Pneumothorax": 0.1}
    labels = assign_labels(spec, 50, seed=7)
    counts = collections.Counter(name for sample in labels for name in sample)
    assert counts["Pleural Effusion"] == 15 and counts["Pneumothorax"] == 5
    assert all(sample == (NO_FINDING,) for sample in labels if not set(sample) & set(spec))
    assert counts[NO_FINDING] == sum(1 for s in labels if "Pleural Effusion" not in s and "Pneumothorax" not in s)
    assert assign_labels(spec, 50, seed=7) == labels  # seeded
    assert assign_labels(spec, 50, seed=8) != labels


def test_bernoulli_mode_is_per_sample_so_a_longer_export_extends_a_shorter_one():
    spec = {"Pleural Effusion": 0.3, "Pneumothorax": 0.1}
    short, long = assign_labels(spec, 40, 3, "bernoulli"), assign_labels(spec, 400, 3, "bernoulli")
    assert long[:40] == short
    share = sum("Pleural Effusion" in s for s in long) / len(long)
    assert 0.2 < share < 0.4  # 0.3 on average (binomial sd 0.023 at n=400)
    with pytest.raises(InputError, match="label mode"):
        assign_labels(spec, 4, 0, "uniform")


def test_reports_file_lines_and_csv_column(tmp_path):
    lines = tmp_path / "impressions.txt"
    lines.write_text("No acute process.\n\n  Small left effusion.  \n", encoding="utf-8")
    assert read_reports(lines) == ["No acute process.", "Small left effusion."]
    table = tmp_path / "reports.csv"
    table.write_text('id,impression\n1,"Moderate\n cardiomegaly."\n2,Normal chest.\n', encoding="utf-8")
    assert read_reports(table) == ["Moderate cardiomegaly.", "Normal chest."]
    assert read_reports(table, column="id") == ["1", "2"]
    with pytest.raises(InputError, match="no column findings"):
        read_reports(table, column="findings")
    (tmp_path / "empty.txt").write_text("\n", encoding="utf-8")
    with pytest.raises(InputError, match="no report text"):
        read_reports(tmp_path / "empty.txt")


def test_study_inputs_and_batched_pipeline_arguments():
    assert parse_study_inputs("R, F,labels,f") == ("frontal", "report", "labels")
    batch = [Condition("study", labels=("Edema",), report="Mild edema.", frontal="/x/1.png", study_id="s1"),
             Condition("study", labels=("Pneumonia",), report="Pneumonia.", frontal="/x/2.png", study_id="s2")]
    assert batch_inputs(batch) == {"frontal": ["/x/1.png", "/x/2.png"], "report": ["Mild edema.", "Pneumonia."],
                                   "labels": [["Edema"], ["Pneumonia"]]}
    record = batch[0].to_record()
    assert record["study_id"] == "s1" and "/x/1.png" not in str(record)  # image paths never reach the manifest
    assert "s1" not in batch[0].describe() and "edema" not in batch[0].describe().lower()
    with pytest.raises(InputError, match="same inputs"):
        batch_inputs([batch[0], Condition("labels", labels=("Edema",))])
