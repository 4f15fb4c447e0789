"""The training engine shared by every stage: configuration, Accelerate loop, checkpoints, logs, plots.

Every stage script builds a ``StageModule`` (an ``nn.Module`` whose ``forward(batch)`` returns the loss
and its parts), a batch function ``batch_fn(indices) -> batch`` over an indexable dataset, and hands
them to :func:`train_stage`. The engine then gives every stage the same behaviour:

* runs unchanged on CPU, one GPU, several GPUs or nodes (``accelerate launch -m training.<stage>``),
  bf16 on GPU when asked, gradient accumulation;
* deterministic batches: the batch of step k is a function of (seed, k), so a run killed at any point
  resumes exactly from its latest checkpoint (model, optimizer, LR schedule and RNG states);
* a progress bar with loss and ETA, ``metrics.csv``, TensorBoard when installed, ``loss.png`` and a
  stage-specific sample callback every N steps;
* ``final/`` with the trained components (``save_pretrained``) and ``DONE.json`` (steps, wall time, hardware).
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import os
import platform
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import yaml

logger = logging.getLogger("training")

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
REPO = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------------------------------------- config
def load_config(name_or_path: str) -> dict[str, Any]:
    """A training configuration: ``tiny``/``small``/``paper`` (training/configs/NAME.yaml) or a YAML path."""
    path = Path(name_or_path)
    if not path.suffix:
        path = CONFIG_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"No training configuration {name_or_path!r} (looked for {path}).")
    with open(path, encoding="utf-8") as f:
        config = yaml.safe_load(f)
    config["name"] = config.get("name", path.stem)
    return config


def run_dir(config: dict[str, Any], override: str | None = None) -> Path:
    """Where a configuration's stages write (outside git by default: ``runs/<name>``)."""
    path = Path(override or os.environ.get("CODIXR_RUN_DIR") or config.get("run_dir") or REPO / "runs" / config["name"])
    path.mkdir(parents=True, exist_ok=True)
    return path


def stage_args(description: str, extra: Callable[[argparse.ArgumentParser], None] | None = None,
               argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line every stage shares: ``--config``, ``--run-dir``, ``--max-steps``, ``--data-dir``, ``--limit``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", default="small", help="tiny, small, paper or a YAML path")
    parser.add_argument("--run-dir", default=None, help="output folder (default runs/<config>)")
    parser.add_argument("--max-steps", type=int, default=None, help="override the stage's step count")
    parser.add_argument("--data-dir", default=None, help="the shared public data folder (default ../shared/data)")
    parser.add_argument("--limit", type=int, default=None, help="use at most this many studies per source (smoke runs)")
    parser.add_argument("--mixed-precision", default=None, choices=("no", "bf16", "fp16"))
    parser.add_argument("-v", "--verbose", action="store_true")
    if extra:
        extra(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    return args


# ---------------------------------------------------------------------------------------------- engine
@dataclass
class StageSpec:
    """How to train one stage."""

    name: str
    steps: int
    batch_size: int
    lr: float
    weight_decay: float = 1e-4
    warmup_steps: int = 0
    grad_accum: int = 1
    checkpoint_every: int = 200
    sample_every: int = 0
    log_every: int = 10
    seed: int = 0
    max_grad_norm: float = 1.0
    mixed_precision: str = "no"
    keep_checkpoints: int = 2
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_config(cls, name: str, section: dict[str, Any], args: argparse.Namespace | None = None) -> "StageSpec":
        known = {f for f in cls.__dataclass_fields__ if f not in ("name", "extra")}
        spec = cls(name=name, **{k: v for k, v in section.items() if k in known},
                   extra={k: v for k, v in section.items() if k not in known})
        if args is not None and args.max_steps:
            spec.steps = args.max_steps
        if args is not None and args.mixed_precision:
            spec.mixed_precision = args.mixed_precision
        return spec


def cpu_has_native_bf16(cpuinfo: str | None = None) -> bool | None:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX-BF16 in /proc/cpuinfo); None where unknown.

    Without it PyTorch emulates bf16 matrix products: on the 2-core AVX2 machine one 2048x2048 bf16 product took
    61 s against 0.2 s in float32, and a bf16-autocast autoencoder step 271 s against about 3 s on a CPU with it.
    """
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return None
    flags = set()
    for line in cpuinfo.splitlines():
        if line.startswith(("flags", "Features")):
            flags.update(line.split(":", 1)[-1].split())
    if not flags:
        return None
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def resolve_mixed_precision(requested: str, name: str, cuda: bool | None = None,
                            native_bf16: bool | None = None) -> str:
    """The precision a stage runs at: bf16 asked for on a CPU without native bf16 runs in float32 (with a warning)."""
    cuda = torch.cuda.is_available() if cuda is None else cuda
    if requested != "bf16" or cuda:
        return requested
    native = cpu_has_native_bf16() if native_bf16 is None else native_bf16
    if native is False:
        logger.warning("%s: bf16 was asked for, but this CPU has no native bf16 (no avx512_bf16 / amx_bf16), where "
                       "PyTorch emulates it about 100x slower than float32; training in float32 instead.", name)
        return "no"
    return requested


def batch_indices(n: int, batch_size: int, step: int, seed: int) -> np.ndarray:
    """The dataset indices of global step ``step``: epochs are seeded permutations, so any step is reproducible."""
    per_epoch = max(n // batch_size, 1)
    epoch, k = divmod(step, per_epoch)
    perm = np.random.default_rng([seed, epoch]).permutation(n)
    if n < batch_size:
        perm = np.resize(perm, batch_size)
    return perm[k * batch_size:(k + 1) * batch_size]


def stage_done(stage_dir: Path) -> bool:
    return (stage_dir / "DONE.json").is_file()


def _latest_checkpoint(ckpt_dir: Path) -> Path | None:
    done = sorted((p for p in ckpt_dir.glob("step-*") if (p / "STATE.json").is_file()),
                  key=lambda p: int(p.name.split("-")[1]))
    return done[-1] if done else None


def _plot_losses(csv_path: Path, png_path: Path, title: str) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return
    fig = Figure(figsize=(6, 3.2), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    steps = [int(r["step"]) for r in rows]
    for key in [k for k in rows[0] if k not in ("step", "lr", "seconds")]:
        values = [float(r[key]) if r.get(key) not in (None, "") else math.nan for r in rows]
        ax.plot(steps, values, label=key, linewidth=1)
    ax.set_xlabel("step")
    ax.set_yscale("log")
    ax.set_title(title)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(png_path)


def train_stage(
    spec: StageSpec,
    stage_dir: Path,
    module: torch.nn.Module,
    dataset_size: int,
    batch_fn: Callable[[np.ndarray, torch.Generator], dict[str, Any]],
    save_fn: Callable[[torch.nn.Module, Path], None],
    sample_fn: Callable[[torch.nn.Module, Path, int], None] | None = None,
    info: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train ``module`` (only its parameters with ``requires_grad``) for ``spec.steps`` optimizer steps.

    ``batch_fn(indices, generator)`` builds a batch (on CPU) from dataset indices; ``module(batch)``
    returns ``(loss, parts_dict)``. ``save_fn(module, final_dir)`` writes the trained components.
    Returns the summary written to ``DONE.json``.
    """
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from tqdm.auto import tqdm

    stage_dir.mkdir(parents=True, exist_ok=True)
    if stage_done(stage_dir):
        logger.info("%s: already done (%s), skipping", spec.name, stage_dir / "DONE.json")
        return json.loads((stage_dir / "DONE.json").read_text())
    spec.mixed_precision = resolve_mixed_precision(spec.mixed_precision, spec.name)
    accelerator = Accelerator(gradient_accumulation_steps=spec.grad_accum, mixed_precision=spec.mixed_precision)
    set_seed(spec.seed)
    params = [p for p in module.parameters() if p.requires_grad]
    if not params:
        raise ValueError(f"{spec.name}: nothing to train (every parameter is frozen)")
    optimizer = torch.optim.AdamW(params, lr=spec.lr, weight_decay=spec.weight_decay)
    warmup = max(spec.warmup_steps, 1)
    def lr_factor(s: int) -> float:  # linear warm-up, then cosine decay to 10 % of the peak
        return min(1.0, (s + 1) / warmup) * (0.1 + 0.45 * (1 + math.cos(math.pi * min(s / max(spec.steps, 1), 1.0))))

    lr_schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    module, optimizer, lr_schedule = accelerator.prepare(module, optimizer, lr_schedule)
    ckpt_dir = stage_dir / "checkpoints"
    metrics_path = stage_dir / "metrics.csv"
    start = 0
    latest = _latest_checkpoint(ckpt_dir)
    if latest is not None:
        accelerator.load_state(str(latest))
        start = json.loads((latest / "STATE.json").read_text())["step"]
        logger.info("%s: resumed from %s (step %d)", spec.name, latest.name, start)
    elif metrics_path.exists() and accelerator.is_main_process:
        metrics_path.unlink()
    n_proc, rank = accelerator.num_processes, accelerator.process_index
    wall_start = time.time()
    elapsed_before = 0.0
    if latest is not None:
        elapsed_before = json.loads((latest / "STATE.json").read_text()).get("seconds", 0.0)
    fields: list[str] | None = None
    tensorboard = _tensorboard(stage_dir / "tensorboard") if accelerator.is_main_process else None
    progress = tqdm(total=spec.steps, initial=start, desc=spec.name, disable=not accelerator.is_local_main_process,
                    dynamic_ncols=True)
    module.train()
    running: dict[str, float] = {}
    for step in range(start, spec.steps):
        for micro in range(spec.grad_accum):
            global_batch = batch_indices(dataset_size, spec.batch_size * n_proc, step * spec.grad_accum + micro, spec.seed)
            local = global_batch[rank::n_proc]
            generator = torch.Generator().manual_seed(spec.seed * 1_000_003 + (step * spec.grad_accum + micro) * 97 + rank)
            batch = batch_fn(local, generator)
            batch = {k: v.to(accelerator.device) if torch.is_tensor(v) else v for k, v in batch.items()}
            with accelerator.accumulate(module):
                with accelerator.autocast():
                    loss, parts = module(batch, generator=generator)
                accelerator.backward(loss)
                if accelerator.sync_gradients and spec.max_grad_norm:
                    accelerator.clip_grad_norm_(params, spec.max_grad_norm)
                optimizer.step()
                lr_schedule.step()
                optimizer.zero_grad()
            for key, value in {"loss": loss.item(), **parts}.items():
                running[key] = running.get(key, 0.0) + value / spec.grad_accum
        done = step + 1
        progress.update(1)
        progress.set_postfix(loss=f"{running.get('loss', 0.0) / max(1, (done - 1) % spec.log_every + 1):.4f}")
        if done % spec.log_every == 0 or done == spec.steps:
            count = (done - 1) % spec.log_every + 1
            row = {"step": done, "lr": lr_schedule.get_last_lr()[0],
                   "seconds": round(elapsed_before + time.time() - wall_start, 1),
                   **{k: round(v / count, 6) for k, v in running.items()}}
            running = {}
            if accelerator.is_main_process:
                new = not metrics_path.exists()
                fields = fields or list(row)
                with open(metrics_path, "a", newline="") as f:
                    writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
                    if new:
                        writer.writeheader()
                    writer.writerow(row)
                _plot_losses(metrics_path, stage_dir / "loss.png", spec.name)
                if tensorboard is not None:
                    for key, value in row.items():
                        if key != "step":
                            tensorboard.add_scalar(f"{spec.name}/{key}", value, done)
        if sample_fn is not None and spec.sample_every and done % spec.sample_every == 0 and accelerator.is_main_process:
            module.eval()
            with torch.no_grad():
                sample_fn(accelerator.unwrap_model(module), stage_dir / "samples", done)
            module.train()
        if done % spec.checkpoint_every == 0 or done == spec.steps:
            _checkpoint(accelerator, ckpt_dir, done, elapsed_before + time.time() - wall_start, spec.keep_checkpoints)
    progress.close()
    if tensorboard is not None:
        tensorboard.close()
    accelerator.wait_for_everyone()
    seconds = elapsed_before + time.time() - wall_start
    summary = {
        "stage": spec.name, "steps": spec.steps, "batch_size": spec.batch_size * n_proc * spec.grad_accum,
        "learning_rate": spec.lr, "weight_decay": spec.weight_decay, "seconds": round(seconds, 1),
        "processes": n_proc, "device": str(accelerator.device), "mixed_precision": spec.mixed_precision,
        "hardware": _hardware(accelerator), "dataset_size": dataset_size, **(info or {}),
    }
    if accelerator.is_main_process:
        module.eval()
        unwrapped = accelerator.unwrap_model(module)
        final = stage_dir / "final"
        if final.exists():
            shutil.rmtree(final)
        save_fn(unwrapped, final)
        summary.update(info or {})  # save_fn may add validation numbers to info
        if sample_fn is not None:
            with torch.no_grad():
                sample_fn(unwrapped, stage_dir / "samples", spec.steps)
        if metrics_path.exists():
            with open(metrics_path, newline="") as f:
                rows = list(csv.DictReader(f))
            summary["final_metrics"] = {k: float(v) for k, v in rows[-1].items() if k not in ("step",)} if rows else {}
        (stage_dir / "DONE.json").write_text(json.dumps(summary, indent=2))
    logger.info("%s: done in %.0f s", spec.name, seconds)
    return summary


def _tensorboard(log_dir: Path):
    """A TensorBoard writer when the tensorboard package is installed, else None (the CSV is always written)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(log_dir))


def _checkpoint(accelerator, ckpt_dir: Path, step: int, seconds: float, keep: int) -> None:
    path = ckpt_dir / f"step-{step}"
    accelerator.save_state(str(path))
    if accelerator.is_main_process:
        (path / "STATE.json").write_text(json.dumps({"step": step, "seconds": seconds}))
        old = sorted((p for p in ckpt_dir.glob("step-*")), key=lambda p: int(p.name.split("-")[1]))[:-keep]
        for p in old:
            shutil.rmtree(p, ignore_errors=True)


def _hardware(accelerator) -> str:
    if accelerator.device.type == "cuda":
        return f"{accelerator.num_processes} x {torch.cuda.get_device_name(accelerator.device)}"
    return f"{accelerator.num_processes} x CPU ({os.cpu_count()} cores, {platform.processor() or platform.machine()})"


@dataclass
class StageContext:
    """What every stage starts from: its arguments, configuration, run folder, spec and data."""

    args: argparse.Namespace
    config: dict[str, Any]
    root: Path
    stage: str
    spec: StageSpec
    data: Any


def prepare_stage(description: str, stage: str | Callable[[argparse.Namespace], str],
                  extra: Callable[[argparse.ArgumentParser], None] | None = None,
                  argv: Sequence[str] | None = None) -> StageContext:
    """Parse the stage's command line, load its configuration and data, and seed torch."""
    from training.data import TrainingData

    args = stage_args(description, extra, argv)
    config = load_config(args.config)
    root = run_dir(config, args.run_dir)
    name = stage(args) if callable(stage) else stage
    spec = StageSpec.from_config(name, config["stages"][name], args)
    torch.manual_seed(spec.seed)
    data = TrainingData(config, root, args.data_dir, args.limit)
    return StageContext(args, config, root, name, spec, data)


def load_done(stage_dir: Path, what: str) -> Path:
    """The ``final/`` folder of a finished stage, or a clear error naming the stage to run first."""
    if not stage_done(stage_dir):
        raise FileNotFoundError(f"{what} is not trained yet ({stage_dir} has no DONE.json): run that stage first "
                                "(python -m training.run_all runs every stage in order).")
    return stage_dir / "final"


def autoencoder_dir(root: Path) -> Path:
    """The run's X-ray autoencoder: the decoder-sharpened one (stage 2a', ``stage2_vae_decoder``) when that stage
    is finished, else stage 2a's. Both share the encoder and its latent space, so UNets trained on either fit."""
    sharpened = root / "stage2_vae_decoder"
    if stage_done(sharpened):
        return sharpened / "final"
    return load_done(root / "stage2_vae", "Stage 2a (X-ray autoencoder)")
