"""Synthetic datasets written by ``python -m codixr.generate``: the folder layout and its reader.

    from codixr.data import load_public_cxr, load_synthetic
    train = load_public_cxr().split("train") + load_synthetic("exports/effusion-10k")

Layout of an export folder::

    dataset.json                 the export's settings: model package hash, sampler, outputs, conditioning
    manifest.jsonl               one JSON object per finished sample, ordered by index (merged)
    manifest.csv                 the same, one flat row per sample
    shards/rank-00000.jsonl      lines of a run in progress, one file per process (merged at the end of a run,
                                 or by the next run when a run was killed)
    samples/<id>/frontal.png     generated images (8-bit grayscale PNG); frontal.dcm / lateral.dcm with --dicom
    samples/<id>/lateral.png
    samples/<id>/report.txt      the generated report impression
    samples/<id>/findings.json   what the findings readers see on each generated output
    summary.json, summary.md     requested vs measured prevalence of each label

A manifest line holds ``sample_id``, ``index``, ``seed``, ``condition`` (``kind`` "labels", "report" or "study"
with the labels, the report text or the study id), ``outputs``, ``files`` (paths relative to the folder),
``model_sha256`` and ``sampler``. A sample counts as written only when its manifest line exists and every file
it lists is on disk.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Iterator

from codixr.data.errors import DatasetFormatError, DatasetNotFoundError
from codixr.data.records import ImageRef, Study, StudyDataset, empty_labels, finalize_labels
from codixr.modality import NO_FINDING

logger = logging.getLogger(__name__)

SOURCE = "codixr-synthetic"
DATASET_FILE = "dataset.json"
MANIFEST_JSONL = "manifest.jsonl"
MANIFEST_CSV = "manifest.csv"
SHARD_DIR = "shards"
SAMPLES_DIR = "samples"
SUMMARY_JSON = "summary.json"
SUMMARY_MD = "summary.md"


def is_synthetic_dir(path: str | os.PathLike) -> bool:
    """True when ``path`` is an export folder of ``codixr.generate`` (it holds ``dataset.json``)."""
    return (Path(path) / DATASET_FILE).is_file()


def read_dataset_info(path: str | os.PathLike) -> dict[str, Any]:
    """The settings an export was written with (``dataset.json``)."""
    file = Path(path) / DATASET_FILE
    if not file.is_file():
        raise DatasetNotFoundError(f"{path} is not a synthetic dataset folder: it has no {DATASET_FILE}. Give the "
                                   "--out folder of `python -m codixr.generate`.")
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DatasetFormatError(f"{file} is not valid JSON ({exc}); the export folder is damaged.") from exc


def _jsonl_records(file: Path) -> Iterator[dict[str, Any]]:
    """The objects of a JSON-lines file; an unreadable line (cut short by a killed run) is skipped with a warning."""
    with open(file, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                logger.warning("%s line %d is incomplete (an interrupted run); that sample will be regenerated.",
                               file.name, number)
                continue
            if isinstance(record, dict) and isinstance(record.get("index"), int):
                yield record


def shard_files(path: str | os.PathLike) -> list[Path]:
    """The per-process manifest shards of a run that has not been merged yet."""
    folder = Path(path) / SHARD_DIR
    return sorted(folder.glob("rank-*.jsonl")) if folder.is_dir() else []


def record_complete(root: str | os.PathLike, record: dict[str, Any]) -> bool:
    """True when every file a manifest record lists exists."""
    return all((Path(root) / rel).is_file() for rel in record.get("files", {}).values())


def read_manifest(path: str | os.PathLike, complete_only: bool = True) -> list[dict[str, Any]]:
    """The manifest records of an export, merged from ``manifest.jsonl`` and any unmerged shards.

    One record per sample index (a later line replaces an earlier one), sorted by index. With
    ``complete_only`` (the default), records whose files are not all on disk are left out.
    """
    root = Path(path)
    by_index: dict[int, dict[str, Any]] = {}
    for file in [root / MANIFEST_JSONL, *shard_files(root)]:
        if file.is_file():
            for record in _jsonl_records(file):
                by_index[record["index"]] = record
    records = [by_index[i] for i in sorted(by_index)]
    return [r for r in records if record_complete(root, r)] if complete_only else records


def _labels(record: dict[str, Any], stated: list[str]) -> dict[str, float | None]:
    """CheXpert-convention labels of a label-conditioned sample: 1 for the conditioning labels, 0 for the other
    labels of the prevalence spec (asked to be absent), None for labels the spec does not mention."""
    condition = record.get("condition", {})
    positives = condition.get("labels") or []
    if condition.get("kind") not in ("labels", "study") or not positives:
        return empty_labels()
    labels = empty_labels()
    for name in stated:
        labels[name] = 0.0
    for name in positives:
        labels[name] = 1.0
    return finalize_labels(labels, normal=positives == [NO_FINDING])


def load_synthetic(path: str | os.PathLike, split: str = "train") -> StudyDataset:
    """Read an export of ``python -m codixr.generate`` as a :class:`StudyDataset` (one study per sample).

    Each study has the generated frontal/lateral images (PNG; ``ImageRef.extra["dicom"]`` names the DICOM
    when one was written), ``impression`` = the generated report, or the conditioning report when the
    report was an input, ``labels`` = the conditioning labels for label-conditioned samples (1 for the labels
    the sample was generated with, 0 for the other labels of the prevalence spec, None otherwise),
    ``source`` = "codixr-synthetic", every study in ``split``, and ``meta`` with the sample's seed, conditions,
    findings file, model hash and sampler settings. Samples whose files are missing (a killed run) are left out.
    """
    root = Path(path).expanduser().resolve()
    info = read_dataset_info(root)
    stated = list(info.get("conditioning", {}).get("spec_labels", []))
    records = read_manifest(root, complete_only=False)
    studies = []
    incomplete = 0
    for record in records:
        if not record_complete(root, record):
            incomplete += 1
            continue
        files = record.get("files", {})
        sample_id = str(record["sample_id"])
        condition = record.get("condition", {})
        impression = None
        if "report" in files:
            impression = (root / files["report"]).read_text(encoding="utf-8").strip()
        elif condition.get("report"):
            impression = condition["report"]
        study = Study(
            study_id=f"{SOURCE}:{sample_id}", patient_id=f"{SOURCE}:{sample_id}", impression=impression,
            labels=_labels(record, stated), split=split, source=SOURCE,
            meta={"index": record["index"], "seed": record.get("seed"), "condition": condition,
                  "outputs": record.get("outputs", []), "model_sha256": record.get("model_sha256"),
                  "sampler": record.get("sampler", {}), "impression_generated": "report" in files,
                  "findings": str(root / files["findings"]) if "findings" in files else None},
        )
        for view in ("frontal", "lateral"):
            if view in files:
                extra: dict[str, Any] = {"synthetic": True}
                if f"{view}_dicom" in files:
                    extra["dicom"] = str(root / files[f"{view}_dicom"])
                study.add_image(ImageRef(path=str(root / files[view]), view=view, image_id=f"{sample_id}-{view}",
                                         extra=extra))
        studies.append(study)
    if incomplete:
        logger.warning("%d samples of %s have missing files (an interrupted run) and were left out; rerun the "
                       "same command to finish them.", incomplete, root)
    return StudyDataset(studies, SOURCE)
