"""`python -m codixr.evaluate` end to end on the tiny model package and tiny fixture datasets."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from codixr.errors import InputError, OverlappingModalitiesError, UnknownModalityError
from codixr.evaluate.cli import main
from codixr.evaluate.data import load_eval_data, select_items
from codixr.evaluate.settings import DEFAULT_SETTINGS, PAPER_SETTINGS, parse_setting, parse_settings
from codixr.modality import CONDITION_LABELS, PATHOLOGIES
from codixr.pipeline import CoDiXRPipeline
from tests.evaluate.conftest import TEST_STUDIES

TOP_KEYS = {"meta", "settings", "fid", "classification", "bleu", "report_labels", "consistency", "retrieval", "plots"}
HEADERS = ("## CoDiXR evaluation report", "### Table II — FID", "### Table III", "### Table IV — report quality",
           "### Table V — report factual correctness", "### Cross-modal consistency", "### Image–report retrieval",
           "### Plots")


def evaluate(model: Path, data: Path, out: Path, settings: str, *extra: str) -> dict:
    following = [] if "--following" in extra else ["--following", "off"]  # tested on its own below
    argv = ["--model", str(model), "--data", str(data), "--out", str(out), "--settings", settings,
            "--n", "2", "--steps", "2", "--threads", "1", "--no-progress", *following, *extra]
    assert main(argv) == 0
    return json.loads((out / "results.json").read_text(encoding="utf-8"))


@pytest.fixture
def count_calls(monkeypatch):
    """Count the real pipeline's calls (generation), keeping its behaviour."""
    calls = []
    original = CoDiXRPipeline.__call__

    def counted(self, *args, **kwargs):
        calls.append({k: len(v) for k, v in kwargs.items() if k in ("frontal", "lateral", "report", "labels")})
        return original(self, *args, **kwargs)

    monkeypatch.setattr(CoDiXRPipeline, "__call__", counted)
    return calls


# ------------------------------------------------------------------------------------------ settings


def test_settings_parse_paper_notation_and_ascii():
    assert parse_setting("L+T->F").name == "L+T→F"
    assert parse_setting("T+L→F") == parse_setting("L+T->F")  # canonical order F, L, T
    assert parse_setting("F+L->R").name == "F+L→T"  # R and T are both the report
    assert parse_setting("labels -> T").name == "labels→T" and parse_setting("labels->T").labels
    assert parse_setting("T->F+L").slug == "T-to-F+L"
    assert [s.name for s in parse_settings(",".join(PAPER_SETTINGS))] == list(PAPER_SETTINGS)
    assert len(parse_settings("T->F,T→F")) == 1
    assert len(DEFAULT_SETTINGS) == 11
    with pytest.raises(OverlappingModalitiesError):
        parse_setting("F->F")
    with pytest.raises(UnknownModalityError):
        parse_setting("X->F")
    for bad in ("F", "F->", "->T", "F->labels", "F->L->T"):
        with pytest.raises(InputError):
            parse_setting(bad)


def test_selection_is_a_fixed_prefix_and_respects_inputs(mimic_root):
    data = load_eval_data(mimic_root)
    assert data.kind == "mimic" and data.split == "test" and len(data.studies) == TEST_STUDIES
    assert len(data.train_impressions) == 4
    setting = parse_setting("F+L->T")
    two, four = select_items(setting, data, 2), select_items(setting, data, 4)
    assert [it.key for it in two.items] == [it.key for it in four.items[:2]] and two.available == TEST_STUDIES
    # Studies without a CheXpert row get the labeler's reading of their impression (none here in the test split).
    assert all(it.label_source == "dataset" and it.impression for it in data.studies)
    labelled = select_items(parse_setting("labels->T"), data, 10)
    assert all(it.positive_labels for it in labelled.items)


# ------------------------------------------------------------------------------------------ end to end


def test_following_tables_only(tiny_model, mimic_root, tmp_path):
    """--following only: the 'does the output follow its input' tables, without Tables II-V."""
    results = evaluate(tiny_model, mimic_root, tmp_path / "follow", "T->F", "--following", "only",
                       "--n-following", "4")
    block = results["following"]
    ae = block["text_autoencoder"]
    assert ae["impressions"] > 0 and 0 <= ae["exact_reconstruction"] <= 1 and ae["prior_samples"] == 64
    labels = block["labels_to_report"]
    assert set(labels["labels"]) == set(CONDITION_LABELS) and 1 <= labels["distinct_at_one_seed"] <= 11
    assert set(block["conditioning_gap"]) >= {"report"}
    for row in block["conditioning_gap"]["report"]["rows"]:
        assert row["null_gap"] >= 0 and row["swap_gap"] >= 0
    assert "report" in block["guidance_scales"]
    md = (tmp_path / "follow" / "results.md").read_text(encoding="utf-8")
    assert "Does the output follow its input?" in md and "labels→R" in md and "Conditioning gap" in md


def test_end_to_end_on_mimic_layout_then_resumes_without_generating(tiny_model, mimic_root, tmp_path, count_calls):
    out = tmp_path / "eval"
    results = evaluate(tiny_model, mimic_root, out, "T->F,F->L,F+L->T,T->F+L,labels->T",
                       "--backbones", "p_x,inception,xrv", "--batch-size", "2")
    assert TOP_KEYS <= set(results)
    assert len(count_calls) == 5  # one batch of 2 per setting
    meta = results["meta"]
    assert meta["kind"] == "mimic" and meta["split"] == "test" and meta["generation"]["steps"] == 2

    # Table II: P_X always computed, with its n; Inception and XRV reported as unavailable, never crashing.
    fid = results["fid"]
    assert set(fid) == {"T→F", "F→L", "T→F+L"} and set(fid["T→F+L"]) == {"frontal", "lateral"}
    px = fid["T→F"]["frontal"]["p_x"]
    assert px["available"] and px["value"] >= 0 and px["n_generated"] == 2 and px["n_real"] == 2
    assert "P_X" in px["backbone"]
    for name in ("inception", "xrv"):
        cell = fid["F→L"]["lateral"][name]
        assert not cell["available"] and "no local weights" in cell["reason"]

    # Table III: no classifier weights -> n/a with the reason; the zero-shot reading has Real Data rows.
    classification = results["classification"]
    assert not classification["classifier"]["available"] and "no local weights" in classification["classifier"]["reason"]
    rows = classification["zero-shot"]["rows"]
    assert {"Real Data (F)", "Real Data (L)", "T→F", "F→L", "T→F+L (F)", "T→F+L (L)"} == set(rows)
    assert rows["T→F"]["available"] and rows["T→F"]["n"] == 2 and set(rows["T→F"]["auroc"]) >= set(PATHOLOGIES)

    # Table IV: MIMIC has reference impressions, so BLEU and the two baselines are computed.
    bleu = results["bleu"]["F+L→T"]
    assert set(bleu) == {"CoDiXR", "baseline: most frequent training impression",
                         "baseline: nearest training impression (shared space)"}
    for row in bleu.values():
        assert row["available"] and row["n"] == 2 and 0 <= row["BLEU-4"] <= row["BLEU-1"] <= 1
    assert results["bleu"]["labels→T"]["CoDiXR"]["available"]
    # Table V: labels of the reference impressions, per class incl. No Finding.
    f1 = results["report_labels"]["F+L→T"]["CoDiXR"]
    assert f1["available"] and "No Finding" in f1["f1"] and "reference impressions" in f1["ground_truth"]

    # Consistency and retrieval.
    assert "F (generated) vs L (generated)" in results["consistency"]["T→F+L"]
    assert results["consistency"]["F+L→T"]["F (given) vs T (generated)"]["zero-shot"]["n"] == 2
    real = results["retrieval"]["real F ↔ impression"]
    assert real["available"] and real["n"] == TEST_STUDIES and 0 <= real["image_to_report"]["R@1"] <= 1

    # Markdown and plots.
    md = (out / "results.md").read_text(encoding="utf-8")
    for header in HEADERS:
        assert header in md
    assert "n/a [" in md and "Real Data (F)" in md and "BLEU-4" in md and "No F." in md
    for rel in [*results["plots"]["auroc"].values(), *results["plots"]["grids"].values()]:
        assert (out / rel).is_file() and f"]({rel})" in md
    manifest = json.loads((out / "samples" / "T-to-F+L" / "manifest.json").read_text(encoding="utf-8"))
    assert len(manifest["samples"]) == 2 and manifest["samples"]["0"]["joint"] is True

    # A rerun finds every sample cached: no generation, the same numbers.
    count_calls.clear()
    again = evaluate(tiny_model, mimic_root, out, "T->F,F->L,F+L->T,T->F+L,labels->T",
                     "--backbones", "p_x,inception,xrv", "--batch-size", "2")
    assert count_calls == []
    assert again["fid"] == results["fid"] and again["bleu"] == results["bleu"]


def test_resume_regenerates_only_the_missing_batch_bit_identically(tiny_model, mimic_root, tmp_path, count_calls):
    out = tmp_path / "eval"
    args = ("--n", "3", "--batch-size", "2", "--backbones", "p_x", "--readers", "zero-shot")
    evaluate(tiny_model, mimic_root, out, "T->F", *args)
    folder = out / "samples" / "T-to-F"
    before = {p.name: p.read_bytes() for p in folder.glob("*.png")}
    assert sorted(before) == ["0000_frontal.png", "0001_frontal.png", "0002_frontal.png"]
    assert [c["report"] for c in count_calls] == [2, 1]  # batches [0, 2) and [2, 3)

    # Simulate a run killed before the last batch was recorded, then one missing a sample inside a batch:
    # only the affected batch is generated again, whole, and gives the same bytes.
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    assert [manifest["samples"][str(i)]["seed"] for i in range(3)] == [0, 1, 2]  # one seed per case
    for missing, expected_calls in (("2", [1]), ("1", [2])):
        manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
        del manifest["samples"][missing]
        (folder / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
        count_calls.clear()
        evaluate(tiny_model, mimic_root, out, "T->F", *args)
        assert [c["report"] for c in count_calls] == expected_calls
        assert {p.name: p.read_bytes() for p in folder.glob("*.png")} == before

    # Another generation configuration invalidates the cache.
    count_calls.clear()
    evaluate(tiny_model, mimic_root, out, "T->F", *args, "--guidance", "1.5")
    assert len(count_calls) == 2


def test_available_classifier_fills_table_three(tiny_model, mimic_root, tiny_classifier, tmp_path, monkeypatch):
    from codixr.findings import clear_cache

    monkeypatch.setenv("CODIXR_CLASSIFIER", str(tiny_classifier))
    clear_cache()
    results = evaluate(tiny_model, mimic_root, tmp_path / "eval", "T->F", "--backbones", "p_x", "--n", "4")
    block = results["classification"]["classifier"]
    assert block["available"] and block["source"] == "CoDiXR-trained DenseNet (evaluation test)"
    real = block["rows"]["Real Data (F)"]
    assert real["n"] == TEST_STUDIES
    # The fixture's test split has one effusion and one pneumonia: both AUROCs are defined ...
    assert real["auroc"]["Pleural Effusion"] is not None and real["auroc"]["Pneumonia"] is not None
    # ... classes the classifier does not assess, or without ground truth, are not.
    assert real["auroc"]["Pneumothorax"] is None and real["n_samples"]["Pneumothorax"] == 0
    assert real["n_samples"]["Edema"] == 0
    assert (tmp_path / "eval" / "plots" / "auroc_classifier.png").is_file()


def test_settings_without_cases_are_reported_not_crashed(tiny_model, mimic_root, tmp_path, count_calls):
    # The fixture has no "validate" study: every setting is empty, and says so.
    results = evaluate(tiny_model, mimic_root, tmp_path / "eval", "T->F,F->T", "--split", "validate", "--backbones", "p_x")
    assert count_calls == []
    assert results["settings"]["F→T"]["n"] == 0 and "n/a" in results["settings"]["F→T"]["note"]
    assert not results["fid"]["T→F"]["frontal"]["p_x"]["available"]
    assert "no paired ground truth" in results["bleu"]["F→T"]["CoDiXR"]["reason"]
    assert not results["report_labels"]["F→T"]["CoDiXR"]["available"]
    assert not results["retrieval"]["real F ↔ text"]["available"]
    assert "n/a [1]" in (tmp_path / "eval" / "results.md").read_text(encoding="utf-8")


def test_clear_errors_exit_with_status_two(tiny_model, mimic_root, tmp_path, caplog):
    base = ["--model", str(tiny_model), "--out", str(tmp_path / "o"), "--no-progress"]
    assert main([*base, "--data", str(mimic_root), "--backbones", "p_x,resnet"]) == 2
    assert "--backbones" in caplog.text and "resnet" in caplog.text
    assert main([*base, "--data", str(tmp_path)]) == 2
    assert "neither a MIMIC-CXR folder" in caplog.text
    assert main([*base, "--data", str(mimic_root), "--settings", "F->F"]) == 2


def test_module_entry_point_prints_help():
    result = subprocess.run([sys.executable, "-m", "codixr.evaluate", "--help"], capture_output=True, text=True,
                            timeout=60, check=True)
    assert "--settings" in result.stdout and "--backbones" in result.stdout


def test_public_layout_uses_the_ground_truth_that_exists(tiny_model, shared_data_dir, tmp_path):
    results = evaluate(tiny_model, Path(shared_data_dir), tmp_path / "eval", "T->F,F->T,labels->T",
                       "--backbones", "p_x", "--n-retrieval", "20")
    assert results["meta"]["kind"] == "public" and results["meta"]["split"] == "validate"
    # F->T: images have no impressions -> BLEU n/a; report labels against the images' dataset labels.
    assert not results["bleu"]["F→T"]["CoDiXR"]["available"]
    assert "no paired ground truth" in results["bleu"]["F→T"]["CoDiXR"]["reason"]
    assert "dataset labels" in results["report_labels"]["F→T"]["CoDiXR"]["ground_truth"]
    # labels->T: IU impressions are the references.
    assert results["bleu"]["labels→T"]["CoDiXR"]["available"]
    # T->F: IU impressions in, FID against the real frontal images of the split.
    assert results["fid"]["T→F"]["frontal"]["p_x"]["n_real"] == 2
    assert results["retrieval"]["real F ↔ clinical notes"]["n"] == 20
