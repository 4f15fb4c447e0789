"""The app's parts without a server: settings, request checks, study upload, findings, keypatch seam, temp files."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import gradio as gr
import pytest

from codixr.app import findings as app_findings
from codixr.app.config import AppConfig, default_reader_db
from codixr.app.examples import load_examples
from codixr.app.findings import (
    ItemFindings,
    agreement_table,
    findings_table,
    keypatch_view,
    report_findings,
    report_highlights,
)
from codixr.app.generation import GenerationRequest, generate
from codixr.app.runtime import ModelService, TempStore, self_test
from codixr.app.ui import allowed_outputs, build_app, guarded
from codixr.app.uploads import StudyUploadError, read_study
from codixr.errors import (
    EmptyInputError,
    InputError,
    ModelPackageError,
    OverlappingModalitiesError,
    ReportTooLongError,
    UnknownLabelError,
)
from codixr.modality import PATHOLOGIES
from tests.app.fixtures import IDENTIFYING_VALUES, write_dicom, write_png, write_zip, xray_array


# --------------------------------------------------------------------------------------------- settings
def test_config_defaults_and_environment():
    config = AppConfig.from_args([], environ={})
    assert (config.host, config.port, config.model, config.reader_real_dir) == ("127.0.0.1", 7860, None, None)
    assert config.reader_db_path == default_reader_db()
    env = {"GRADIO_SERVER_PORT": "7999", "GRADIO_SERVER_NAME": "0.0.0.0", "CODIXR_MODEL": "pkg",
           "CODIXR_READER_REAL_DIR": "/data/real", "CODIXR_READER_DB": "/srv/reader.sqlite", "CODIXR_READER_CODES": "1"}
    config = AppConfig.from_args([], environ=env)
    assert (config.host, config.port, config.model, config.reader_codes) == ("0.0.0.0", 7999, "pkg", True)
    assert config.reader_real_dir == Path("/data/real") and config.reader_db_path == Path("/srv/reader.sqlite")
    assert AppConfig.from_args(["--port", "7001", "--model", "other"], environ=env).port == 7001
    assert default_reader_db({"XDG_DATA_HOME": "/x"}) == Path("/x/codixr/reader-study.sqlite")
    with pytest.raises(InputError, match="whole number"):
        AppConfig.from_args([], environ={"GRADIO_SERVER_PORT": "abc"})
    with pytest.raises(InputError, match="between 1 and 65535"):
        AppConfig(port=0)


# --------------------------------------------------------------------------------------------- requests
def test_output_choices_untick_the_inputs_but_stay_all_three():
    update = allowed_outputs("f.png", None, "  ", ["frontal", "report"])
    assert "choices" not in update and update["value"] == ["report"]  # a click in flight stays valid (issue 14.5)
    assert "Frontal is given" in update["info"]
    assert allowed_outputs(None, None, "", ["lateral"])["value"] == ["lateral"]


@pytest.mark.parametrize(("kwargs", "error", "message"), [
    ({"outputs": ("frontal",)}, EmptyInputError, "Nothing to generate from"),
    ({"impression": "x"}, InputError, "Tick at least one output"),
    ({"frontal": "f.png", "outputs": ("frontal", "report")}, OverlappingModalitiesError, "frontal is given"),
    ({"labels": ("Edema", "Gout"), "outputs": ("frontal",)}, UnknownLabelError, "Unknown diagnosis label 'Gout'"),
    ({"impression": "a" * 5001, "outputs": ("frontal",)}, ReportTooLongError, "5,001 characters"),
    ({"labels": ("Edema",), "outputs": ("frontal",), "steps": 2.5}, InputError, "Steps must be a whole number"),
    ({"labels": ("Edema",), "outputs": ("frontal",), "guidance": 0.5}, InputError, "Guidance must be between"),
    ({"labels": ("Edema",), "outputs": ("frontal",), "seed": -1}, InputError, "The seed must be"),
    ({"labels": ("Edema",), "outputs": ("frontal",), "sampler": "euler"}, InputError, "Unknown sampler 'euler'"),
])
def test_request_checks_name_what_to_change(kwargs, error, message):
    with pytest.raises(error, match=message):
        GenerationRequest(**kwargs).checked()


def test_request_is_normalised():
    request = GenerationRequest(impression="  Edema.  ", labels=("edema", "Edema"), outputs=("L", "frontal"),
                                steps=20.0, seed=3.0).checked()
    assert (request.impression, request.labels, request.outputs) == ("Edema.", ("Edema",), ("frontal", "lateral"))
    assert (request.steps, request.seed) == (20, 3) and isinstance(request.steps, int)


def test_generation_reports_progress_and_writes_downloads(tiny_package, tmp_path):
    ticks = []
    result = generate(ModelService(str(tiny_package)), GenerationRequest(labels=("Edema",), outputs=("frontal",),
                                                                        steps=3), workdir=tmp_path,
                      progress=lambda step, total: ticks.append((step, total)))
    assert ticks == [(1, 3), (2, 3), (3, 3)]
    assert sorted(p.name for p in result.downloads) == ["codixr-findings.json", "codixr-frontal-synthetic.dcm",
                                                        "codixr-frontal-synthetic.png"]
    assert all(p.parent == tmp_path for p in result.downloads)


# --------------------------------------------------------------------------------------------- model + self-test
def test_missing_default_model_is_reported_not_raised(monkeypatch, tmp_path):
    import codixr.pipeline

    monkeypatch.delenv("CODIXR_MODEL", raising=False)
    monkeypatch.setattr(codixr.pipeline, "DEFAULT_MODEL_PATH", tmp_path / "codixr-default")
    service = ModelService()
    with pytest.raises(ModelPackageError, match="has not been trained and packaged"):
        service.pipeline()
    status = self_test(service)
    assert not status.model_ok and "not loaded" in status.markdown() and "--model PATH" in status.markdown()
    with pytest.raises(ModelPackageError):
        generate(service, GenerationRequest(labels=("Edema",), outputs=("frontal",)), workdir=tmp_path)
    assert "not found" in str(pytest.raises(ModelPackageError, ModelService(str(tmp_path / "nope")).pipeline).value)


def test_self_test_names_the_model_and_the_optional_parts(tiny_package):
    status = self_test(ModelService(str(tiny_package), device="cpu"))
    assert status.model_ok and status.device == "cpu"
    line = status.markdown()
    assert f"`{tiny_package.name}` loaded (64 px images, joint generation)" in line
    assert "**Classifier:**" in line and "**Keypatch overlays:**" in line and "**Device:** cpu" in line


def test_guarded_handlers_show_typed_messages_and_hide_internal_ones(caplog):
    @guarded("Generation")
    def typed():
        raise EmptyInputError("Give something.")

    @guarded("Generation")
    def internal():
        raise RuntimeError(f"failed on /tmp/{IDENTIFYING_VALUES[0]}.dcm")

    with pytest.raises(gr.Error, match="Give something."):
        typed()
    with caplog.at_level(logging.ERROR), pytest.raises(gr.Error) as error:
        internal()
    assert "internal error (RuntimeError)" in str(error.value) and "still running" in str(error.value)
    assert IDENTIFYING_VALUES[0] not in str(error.value) and IDENTIFYING_VALUES[0] not in caplog.text
    assert "RuntimeError" in caplog.text


# --------------------------------------------------------------------------------------------- study upload
def test_study_reads_dicoms_and_zips(tmp_path):
    pa, ll = write_dicom(tmp_path / "1.dcm", view_position="PA"), write_dicom(tmp_path / "2.dcm", view_position="LL")
    study = read_study([pa, ll])
    assert (study.frontal.name, study.lateral.name, study.messages) == ("1.dcm", "2.dcm", [])
    archive = write_zip(tmp_path / "s.zip", {"a/IM1": pa.read_bytes(), "a/.DS_Store": b"x"})
    study = read_study([archive, ll])
    assert study.frontal.name == "IM1" and study.lateral.name == "2.dcm" and len(study.files) == 2
    assert not any(value in study.markdown() for value in IDENTIFYING_VALUES)


@pytest.mark.parametrize(("members", "message"), [
    (None, "No files were uploaded"),
    ({}, "holds no files"),
    ({"x.txt": b"hello"}, "None of the uploaded files is a readable chest X-ray"),
    ("damaged", "damaged or incomplete"),
])
def test_study_upload_errors(tmp_path, members, message):
    if members is None:
        paths = []
    elif members == "damaged":
        good = write_zip(tmp_path / "ok.zip", {"a": b"0" * 1000}).read_bytes()
        (tmp_path / "bad.zip").write_bytes(good[:40])
        paths = [tmp_path / "bad.zip"]
    else:
        paths = [write_zip(tmp_path / "s.zip", members)]
    with pytest.raises(StudyUploadError, match=message):
        read_study(paths)


# --------------------------------------------------------------------------------------------- findings
def test_report_highlights_keep_the_text_and_mark_findings():
    text = "Small LEFT pleural effusion.\nNo pneumothorax."
    spans = report_highlights(text)
    assert "".join(span for span, _ in spans) == text
    marked = {span.lower(): category for span, category in spans if category}
    assert marked == {"effusion": "Pleural Effusion: positive", "pneumothorax": "Pneumothorax: negative"}


def test_agreement_and_findings_tables_from_reports():
    real = report_findings("Report (real)", "Large right pleural effusion. Mild cardiomegaly.")
    synthetic = report_findings("Report (synthetic)", "Small right pleural effusion. No cardiomegaly.")
    headers, rows, summary = agreement_table(real, synthetic)
    verdicts = {row[0]: row[3] for row in rows}
    assert verdicts["Pleural Effusion"] == "agree" and verdicts["Cardiomegaly"] == "DIFFER"
    assert len(rows) == len(PATHOLOGIES) and "agree on **9 of 10**" in summary
    assert headers[1] == "Report (real) (labeler)"
    headers, rows = findings_table([real, synthetic])
    assert headers == ["Pathology", "Report (real) · labeler", "Report (synthetic) · labeler"]
    assert rows[-1][0] == "No Finding" and len(rows) == len(PATHOLOGIES) + 1


def test_image_without_any_reader_is_not_compared():
    from codixr.findings import Findings

    blind = ItemFindings("Frontal (real)", "frontal", readings=[Findings.unavailable("x", "not installed")])
    _, rows, summary = agreement_table(blind, blind)
    assert {row[3] for row in rows} == {"not compared"} and "No pathology could be compared" in summary


def test_keypatch_seam(monkeypatch, tiny_package):
    image = xray_array(0, (64, 64)) / 255.0
    pipe = ModelService(str(tiny_package)).pipeline()
    view = keypatch_view(pipe, image, report="Small left pleural effusion.")
    assert view.note == "" and view.overlay.size == (64, 64) and view.keywords


# --------------------------------------------------------------------------------------------- examples, temp
def test_examples_come_from_the_folder_when_it_exists(tmp_path):
    assert load_examples(tmp_path / "absent") == []
    write_png(tmp_path / "f.png")
    (tmp_path / "examples.json").write_text(json.dumps([
        {"frontal": "f.png", "outputs": ["lateral", "report"]},
        {"impression": "Mild edema.", "labels": ["Edema"], "outputs": ["frontal"], "seed": 3},
        {"frontal": "../outside.png", "outputs": ["lateral"]},
        {"impression": "Mild edema.", "outputs": ["report"]},
    ]))
    rows = load_examples(tmp_path)
    assert len(rows) == 2
    assert rows[0][0] == str((tmp_path / "f.png").resolve()) and rows[0][4] == ["lateral", "report"]
    assert rows[1][2:5] == ["Mild edema.", ["Edema"], ["frontal"]] and rows[1][7] == 3
    demo = build_app(AppConfig(examples_dir=tmp_path), ModelService(), TempStore(tmp_path / "temp"))
    assert any(isinstance(block, gr.Dataset) for block in demo.blocks.values())
    demo = build_app(AppConfig(examples_dir=tmp_path / "absent"), ModelService(), TempStore(tmp_path / "temp2"))
    assert not any(isinstance(block, gr.Dataset) for block in demo.blocks.values())


def test_temp_store_prunes_and_cleans_up(tmp_path):
    store = TempStore(tmp_path / "t", max_age_s=60)
    old = store.new_dir("generate")
    (old / "x.png").write_bytes(b"1")
    past = time.time() - 120
    import os

    os.utime(old, (past, past))
    new = store.new_dir("generate")
    assert not old.exists() and new.exists() and new.name.startswith("generate-")
    store.cleanup()
    assert not store.root.exists()
    private = TempStore()
    assert private.root.stat().st_mode & 0o077 == 0  # only this user can read uploads
    private.cleanup()
