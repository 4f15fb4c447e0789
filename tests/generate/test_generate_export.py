"""Synthetic dataset export with a tiny random model: layout, read-back, resume, determinism, DICOM, sharding."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image

from codixr.data import load_synthetic
from codixr.data.summary import load_dataset
from codixr.errors import InputError
from codixr.generate import ExportConfig, export_dataset, merge_manifests, sample_seed
from codixr.io import SYNTHETIC_MARKER

REPO = Path(__file__).resolve().parents[2]

SPEC = "Pleural Effusion=0.5,Pneumothorax=0.1667"  # exactly 3 and 1 of 6 samples


def config(out: Path, model: Path, **overrides) -> ExportConfig:
    settings = dict(out=out, model=model, n=6, from_labels=SPEC, batch_size=2, steps=2, findings="zero-shot")
    settings.update(overrides)
    return ExportConfig(**settings)


def export(cfg: ExportConfig, rank: int = 0, world_size: int = 1):
    return export_dataset(cfg, rank=rank, world_size=world_size, progress=False)


def manifest_lines(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text(encoding="utf-8").splitlines()]


def sample_files(out: Path) -> dict[str, bytes]:
    """Every PNG, report and findings file of an export, by relative path."""
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted((out / "samples").rglob("*"))
            if p.suffix in (".png", ".txt", ".json")}


@pytest.fixture(scope="module")
def reference(tiny_model, tmp_path_factory) -> Path:
    """An uninterrupted 6-sample export (labels -> frontal + lateral + report, zero-shot findings)."""
    out = tmp_path_factory.mktemp("reference") / "export"
    result = export(config(out, tiny_model))
    assert (result.written, result.skipped, result.total) == (6, 0, 6)
    return out


def test_six_samples_read_back_as_a_dataset(reference):
    records = manifest_lines(reference)
    assert [r["index"] for r in records] == list(range(6))
    assert [r["seed"] for r in records] == [sample_seed(0, i) for i in range(6)] == [0, 1, 2, 3, 4, 5]
    with open(reference / "manifest.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["sample_id"] for r in rows] == [r["sample_id"] for r in records]
    assert len({r["model_sha256"] for r in records}) == 1 and len(records[0]["model_sha256"]) == 64
    assert records[0]["sampler"]["steps"] == 2 and records[0]["sampler"]["batch_size"] == 2

    ds = load_synthetic(reference)
    assert len(ds) == 6 and ds.summary()["images"] == {"frontal": 6, "lateral": 6, "unknown": 0}
    assert {s.source for s in ds} == {"codixr-synthetic"} and {s.split for s in ds} == {"train"}
    for study, record in zip(ds, records):
        assert study.meta["seed"] == record["seed"] and study.meta["condition"] == record["condition"]
        positives = {name for name, value in study.labels.items() if value == 1.0}
        assert positives == set(record["condition"]["labels"])
        normal = record["condition"]["labels"] == ["No Finding"]  # a normal study: every pathology negative
        assert study.labels["Pleural Effusion"] in (0.0, 1.0) and study.labels["Atelectasis"] == (0.0 if normal else None)
        assert study.impression == (reference / record["files"]["report"]).read_text().strip()
        image = Image.open(study.frontal[0].path)
        assert image.mode == "L" and image.size == (64, 64)
        findings = json.loads(Path(study.meta["findings"]).read_text())
        assert set(findings) == {"frontal", "lateral", "report_labels"} and findings["frontal"]["available"]
    assert sum(s.labels["Pleural Effusion"] == 1.0 for s in ds) == 3  # exact mode: 50% of 6
    assert sum(s.labels["Pneumothorax"] == 1.0 for s in ds) == 1

    assert len(load_dataset(reference)) == 6  # `python -m codixr.data summary` detects the kind
    summary = json.loads((reference / "summary.json").read_text())
    effusion = summary["labels"]["Pleural Effusion"]
    assert effusion["requested"] == 0.5 and effusion["conditioned"] == 0.5
    assert set(effusion["measured"]) == {"frontal: zero-shot", "lateral: zero-shot", "report: rule-based labeler"}
    assert "| Pleural Effusion | 50.0% | 50.0% |" in (reference / "summary.md").read_text()


def test_same_seeds_give_identical_files(reference, tiny_model, tmp_path):
    export(config(tmp_path / "again", tiny_model))
    assert sample_files(tmp_path / "again") == sample_files(reference) != {}
    assert (tmp_path / "again" / "manifest.jsonl").read_bytes() == (reference / "manifest.jsonl").read_bytes()
    export(config(tmp_path / "other-seed", tiny_model, seed=1))
    assert sample_files(tmp_path / "other-seed")["samples/000000/frontal.png"] != \
        sample_files(reference)["samples/000000/frontal.png"]


def test_resume_regenerates_only_what_is_missing_and_never_duplicates_lines(reference, tiny_model, tmp_path):
    out = tmp_path / "export"
    export(config(out, tiny_model))
    # A run killed between writing sample 3's files and its manifest line, while writing sample 5's line,
    # and before writing sample 4's lateral view.
    lines = (out / "manifest.jsonl").read_text().splitlines(keepends=True)
    (out / "manifest.jsonl").write_text("".join(lines[:3]))
    (out / "shards").mkdir()
    (out / "shards" / "rank-00000.jsonl").write_text(lines[4] + lines[5][:40])
    (out / "samples" / "000004" / "lateral.png").unlink()
    kept = {i: (out / "samples" / f"{i:06d}" / "frontal.png").stat().st_mtime_ns for i in (0, 1, 2)}

    result = export(config(out, tiny_model))
    # groups are (0, 1), (2, 3), (4, 5): samples 3, 4, 5 are missing, so groups (2, 3) and (4, 5) run again
    assert (result.written, result.skipped, result.total) == (3, 3, 6)
    assert [r["index"] for r in manifest_lines(out)] == list(range(6))
    assert not (out / "shards").exists()
    assert {i: (out / "samples" / f"{i:06d}" / "frontal.png").stat().st_mtime_ns for i in kept} == kept
    assert sample_files(out) == sample_files(reference)

    again = export(config(out, tiny_model))  # a finished export: nothing to do
    assert (again.written, again.skipped) == (0, 6) and len(manifest_lines(out)) == 6
    with pytest.raises(InputError, match="steps differ|sampler differ"):
        export(config(out, tiny_model, steps=3))


def test_a_killed_process_resumes_without_duplicates(tiny_model, tmp_path):
    out = tmp_path / "killed"
    command = [sys.executable, "-m", "codixr.generate", "--model", str(tiny_model), "--n", "6", "--from-labels", SPEC,
               "--out", str(out), "--batch-size", "2", "--steps", "20", "--findings", "none", "--threads", "1",
               "--no-progress", "-q"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    shard = out / "shards" / "rank-00000.jsonl"
    deadline = time.monotonic() + 120
    try:
        while not (shard.is_file() and shard.read_text().count("\n") >= 2):
            assert proc.poll() is None, f"the export ended before it could be killed: {proc.stderr.read()[-2000:]!r}"
            assert time.monotonic() < deadline, "no sample was written within 120 s"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    before = [json.loads(line)["index"] for line in shard.read_text().splitlines() if line.strip()]
    assert 2 <= len(before) < 6 and not (out / "manifest.jsonl").read_text().strip()

    result = export(config(out, tiny_model, steps=20, findings="none"))
    assert result.skipped == len(before) and result.written == 6 - len(before) and result.total == 6
    assert [r["index"] for r in manifest_lines(out)] == list(range(6))
    assert len(load_synthetic(out)) == 6


def test_dicom_outputs_are_marked_synthetic_and_copy_no_identifier(tiny_model, tmp_path):
    root = tmp_path / "public"
    identifiers = write_public_fixture(root)
    out = tmp_path / "laterals"
    result = export(ExportConfig(out=out, model=tiny_model, from_studies=root, condition_on="frontal",
                                 outputs="lateral", dicom=True, batch_size=3, steps=2, findings="none"))
    assert result.total == 3
    records = manifest_lines(out)
    assert {r["condition"]["study_id"] for r in records} == {"covid-cxr:P-COVID-1:day3", "rsna-pneumonia:PID-834121",
                                                            "nih-cxr14-64px:00000099_000"}
    assert str(root) not in (out / "manifest.jsonl").read_text()  # no path of a real image
    for record in records:
        assert set(record["files"]) == {"lateral", "lateral_dicom"}
        file = out / record["files"]["lateral_dicom"]
        raw = file.read_bytes()
        for value in identifiers:
            assert value.encode() not in raw, f"{value} copied into {file.name}"
        ds = pydicom.dcmread(file)
        assert list(ds.ImageType)[:2] == ["DERIVED", "SECONDARY"]
        assert ds.DerivationDescription == SYNTHETIC_MARKER and SYNTHETIC_MARKER in ds.ImageComments
        assert ds.PatientID == "SYNTHETIC" and str(ds.PatientName) == "SYNTHETIC^CODIXR"
        assert ds.ViewPosition == "LL" and ds.SOPInstanceUID not in identifiers
        png = np.asarray(Image.open(out / record["files"]["lateral"]))
        assert np.array_equal(ds.pixel_array, png)
    ds = load_synthetic(out)
    assert all(s.lateral and not s.frontal and s.lateral[0].extra["dicom"].endswith(".dcm") for s in ds)


def test_reports_condition_the_images_and_become_the_impression(tiny_model, tmp_path):
    reports = tmp_path / "impressions.txt"
    reports.write_text("Small left pleural effusion.\nModerate right pneumothorax.\n", encoding="utf-8")
    out = tmp_path / "from-reports"
    result = export(ExportConfig(out=out, model=tiny_model, from_reports=reports, n=3, outputs="frontal", steps=2,
                                 findings="none"))
    assert result.total == 3
    ds = load_synthetic(out)
    assert [s.impression for s in ds] == ["Small left pleural effusion.", "Moderate right pneumothorax.",
                                         "Small left pleural effusion."]
    assert [s.meta["condition"]["row"] for s in ds] == [0, 1, 0] and not any(s.meta["impression_generated"] for s in ds)
    with pytest.raises(InputError, match="is an input"):
        export(ExportConfig(out=tmp_path / "bad", model=tiny_model, from_reports=reports, outputs="report,frontal"))


def test_processes_write_their_own_shards_and_the_merge_joins_them(reference, tiny_model, tmp_path):
    out = tmp_path / "sharded"
    first = export(config(out, tiny_model, batch_size=3), rank=0, world_size=2)
    assert (first.written, first.total) == (3, 3)
    assert [r["index"] for r in manifest_lines(out)] == [0, 2, 4]
    second = export(config(out, tiny_model, batch_size=3), rank=1, world_size=2)
    assert second.written == 3 and second.total is None  # only the main process merges
    assert [json.loads(line)["index"] for line in (out / "shards" / "rank-00001.jsonl").read_text().splitlines()] \
        == [1, 3, 5]
    assert len(load_synthetic(out)) == 6  # unmerged shards are read too
    assert [r["index"] for r in merge_manifests(out)] == list(range(6))
    assert [r["index"] for r in manifest_lines(out)] == list(range(6)) and not (out / "shards").exists()


def write_public_fixture(root: Path) -> list[str]:
    """A shared-data-like folder: one study per public set; the RSNA image is a DICOM full of identifiers.
    Returns the identifying values that must never reach an exported file."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    rng = np.random.default_rng(0)
    for folder in ("covid-cxr", "rsna-pneumonia", "nih-cxr14-64px"):
        (root / folder).mkdir(parents=True)
    Image.fromarray(rng.integers(0, 255, (80, 64), dtype=np.uint8)).save(root / "covid-cxr" / "a.png")
    Image.fromarray(rng.integers(0, 255, (64, 64), dtype=np.uint8)).save(root / "nih-cxr14-64px" / "00000099_000.png")
    (root / "covid-cxr" / "metadata.csv").write_text(
        "image,patientid,offset,finding,view,view_raw,date,clinical_notes\n"
        "a.png,P-COVID-1,3,COVID-19,frontal,PA,,Patient Jane Roe seen at Example General.\n")
    (root / "nih-cxr14-64px" / "metadata.csv").write_text(
        "image,patient_id,view,finding_labels\n00000099_000.png,99,PA,Effusion\n")
    (root / "rsna-pneumonia" / "metadata.csv").write_text(
        "image,patientId,view,pixel_spacing_mm,target,boxes\nPID-834121.dcm,PID-834121,PA,0.28,0,\n")
    study_uid, sop_uid = generate_uid(), generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1"
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality, ds.ViewPosition = meta.MediaStorageSOPClassUID, sop_uid, "CR", "PA"
    ds.PatientName, ds.PatientID, ds.PatientBirthDate = "DOE^JANE", "PID-834121", "19470312"
    ds.AccessionNumber, ds.InstitutionName, ds.StudyInstanceUID = "ACC-55512", "Example General Hospital", study_uid
    ds.Rows = ds.Columns = 64
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = rng.integers(0, 255, (64, 64), dtype=np.uint8).tobytes()
    ds.save_as(root / "rsna-pneumonia" / "PID-834121.dcm", enforce_file_format=True)
    return ["DOE^JANE", "PID-834121", "19470312", "ACC-55512", "Example General", study_uid, sop_uid, "P-COVID-1",
            "00000099_000", "Jane Roe"]


def test_a_sample_does_not_depend_on_its_batch(tiny_model, tmp_path):
    alone, batched = (tmp_path / "b1", 1), (tmp_path / "b3", 3)
    for out, batch_size in (alone, batched):
        export(config(out, tiny_model, n=3, batch_size=batch_size, findings="none", outputs="frontal"))
    for i in range(3):
        a, b = (np.asarray(Image.open(out / "samples" / f"{i:06d}" / "frontal.png"), dtype=int) for out, _ in
                (alone, batched))
        assert np.abs(a - b).max() <= 3  # same noise; only floating-point rounding of batched kernels differs
    assert np.abs(a - np.asarray(Image.open(alone[0] / "samples" / "000000" / "frontal.png"), dtype=int)).mean() > 3


def test_command_line_errors_exit_2_with_a_message(tiny_model, tmp_path, caplog):
    from codixr.generate.__main__ import main

    assert main(["--out", str(tmp_path / "x"), "--n", "3"]) == 2
    assert "exactly one of --from-labels" in caplog.text
    assert main(["--out", str(tmp_path), "--merge-only"]) == 2
    assert "not a synthetic dataset folder" in caplog.text
    (tmp_path / "notes.txt").write_text("mine")
    assert main(["--out", str(tmp_path), "--n", "2", "--from-labels", "Edema=0.5", "--model", str(tiny_model)]) == 2
    assert "is not empty and is not a synthetic dataset folder" in caplog.text
    assert main(["--out", str(tmp_path / "y"), "--n", "2", "--from-labels", "Edema=0.5", "--model", str(tmp_path)]) == 2
    assert "not a CoDiXR model package" in caplog.text and not (tmp_path / "y").exists()


@pytest.mark.slow
def test_two_processes_under_torchrun_share_the_samples(tiny_model, tmp_path):
    out = tmp_path / "torchrun"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "codixr.generate",
               "--model", str(tiny_model), "--num-samples", "5", "--from-labels", SPEC, "--out", str(out),
               "--steps", "2", "--threads", "1", "--no-progress", "--findings", "none"]
    subprocess.run(command, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, check=True, capture_output=True,
                   timeout=300)
    records = manifest_lines(out)
    assert [r["index"] for r in records] == list(range(5)) and {r["sampler"]["world_size"] for r in records} == {2}
    assert not (out / "shards").exists() and len(load_synthetic(out)) == 5
