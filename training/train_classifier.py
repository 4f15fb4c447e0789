"""Train the findings classifier used when torchxrayvision's official weights are absent.

The model is torchxrayvision's own DenseNet-121 class (``weights=None``, one channel, xrv input scaling),
trained from scratch with a masked multi-label BCE (labels a source does not provide are masked, as
torchxrayvision does for multi-dataset training) on the labelled public data in ``../shared/data``:

* RSNA pneumonia: ``target`` -> Lung Opacity and Pneumonia;
* NIH ChestX-ray14 (64 px): Atelectasis, Cardiomegaly, Consolidation, Edema, Effusion (Pleural Effusion),
  Pneumonia, Pneumothorax, Mass or Nodule -> Lung Lesion;
* COVID-19 image collection (frontal views): the pneumonias (COVID-19, SARS, bacterial, ...) -> Pneumonia,
  "No Finding" -> no pneumonia.

Validation is a patient-disjoint held-out split (per source). At the end it measures per-label AUROC,
chooses operating thresholds on the validation split (Youden's J by default), and writes the folder read by
`codixr.findings.XRVClassifier.from_pretrained`: ``model.safetensors``, ``config.json`` and a model card
``README.md``. Checkpoints (for ``--resume``) live in ``<out>/checkpoint`` and are removed when training ends.

    python -m training.train_classifier --data ../shared/data --out assets/classifier --epochs 5
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import logging
import math
import os
import platform
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm.auto import tqdm

from codixr.errors import CoDiXRError
from codixr.findings.classifier import XRVClassifier, build_densenet, center_crop_resize, import_xrv, pathology_name, xrv_scale
from codixr.findings.result import TRAINED_SOURCE
from codixr.modality import PATHOLOGIES

logger = logging.getLogger(__name__)

# Outputs of the trained model, torchxrayvision names, in the order of the paper's Table I.
TARGETS: tuple[str, ...] = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Lung Lesion",
                            "Lung Opacity", "Effusion", "Pneumonia", "Pneumothorax")
NIH_TO_TARGET = {"Atelectasis": "Atelectasis", "Cardiomegaly": "Cardiomegaly", "Consolidation": "Consolidation",
                 "Edema": "Edema", "Effusion": "Effusion", "Pneumonia": "Pneumonia", "Pneumothorax": "Pneumothorax",
                 "Mass": "Lung Lesion", "Nodule": "Lung Lesion"}
# COVID-collection `finding` terms that are pneumonias (viral, bacterial, fungal, lipoid).
COVID_PNEUMONIAS = {"covid-19", "sars", "mers", "pneumocystis", "pneumonia", "streptococcus", "klebsiella",
                    "legionella", "varicella", "bacterial", "viral", "fungal", "lipoid", "influenza", "h1n1",
                    "chlamydophila", "mycoplasma", "e.coli", "aspergillosis", "nocardia", "herpes"}
SOURCES = {  # folder -> (display name, licence note for the card)
    "rsna-pneumonia": ("RSNA Pneumonia Detection Challenge", "RSNA challenge terms: research, non-commercial; cite RSNA/NIH"),
    "nih-cxr14-64px": ("NIH ChestX-ray14 (64x64 subset)", "public; cite Wang et al. 2017"),
    "covid-cxr": ("COVID-19 image data collection (frontal)", "mixed per image: CC BY, CC BY-SA, CC BY-NC-SA, Apache-2.0, unspecified"),
}
NAN = float("nan")


class TrainingDataError(CoDiXRError):
    """The training data folder does not hold any of the expected labelled sources."""


@dataclass(frozen=True)
class Record:
    """One labelled training image: where it is, whose it is, and one label per TARGETS (NaN = not labelled)."""

    path: Path
    source: str
    patient: str
    labels: tuple[float, ...]


def _labels(**given: float) -> tuple[float, ...]:
    return tuple(given.get(t, NAN) for t in TARGETS)


def load_records(data_dir: str | os.PathLike) -> list[Record]:
    """The labelled records of the three public sources under `data_dir` (sources that are absent are skipped).

    Reads each source's ``metadata.csv``; this is the one place to switch to a shared dataset reader.
    """
    root = Path(data_dir)
    records: list[Record] = []

    def rows(folder: str):
        path = root / folder / "metadata.csv"
        if not path.is_file():
            logger.warning("No %s in %s: skipping %s", path.name, path.parent, folder)
            return []
        with open(path, newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f))

    for row in rows("rsna-pneumonia"):
        y = float(row["target"])
        records.append(Record(root / "rsna-pneumonia" / row["image"], "rsna-pneumonia", row["patientId"],
                              _labels(**{"Lung Opacity": y, "Pneumonia": y})))
    for row in rows("nih-cxr14-64px"):
        found = {NIH_TO_TARGET[f] for f in row["finding_labels"].split("|") if f in NIH_TO_TARGET}
        given = {t: float(t in found) for t in set(NIH_TO_TARGET.values())}
        records.append(Record(root / "nih-cxr14-64px" / row["image"], "nih-cxr14-64px", row["patient_id"],
                              _labels(**given)))
    for row in rows("covid-cxr"):
        if row["view"] != "frontal":
            continue
        terms = {t.strip().lower() for t in row["finding"].split(",")}
        y = 1.0 if terms & COVID_PNEUMONIAS else 0.0 if terms == {"no finding"} else NAN
        if not math.isnan(y):
            records.append(Record(root / "covid-cxr" / row["image"], "covid-cxr", row["patientid"],
                                  _labels(Pneumonia=y)))
    if not records:
        raise TrainingDataError(f"No labelled images found under {root}: expected {', '.join(SOURCES)} "
                                "folders with a metadata.csv (see ../shared/data/README.md).")
    return records


def patient_split(records: Sequence[Record], val_fraction: float, seed: int, tries: int = 500) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, val): within each source, a seeded `val_fraction` of the *patients* go to validation.

    Patients cluster labels (the NIH subset has a few patients with many images), so among `tries` seeded
    patient permutations it keeps the one whose validation share of images and of each label's positives is
    closest to `val_fraction`.
    """
    rng = np.random.default_rng(seed)
    labels = np.nan_to_num(np.array([r.labels for r in records], dtype=np.float64))
    val_patients: set[tuple[str, str]] = set()
    for source in sorted({r.source for r in records}):
        patients = sorted({r.patient for r in records if r.source == source})
        n_val = int(round(val_fraction * len(patients))) if len(patients) > 1 else 0
        index = {p: i for i, p in enumerate(patients)}
        # per patient: number of images, then positives per target
        counts = np.zeros((len(patients), 1 + len(TARGETS)))
        for r, y in zip(records, labels):
            if r.source == source:
                counts[index[r.patient]] += np.concatenate([[1.0], y])
        totals = counts.sum(0)
        best, best_cost = None, np.inf
        for _ in range(tries if n_val else 1):
            chosen = rng.permutation(len(patients))[:n_val]
            share = counts[chosen].sum(0)[totals > 0] / totals[totals > 0]
            cost = float(((share - val_fraction) ** 2).sum())
            if cost < best_cost:
                best, best_cost = chosen, cost
        val_patients |= {(source, patients[i]) for i in best}
    is_val = np.array([(r.source, r.patient) in val_patients for r in records])
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)


def decode_images(records: Sequence[Record], size: int, cache_dir: str | os.PathLike | None = None) -> np.ndarray:
    """All images as the classifier sees them, uint8 (N, size, size).

    Each image is read with `codixr.io.read_xray` (the paper's preprocessing: [0, 1], zero-padded to a centred
    square, 256 px, as the model's own inputs and outputs are), then centre-cropped and resized to `size` as
    `codixr.findings.classifier.to_xrv_input` does at inference. Decoded once; with `cache_dir`, kept as an
    .npy there (keyed by the file list and size) for later runs.
    """
    from codixr.io import read_xray

    key = hashlib.sha1(("\n".join(str(r.path) for r in records) + f"\n{size}").encode()).hexdigest()[:16]
    cache = Path(cache_dir) / f"images-{size}-{key}.npy" if cache_dir else None
    if cache is not None and cache.is_file():
        logger.info("Using decoded images from %s", cache)
        return np.load(cache)
    out = np.empty((len(records), size, size), dtype=np.uint8)
    for i, r in enumerate(tqdm(records, desc="decode", leave=False)):
        x = center_crop_resize(read_xray(r.path, size=max(256, size)).image, size)[0, 0].clamp(0, 1)
        out[i] = (x * 255).round().to(torch.uint8).numpy()
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.save(cache, out)
    return out


class ArrayDataset(Dataset):
    """uint8 images (N, S, S) and float labels (N, T) with NaN for labels a source does not give."""

    def __init__(self, images: np.ndarray, labels: np.ndarray) -> None:
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.from_numpy(self.images[i])[None], torch.from_numpy(self.labels[i])


class EpochShuffle(Sampler[int]):
    """A seeded permutation per epoch, so a resumed run sees the same batches as an uninterrupted one."""

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        return iter(torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed + self.epoch)).tolist())


def random_affine(x: torch.Tensor, generator: torch.Generator, degrees: float = 10.0, translate: float = 0.06,
                  scale: tuple[float, float] = (0.92, 1.08)) -> torch.Tensor:
    """Per-image random rotation/translation/scale of a [0, 1] batch (N, 1, S, S), black outside the image."""
    n = x.shape[0]
    u = torch.rand(n, 4, generator=generator)
    angle = (2 * u[:, 0] - 1) * math.radians(degrees)
    s = scale[0] + (scale[1] - scale[0]) * u[:, 1]
    tx, ty = (2 * u[:, 2] - 1) * 2 * translate, (2 * u[:, 3] - 1) * 2 * translate  # grid units span 2
    cos, sin = torch.cos(angle) / s, torch.sin(angle) / s
    theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1).to(x)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def masked_bce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Sum over targets of the mean BCE over the images that have that label (NaN labels are masked)."""
    mask = ~torch.isnan(labels)
    per = F.binary_cross_entropy_with_logits(logits, torch.nan_to_num(labels), reduction="none") * mask
    count = mask.sum(0)
    return (per.sum(0)[count > 0] / count[count > 0]).sum()


def choose_threshold(y: np.ndarray, p: np.ndarray, method: str) -> float:
    """Operating threshold on probabilities: Youden's J (max TPR - FPR) or max F1."""
    from sklearn.metrics import precision_recall_curve, roc_curve

    if method == "youden":
        fpr, tpr, thr = roc_curve(y, p)
        t = float(thr[int(np.argmax(tpr - fpr))])
    else:
        precision, recall, thr = precision_recall_curve(y, p)
        f1 = 2 * precision[:-1] * recall[:-1] / np.maximum(precision[:-1] + recall[:-1], 1e-12)
        t = float(thr[int(np.argmax(f1))])
    return min(max(t, 1e-6), 1 - 1e-6) if math.isfinite(t) else 1 - 1e-6


def validation_metrics(probs: np.ndarray, labels: np.ndarray, sources: Sequence[str], method: str,
                       min_positives: int) -> dict[str, dict]:
    """Per target: AUROC, positives/negatives, threshold and whether it is assessed (enough of both classes)."""
    from sklearn.metrics import roc_auc_score

    sources = np.asarray(sources)
    out: dict[str, dict] = {}
    for j, target in enumerate(TARGETS):
        seen = ~np.isnan(labels[:, j])
        y, p = labels[seen, j], probs[seen, j]
        n_pos, n_neg = int(y.sum()), int((1 - y).sum())
        both = n_pos > 0 and n_neg > 0
        m: dict = {"name": pathology_name(target), "n_pos": n_pos, "n_neg": n_neg,
                   "auroc": float(roc_auc_score(y, p)) if both else None, "by_source": {}}
        for src in sorted(set(sources[seen])):
            ys, ps = y[sources[seen] == src], p[sources[seen] == src]
            if 0 < ys.sum() < len(ys):
                m["by_source"][src] = {"auroc": float(roc_auc_score(ys, ps)), "n_pos": int(ys.sum()),
                                       "n_neg": int(len(ys) - ys.sum())}
        m["assessed"] = both and min(n_pos, n_neg) >= min_positives
        m["threshold"] = choose_threshold(y, p, method) if m["assessed"] else None
        m["threshold_method"] = method if m["assessed"] else None
        if not m["assessed"]:
            m["reason"] = (f"too few validation cases ({n_pos} positive, {n_neg} negative; "
                           f"need {min_positives} of each)")
        out[target] = m
    return out


@torch.no_grad()
def predict(model: torch.nn.Module, loader: DataLoader, accelerator) -> tuple[np.ndarray, np.ndarray]:
    """Sigmoid probabilities and labels over a loader (no augmentation)."""
    model.eval()
    probs, labels = [], []
    for x, y in loader:
        p = torch.sigmoid(model(xrv_scale(x.float() / 255)).float())
        p, y = accelerator.gather_for_metrics((p, y))
        probs.append(p.cpu().numpy())
        labels.append(y.cpu().numpy())
    return np.concatenate(probs), np.concatenate(labels)


def machine_description() -> str:
    desc = f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPU cores"
    return desc + (f", {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    default_data = Path(__file__).resolve().parents[2] / "shared" / "data"
    p = argparse.ArgumentParser(prog="python -m training.train_classifier", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=default_data, help="folder holding rsna-pneumonia/, nih-cxr14-64px/, covid-cxr/")
    p.add_argument("--out", type=Path, required=True, help="output folder (meant to be assets/classifier)")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many optimiser steps in total")
    p.add_argument("--max-images", type=int, default=None, help="train on a random subset of this many images (smoke runs)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=1e-5)
    p.add_argument("--val-fraction", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threshold-method", choices=("youden", "f1"), default="youden")
    p.add_argument("--min-val-positives", type=int, default=5,
                   help="labels with fewer validation positives (or negatives) are shipped as 'not assessed'")
    p.add_argument("--no-augment", action="store_true")
    p.add_argument("--mixed-precision", choices=("no", "fp16", "bf16"), default="no")
    p.add_argument("--cpu", action="store_true", help="train on the CPU even when a GPU is present")
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for torch (default: torch's choice; 1 is faster on a CPU shared with other jobs)")
    p.add_argument("--checkpoint-every", type=int, default=100)
    p.add_argument("--no-resume", action="store_true", help="ignore an existing <out>/checkpoint")
    p.add_argument("--keep-checkpoint", action="store_true", help="keep <out>/checkpoint after training")
    p.add_argument("--cache-dir", type=Path, default=None, help="keep decoded images as .npy here")
    p.add_argument("--save-dtype", choices=("float16", "float32"), default="float16")
    p.add_argument("--log-every", type=int, default=10)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict:
    """Train, validate and save the classifier; returns the summary written to config.json."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    accelerator = Accelerator(mixed_precision=args.mixed_precision, cpu=args.cpu)
    set_seed(args.seed)
    import_xrv()

    # 1. Data: records, patient-disjoint split, decoded images.
    records = load_records(args.data)
    if args.max_images and args.max_images < len(records):
        keep = np.sort(np.random.default_rng(args.seed).permutation(len(records))[: args.max_images])
        records = [records[i] for i in keep]
    train_idx, val_idx = patient_split(records, args.val_fraction, args.seed)
    if len(train_idx) == 0 or len(val_idx) == 0:
        raise TrainingDataError(f"Need images for both training and validation; got {len(train_idx)} and {len(val_idx)}.")
    t0 = time.perf_counter()
    images = decode_images(records, args.image_size, args.cache_dir)
    logger.info("Decoded %d images at %d px in %.1f s", len(records), args.image_size, time.perf_counter() - t0)
    labels = np.array([r.labels for r in records], dtype=np.float32)
    sources = [r.source for r in records]

    # 2. Model, optimiser, loaders.
    model = build_densenet(list(TARGETS))
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr, weight_decay=args.weight_decay, amsgrad=True)
    train_dl = DataLoader(ArrayDataset(images[train_idx], labels[train_idx]), batch_size=args.batch_size,
                          sampler=EpochShuffle(len(train_idx), args.seed), num_workers=args.workers,
                          drop_last=len(train_idx) >= args.batch_size)
    val_dl = DataLoader(ArrayDataset(images[val_idx], labels[val_idx]), batch_size=args.batch_size * 2,
                        num_workers=args.workers)
    model, optimizer, train_dl, val_dl = accelerator.prepare(model, optimizer, train_dl, val_dl)
    steps_per_epoch = len(train_dl)
    total = args.epochs * steps_per_epoch if args.max_steps is None else min(args.max_steps, args.epochs * steps_per_epoch)

    # 3. Resume.
    ckpt = args.out / "checkpoint"
    progress = {"step": 0, "wall_time_s": 0.0, "train_seconds": 0.0, "timed_steps": 0}
    if not args.no_resume and (ckpt / "progress.json").is_file():
        accelerator.load_state(str(ckpt))
        progress = json.loads((ckpt / "progress.json").read_text())
        logger.info("Resumed from %s at step %d", ckpt, progress["step"])
    step, base_wall, started = progress["step"], progress["wall_time_s"], time.perf_counter()

    def save_checkpoint() -> None:
        accelerator.save_state(str(ckpt))
        progress.update(step=step, wall_time_s=base_wall + time.perf_counter() - started)
        if accelerator.is_main_process:
            (ckpt / "progress.json").write_text(json.dumps(progress))

    # 4. Training loop.
    bar = tqdm(total=total, initial=step, desc="train", disable=not accelerator.is_local_main_process)
    running = None
    while step < total:
        epoch, skip = divmod(step, steps_per_epoch)
        train_dl.set_epoch(epoch)
        model.train()
        for x, y in accelerator.skip_first_batches(train_dl, skip) if skip else train_dl:
            t_step = time.perf_counter()
            x = x.float() / 255
            if not args.no_augment:
                x = random_affine(x, torch.Generator().manual_seed(args.seed * 1_000_003 + step))
            with accelerator.autocast():
                logits = model(xrv_scale(x))
            loss = masked_bce(logits.float(), y)
            accelerator.backward(loss)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            if step > 1:  # the first step includes one-off warm-up costs
                progress["train_seconds"] += time.perf_counter() - t_step
                progress["timed_steps"] += 1
            running = loss.item() if running is None else 0.95 * running + 0.05 * loss.item()
            bar.update(1)
            bar.set_postfix(loss=f"{running:.4f}", epoch=epoch)
            if step % args.log_every == 0:
                logger.info("step %d/%d epoch %d loss %.4f", step, total, epoch, running)
            if step % args.checkpoint_every == 0 or step == total:
                save_checkpoint()
            if step >= total:
                break
    bar.close()
    wall = base_wall + time.perf_counter() - started

    # 5. Validation: AUROC per label and operating thresholds.
    probs, val_labels = predict(model, val_dl, accelerator)
    metrics = validation_metrics(probs, val_labels, [sources[i] for i in val_idx], args.threshold_method,
                                 args.min_val_positives)
    for m in metrics.values():
        logger.info("%-26s AUROC %s (val %d+/%d-)%s", m["name"], "n/a" if m["auroc"] is None else f"{m['auroc']:.3f}",
                    m["n_pos"], m["n_neg"], "" if m["assessed"] else " -> not assessed")

    # 6. Save: targets not assessed become "" (torchxrayvision's convention), thresholds go into the model.
    net = accelerator.unwrap_model(model).float().cpu()
    net.targets = [t if metrics[t]["assessed"] else "" for t in TARGETS]
    net.pathologies = net.targets
    net.op_threshs = torch.tensor([metrics[t]["threshold"] if metrics[t]["assessed"] else NAN for t in TARGETS])
    summary = training_summary(args, records, train_idx, val_idx, metrics, step, wall, progress)
    if accelerator.is_main_process:
        XRVClassifier(net, summary["source"], args.image_size).save_pretrained(
            args.out, dtype=getattr(torch, args.save_dtype), **summary)
        (args.out / "README.md").write_text(model_card(summary))
        if not args.keep_checkpoint:
            shutil.rmtree(ckpt, ignore_errors=True)
        logger.info("Saved the classifier to %s", args.out)
    return summary


def training_summary(args: argparse.Namespace, records: Sequence[Record], train_idx: np.ndarray, val_idx: np.ndarray,
                     metrics: dict[str, dict], steps: int, wall: float, progress: dict) -> dict:
    """What config.json records about the training run."""
    data = {}
    for folder, (name, licence) in SOURCES.items():
        tr = [records[i] for i in train_idx if records[i].source == folder]
        va = [records[i] for i in val_idx if records[i].source == folder]
        if tr or va:
            data[folder] = {"name": name, "licence": licence, "train_images": len(tr), "val_images": len(va),
                            "train_patients": len({r.patient for r in tr}), "val_patients": len({r.patient for r in va})}
    assessed = [m["name"] for m in metrics.values() if m["assessed"]]
    aurocs = [m["auroc"] for m in metrics.values() if m["assessed"]]
    return {
        "source": f"{TRAINED_SOURCE} (torchxrayvision DenseNet-121 trained here on RSNA, NIH-64px, COVID collection)",
        "assessed": assessed,
        "not_assessed": [p for p in PATHOLOGIES if p not in assessed],
        "mean_val_auroc": float(np.mean(aurocs)) if aurocs else None,
        "validation": metrics,
        "training_data": data,
        "training": {"steps": steps, "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr,
                     "weight_decay": args.weight_decay, "image_size": args.image_size, "seed": args.seed,
                     "augment": not args.no_augment, "mixed_precision": args.mixed_precision,
                     "val_fraction": args.val_fraction, "max_images": args.max_images,
                     "loss": "masked BCE (sum over labels of the mean over labelled images)",
                     "optimizer": "Adam (amsgrad)", "threshold_method": args.threshold_method},
        "wall_time_s": round(wall, 1),
        "seconds_per_step": round(progress["train_seconds"] / progress["timed_steps"], 3) if progress["timed_steps"] else None,
        "machine": machine_description(),
        "torch_version": torch.__version__,
        "torchxrayvision_version": import_xrv().__version__,
    }


def model_card(s: dict) -> str:
    """The README.md of the output folder."""
    fmt = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
    lines = [
        "# CoDiXR findings classifier (trained here)", "",
        "torchxrayvision's DenseNet-121 (`xrv.models.DenseNet`, `weights=None`, 1 channel), trained from scratch "
        "because the official `densenet121-res224-all` weights cannot be downloaded on the machines where CoDiXR is "
        "built. **It is not the classifier the CoDi-XR paper evaluates with** and not a validated diagnostic device: "
        "the findings it gives are an aid to read the model's inputs and outputs. When the official weights are "
        "installed, `codixr.findings.classify` uses them instead.", "",
        f"Input: a grey image in [0, 1], scaled to [-1024, 1024], centre-cropped and resized to "
        f"{s['training']['image_size']} px (torchxrayvision's convention). Load with "
        "`codixr.findings.XRVClassifier.from_pretrained(folder)`.", "",
        "## Validation (patient-disjoint held-out split)", "",
        "Thresholds are chosen on the same validation split (" + s["training"]["threshold_method"] + "); AUROC "
        "does not depend on them. The calibrated score maps the threshold to 0.5.", "",
        "| Label | AUROC | val positives | val negatives | threshold (probability) | AUROC per source |",
        "|---|---|---|---|---|---|",
    ]
    for m in s["validation"].values():
        per = ", ".join(f"{k} {v['auroc']:.3f} ({v['n_pos']}+/{v['n_neg']}-)" for k, v in m["by_source"].items())
        lines.append(f"| {m['name']}{'' if m['assessed'] else ' (not assessed)'} | {fmt(m['auroc'])} | {m['n_pos']} "
                     f"| {m['n_neg']} | {fmt(m['threshold'])} | {per or '-'} |")
    lines += ["", f"Mean AUROC over assessed labels: {fmt(s['mean_val_auroc'])}.", "",
              "## Not assessed", "",
              "Reported as `None` (\"not assessed\"), never as 0 or 0.5:", ""]
    reasons = {m["name"]: m.get("reason", "") for m in s["validation"].values()}
    for p in s["not_assessed"]:
        lines.append(f"- {p}: {reasons.get(p) or 'no labelled data for it here'}")
    lines += ["", "## Training data", "", "| Source | train images (patients) | val images (patients) | licence |",
              "|---|---|---|---|"]
    for d in s["training_data"].values():
        lines.append(f"| {d['name']} | {d['train_images']} ({d['train_patients']}) | {d['val_images']} "
                     f"({d['val_patients']}) | {d['licence']} |")
    t = s["training"]
    lines += ["", "Label mapping: RSNA `target` -> Lung Opacity and Pneumonia; NIH labels -> Atelectasis, Cardiomegaly, "
              "Consolidation, Edema, Pleural Effusion, Pneumonia, Pneumothorax, Mass/Nodule -> Lung Lesion; COVID "
              "collection pneumonias (COVID-19, SARS, bacterial, ...) -> Pneumonia, 'No Finding' -> no pneumonia. "
              "Labels a source does not give are masked in the loss.", "",
              "Parts of this data are licensed for non-commercial use only (RSNA terms, CC BY-NC-SA images of the "
              "COVID collection); the weights inherit those terms.", "",
              "## Training", "",
              f"{t['steps']} steps ({t['epochs']} epochs planned), batch {t['batch_size']}, Adam lr {t['lr']}, "
              f"weight decay {t['weight_decay']}, {'random affine augmentation' if t['augment'] else 'no augmentation'}, "
              f"seed {t['seed']}, mixed precision {t['mixed_precision']}. Wall time {s['wall_time_s']} s "
              f"({s['seconds_per_step']} s/step) on {s['machine']}; torch {s['torch_version']}, torchxrayvision "
              f"{s['torchxrayvision_version']}.", "",
              "## Limitations", "",
              "- The NIH images are 64x64 upsampled to the model's size: labels only NIH gives (atelectasis, "
              "cardiomegaly, consolidation, edema, effusion, lesion, pneumothorax) are learned on blurred images.",
              "- RSNA images come from NIH ChestX-ray14; the same patient may appear in both sources (the RSNA ids are "
              "anonymised), so the patient-disjoint split holds within each source only.",
              "- The COVID collection is almost all pneumonia and partly figure crops: its pneumonia signal can be a "
              "source shortcut. See the per-source AUROC above.",
              "- The validation sets are small; AUROCs have wide confidence intervals.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    main()
