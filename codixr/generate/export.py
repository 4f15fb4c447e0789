"""Write a synthetic dataset: ``export_dataset(ExportConfig(...))``, behind ``python -m codixr.generate``.

The folder layout is described (and read back) in :mod:`codixr.data.synthetic`.

Seeds and determinism. Sample i is generated with seed ``base + i`` (the pipeline derives a distinct noise
generator per output modality from it); ``pipe(..., seed=record["seed"])`` reproduces a sample. Samples are batched
in fixed groups: process r of W takes the indices ``i % W == r`` and cuts them into consecutive groups of
``batch_size``; a group is generated again as a whole when any of its samples is missing, so a resumed run
writes the same bytes as an uninterrupted one. PNG, report and findings files are byte-identical between
runs with the same settings, batch size, number of processes and CPU threads on the same machine and software
(DICOM files differ only in their fresh UIDs and creation time). The pipeline takes one seed per sample of a
batch, so a sample's noise depends only on its own seed: with another batch size it comes out the same up to
the floating-point rounding of batched kernels.

Resuming. A sample counts as written when its files and its manifest line exist. Files are written under a
temporary name and renamed, then the manifest line is appended to the process's shard and flushed. The main
process merges ``manifest.jsonl`` and the shards at the start of a run (so a killed run is picked up) and at
its end, keeping one line per sample and only samples whose files all exist.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from codixr.data.synthetic import (
    DATASET_FILE,
    MANIFEST_CSV,
    MANIFEST_JSONL,
    SAMPLES_DIR,
    SHARD_DIR,
    read_dataset_info,
    read_manifest,
    shard_files,
)
from codixr.errors import InputError, OverlappingModalitiesError
from codixr.generate.conditions import (
    LABEL_MODES,
    Condition,
    batch_inputs,
    label_conditions,
    parse_study_inputs,
    report_conditions,
    study_conditions,
)
from codixr.modality import Modality
from codixr.pipeline import package_sha256

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
FINDINGS_SOURCES = ("zero-shot", "xrv", "trained", "auto", "none")
SAMPLERS = ("dpm++", "ddim", "ddpm")
# dataset.json entries a resumed run must share with the run that started the folder.
RESUME_KEYS = ("model_sha256", "outputs", "conditioning", "seed", "sampler", "dicom", "findings")
CSV_COLUMNS = ("sample_id", "index", "seed", "condition_kind", "condition", "study_source", "outputs", "frontal",
               "lateral", "report", "findings", "frontal_dicom", "lateral_dicom", "model_sha256", "sampler", "steps",
               "guidance_scale", "batch_size", "world_size", "joint")


@dataclasses.dataclass
class ExportConfig:
    """Settings of a synthetic dataset export (the options of ``python -m codixr.generate``).

    Give exactly one of ``from_labels`` (a prevalence spec), ``from_reports`` (a file) or ``from_studies``
    (a dataset folder). ``n`` is required with labels and defaults to the number of reports / studies
    otherwise (cycling through them when larger). ``outputs`` defaults to every modality that is not an input.
    """

    out: str | os.PathLike
    n: int | None = None
    outputs: Sequence[str] | str | None = None
    model: str | os.PathLike | None = None
    from_labels: str | None = None
    label_mode: str = "exact"
    from_reports: str | os.PathLike | None = None
    report_column: str | None = None
    from_studies: str | os.PathLike | None = None
    studies_kind: str = "auto"
    condition_on: Sequence[str] | str = ("frontal",)
    split: str | None = None
    batch_size: int = 1
    steps: int = 20
    guidance_scale: float | None = None  # None: the package's validated scale per output
    sampler: str = "dpm++"
    seed: int = 0
    dicom: bool = False
    findings: str = "zero-shot"

    def check(self) -> None:
        """Raise InputError naming the first setting that cannot work."""
        given = [name for name in ("from_labels", "from_reports", "from_studies") if getattr(self, name)]
        if len(given) != 1:
            raise InputError("Say what to generate from: give exactly one of --from-labels SPEC, --from-reports FILE "
                             "or --from-studies DIR.")
        if self.from_labels and self.n is None:
            raise InputError("Give the number of samples (--n) for label-conditioned synthesis.")
        checks = [
            (self.n is None or self.n >= 1, f"--n must be at least 1, not {self.n}."),
            (self.batch_size >= 1, f"--batch-size must be at least 1, not {self.batch_size}."),
            (self.steps >= 1, f"--steps must be at least 1, not {self.steps}."),
            (self.guidance_scale is None or self.guidance_scale >= 0,
             f"--guidance must not be negative, not {self.guidance_scale}."),
            (self.seed >= 0, f"--seed must be 0 or more, not {self.seed}."),
            (self.sampler in SAMPLERS, f"Unknown sampler {self.sampler!r}: use one of {', '.join(SAMPLERS)}."),
            (self.findings in FINDINGS_SOURCES,
             f"Unknown findings reader {self.findings!r}: use one of {', '.join(FINDINGS_SOURCES)}."),
            (self.label_mode in LABEL_MODES,
             f"Unknown label mode {self.label_mode!r}: use one of {', '.join(LABEL_MODES)}."),
        ]
        for ok, message in checks:
            if not ok:
                raise InputError(message)


@dataclasses.dataclass
class ExportResult:
    """What one process of an export did.

    ``written``: samples this process generated; ``skipped``: its samples already on disk; ``seconds``: its time
    in the generation loop; ``total``: samples in the merged manifest (main process; None elsewhere).
    """

    out: Path
    n: int
    written: int
    skipped: int
    seconds: float
    total: int | None = None

    @property
    def samples_per_second(self) -> float:
        return self.written / self.seconds if self.seconds > 0 else 0.0


# ----------------------------------------------------------------------------------------------- helpers
def sample_id(index: int) -> str:
    """The id (and folder name) of sample ``index``: zero-padded to six digits."""
    return f"{index:06d}"


def sample_seed(base_seed: int, index: int) -> int:
    """The seed of sample ``index``: ``base + index`` (see the module docstring)."""
    return base_seed + index


def process_state() -> Any:
    """Accelerate's ``PartialState`` for this process (rank, world size, device, barrier).

    Several processes on CPU only (``torchrun`` or ``accelerate launch`` on a machine without GPUs) need
    Accelerate's CPU mode, which is switched on here; a launch whose processes cannot see each other would
    make every process write every sample, so it is refused.
    """
    import torch
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    launched = int(os.environ.get("WORLD_SIZE", "1"))
    state = PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU") or (launched > 1 and not torch.cuda.is_available()))
    if launched > 1 and state.num_processes != launched:
        raise InputError(f"This process was launched as one of {launched} (WORLD_SIZE) but Accelerate sees "
                         f"{state.num_processes}; launch with `accelerate launch` or `torchrun` so that the processes "
                         "share the work.")
    return state


def _atomic_write(path: Path, write: Callable[[Path], Any]) -> Path:
    """Write through ``write(tmp)`` and rename into place, so a killed run never leaves a half-written file."""
    tmp = path.with_name(path.name + ".part")
    write(tmp)
    os.replace(tmp, path)
    return path


def _write_text(path: Path, text: str) -> Path:
    return _atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))


def _json_line(record: dict[str, Any]) -> str:
    return json.dumps(record, sort_keys=True, ensure_ascii=False) + "\n"


def _csv_row(record: dict[str, Any]) -> dict[str, Any]:
    condition, files, sampler = record["condition"], record["files"], record["sampler"]
    text = {"labels": "|".join(condition.get("labels", [])), "report": condition.get("report", ""),
            "study": condition.get("study_id", "")}[condition["kind"]]
    row = {"sample_id": record["sample_id"], "index": record["index"], "seed": record["seed"],
           "condition_kind": condition["kind"], "condition": text, "study_source": condition.get("study_source", ""),
           "outputs": "|".join(record["outputs"]), "model_sha256": record.get("model_sha256") or "",
           "sampler": sampler["name"], **{k: sampler.get(k, "") for k in ("steps", "guidance_scale", "batch_size",
                                                                             "world_size", "joint")}}
    row.update({key: files.get(key, "") for key in ("frontal", "lateral", "report", "findings", "frontal_dicom",
                                                     "lateral_dicom")})
    return row


def merge_manifests(out: str | os.PathLike) -> list[dict[str, Any]]:
    """Merge ``manifest.jsonl`` and the shards into ``manifest.jsonl`` + ``manifest.csv`` (one line per sample
    whose files all exist, by index) and remove the shards; returns the records. Safe to call again."""
    root = Path(out)
    read_dataset_info(root)  # refuses a folder that is not an export
    records = read_manifest(root, complete_only=True)
    _write_text(root / MANIFEST_JSONL, "".join(_json_line(r) for r in records))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(_csv_row(r) for r in records)
    _write_text(root / MANIFEST_CSV, buffer.getvalue())
    for shard in shard_files(root):
        shard.unlink()
    if (root / SHARD_DIR).is_dir() and not any((root / SHARD_DIR).iterdir()):
        (root / SHARD_DIR).rmdir()
    return records


class _ShardWriter:
    """Appends manifest lines of one process to ``shards/rank-NNNNN.jsonl`` (opened on the first write), flushed to
    disk after every batch. A context manager."""

    def __init__(self, root: Path, rank: int) -> None:
        self.path = root / SHARD_DIR / f"rank-{rank:05d}.jsonl"
        self.handle: Any = None

    def write(self, records: Sequence[dict[str, Any]]) -> None:
        if self.handle is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            cut = self.path.is_file() and self.path.stat().st_size > 0 and self.path.read_bytes()[-1:] != b"\n"
            self.handle = open(self.path, "a", encoding="utf-8")
            if cut:  # a line cut short by a killed run: start on a fresh line
                self.handle.write("\n")
        self.handle.write("".join(_json_line(r) for r in records))
        self.handle.flush()
        os.fsync(self.handle.fileno())

    def __enter__(self) -> "_ShardWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.handle is not None:
            self.handle.close()


def _prepare_folder(root: Path, info: dict[str, Any]) -> None:
    """Create or check the export folder and its dataset.json, and merge what an earlier run left (main process)."""
    if (root / DATASET_FILE).is_file():
        old = read_dataset_info(root)
        changed = [key for key in RESUME_KEYS if old.get(key) != info.get(key)]
        if changed:
            raise InputError(
                f"{root} holds an export made with other settings ({', '.join(changed)} differ). Rerun with the "
                "settings of that export to resume it, or give a new --out folder.")
        for key in ("batch_size", "world_size"):
            if old.get(key) != info.get(key):
                logger.warning("This run uses %s=%s where the export was started with %s: new samples come from the "
                               "same seeds but are not byte-identical to a run with the original setting.",
                               key, info.get(key), old.get(key))
    elif root.is_dir() and any(root.iterdir()):
        raise InputError(f"{root} is not empty and is not a synthetic dataset folder; give a new or empty --out folder.")
    root.mkdir(parents=True, exist_ok=True)
    _write_text(root / DATASET_FILE, json.dumps(info, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
    merge_manifests(root)


# ----------------------------------------------------------------------------------------------- conditions
def build_conditions(config: ExportConfig) -> tuple[list[Condition], dict[str, Any]]:
    """The condition of every sample and the ``conditioning`` entry of dataset.json."""
    config.check()
    if config.from_labels:
        return label_conditions(config.from_labels, int(config.n), config.seed, config.label_mode)
    if config.from_reports:
        return report_conditions(config.from_reports, config.n, config.report_column)
    return study_conditions(config.from_studies, config.n, parse_study_inputs(config.condition_on),
                            config.studies_kind, config.split)


def resolve_outputs(config: ExportConfig, inputs: Sequence[str]) -> tuple[Modality, ...]:
    """The requested outputs, by default every modality that is not an input; refuses outputs that are inputs."""
    if config.outputs:
        outputs = Modality.parse_many(config.outputs)
    else:
        outputs = tuple(m for m in Modality if m.value not in inputs)
    overlap = [m.value for m in outputs if m.value in inputs]
    if overlap:
        raise OverlappingModalitiesError(
            f"{', '.join(overlap)} is an input of every sample and cannot also be generated; drop it from --outputs.")
    if not outputs:
        raise InputError("Nothing to generate: every modality is an input. Ask for at least one output.")
    return outputs


# ----------------------------------------------------------------------------------------------- per sample
def sample_findings(images: dict[str, Any], report: str | None, pipe: Any, source: str) -> dict[str, Any]:
    """What the findings readers see on one sample: each image read by ``source`` (``Findings.to_dict()``),
    and the report's labels from the rule-based labeler (1 / 0 / -1 uncertain / None not mentioned)."""
    from codixr.findings import classify
    from codixr.metrics.labeler import label_report

    out: dict[str, Any] = {view: classify(image, pipe, source=source).to_dict() for view, image in images.items()}
    if report is not None:
        out["report_labels"] = label_report(report)
    return out


def _write_sample(root: Path, index: int, seed: int, condition: Condition, images: dict[str, Any],
                  report: str | None, common: dict[str, Any], config: ExportConfig, pipe: Any) -> dict[str, Any]:
    """Write one sample's files and return its manifest record."""
    from codixr.io import write_png, write_secondary_capture

    sid = sample_id(index)
    folder = root / SAMPLES_DIR / sid
    folder.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    for view, image in images.items():  # each write_* call runs right away, inside _atomic_write
        files[view] = _atomic_write(folder / f"{view}.png", lambda p: write_png(image, p))  # noqa: B023
        if config.dicom:
            description = f"CoDiXR synthetic {view} view, sample {sid}, generated from {condition.describe()}."
            files[f"{view}_dicom"] = _atomic_write(folder / f"{view}.dcm", lambda p: write_secondary_capture(
                image, p, description=description, view=view))  # noqa: B023
    if report is not None:
        files["report"] = _write_text(folder / "report.txt", report + "\n")
    if config.findings != "none":
        found = sample_findings(images, report, pipe, config.findings)
        files["findings"] = _write_text(folder / "findings.json", json.dumps(found, indent=1, sort_keys=True) + "\n")
    record_condition = condition.to_record()
    if condition.report is not None:
        from codixr.data.reports import truncate_to_token_limit

        if truncate_to_token_limit(condition.report, pipe.tokenizer, max_tokens=pipe.prompt_encoder.max_text_tokens)[1]:
            record_condition["truncated"] = True
    return {"sample_id": sid, "index": index, "seed": seed, "condition": record_condition,
            "files": {k: p.relative_to(root).as_posix() for k, p in files.items()}, **common}


# ----------------------------------------------------------------------------------------------- the export
def _load_pipeline(model: str | os.PathLike | None, device: Any) -> tuple[Any, str | None, str]:
    """(pipeline, package hash or None for hub ids, model name) for a model path, $CODIXR_MODEL or the default."""
    from codixr.pipeline import CoDiXRPipeline, resolve_model_path

    name = resolve_model_path(model)
    pipe = CoDiXRPipeline.from_pretrained(name)
    local = Path(name).expanduser()
    digest = package_sha256(local) if (local / "model_index.json").is_file() else None
    return pipe.to(device), digest, name


def export_dataset(config: ExportConfig, pipe: Any = None, *, rank: int | None = None,
                   world_size: int | None = None, progress: bool = True) -> ExportResult:
    """Generate (or finish) a synthetic dataset in ``config.out``; returns what this process did.

    Runs as one process, or as one of several under ``accelerate launch`` (rank and world size come from
    Accelerate's ``PartialState`` unless given): process r writes the samples ``i % world_size == r`` and
    its own manifest shard, and the main process merges the manifest at the end. ``pipe`` overrides loading
    ``config.model`` (its package hash is then recorded as null).
    """
    conditions, conditioning = build_conditions(config)
    n = len(conditions)
    outputs = resolve_outputs(config, conditions[0].inputs)
    barrier: Callable[[], None] = lambda: None  # noqa: E731
    device = getattr(pipe, "device", "cpu")
    if rank is None or world_size is None:
        state = process_state()
        rank, world_size, device, barrier = state.process_index, state.num_processes, state.device, state.wait_for_everyone
    if not 0 <= rank < world_size:
        raise InputError(f"Process rank {rank} is outside 0..{world_size - 1}.")
    if pipe is None:
        pipe, digest, model_name = _load_pipeline(config.model, device)
    else:
        digest, model_name = None, str(config.model or getattr(pipe, "name_or_path", "") or "in-memory pipeline")
    pipe.set_progress_bar_config(disable=True)
    if config.findings not in ("none", "zero-shot"):
        from codixr.findings import load_classifier

        load_classifier(config.findings, device)  # fail now, not after the first batch, when weights are missing

    root = Path(config.out).expanduser().resolve()
    info = json.loads(json.dumps({
        "format": FORMAT_VERSION, "source": "codixr-synthetic", "model": model_name, "model_sha256": digest,
        "outputs": [m.value for m in outputs], "conditioning": conditioning, "seed": config.seed,
        "sampler": {"name": config.sampler, "steps": config.steps,
                                                "guidance_scale": config.guidance_scale},
        "dicom": config.dicom, "findings": config.findings, "n": n, "batch_size": config.batch_size,
        "world_size": world_size,
    }))
    if rank == 0:
        _prepare_folder(root, info)
    barrier()

    done = {r["index"] for r in read_manifest(root)}
    mine = [i for i in range(n) if i % world_size == rank]
    groups = [mine[k:k + config.batch_size] for k in range(0, len(mine), config.batch_size)]
    work = [(group, [i for i in group if i not in done]) for group in groups]
    work = [(group, missing) for group, missing in work if missing]
    todo = sum(len(missing) for _, missing in work)
    logger.info("process %d of %d: %d of its %d samples to generate (%d already written) in %s", rank + 1,
                world_size, todo, len(mine), len(mine) - todo, root)

    from tqdm.auto import tqdm

    start = time.perf_counter()
    with _ShardWriter(root, rank) as shard, tqdm(total=len(mine), initial=len(mine) - todo, unit="sample",
                                                 desc=f"export {rank + 1}/{world_size}", disable=not progress,
                                                 dynamic_ncols=True) as bar:
        for group, missing in work:
            seeds = [sample_seed(config.seed, i) for i in group]
            result = pipe(**batch_inputs([conditions[i] for i in group]), outputs=outputs,
                          num_inference_steps=config.steps, guidance_scale=config.guidance_scale, seed=seeds,
                          scheduler=config.sampler)
            sampler = {"name": config.sampler, "steps": config.steps, "guidance_scale": config.guidance_scale,
                       "batch_size": config.batch_size, "world_size": world_size, "joint": bool(result.joint)}
            common = {"outputs": [m.value for m in outputs], "model_sha256": digest, "sampler": sampler}
            records = []
            for j, i in enumerate(group):
                if i not in missing:
                    continue
                images = {m.value: getattr(result, m.value)[j] for m in outputs if m.is_image}
                report = result.report[j] if Modality.REPORT in outputs else None
                records.append(_write_sample(root, i, seeds[j], conditions[i], images, report, common, config, pipe))
            shard.write(records)
            bar.update(len(records))
    seconds = time.perf_counter() - start
    if todo:
        logger.info("process %d of %d: wrote %d samples in %.1f s (%.3f samples/s)", rank + 1, world_size, todo,
                    seconds, todo / seconds)
    barrier()
    total = None
    if rank == 0:
        from codixr.generate.summary import write_summary

        records = merge_manifests(root)
        total = len(records)
        _, md_path = write_summary(root)
        logger.info("%s: %d of %d samples written; manifest %s, summary %s", root, total, n,
                    root / MANIFEST_JSONL, md_path)
    return ExportResult(out=root, n=n, written=todo, skipped=len(mine) - todo, seconds=seconds, total=total)
