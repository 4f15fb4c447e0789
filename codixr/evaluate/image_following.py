"""Does the generated X-ray follow its input? The image side of :mod:`codixr.evaluate.following` (issue 13).

An image model can reach a fair FID while drawing the same blurred chest whatever it is asked for. These
tables ask whether the images are sharp enough to carry a finding, and whether a finding asked for is one an
independent reader (the findings classifier, :mod:`codixr.findings`) can see:

* ``autoencoder_table``: PSNR of the VAE's reconstructions (posterior mean) of real validation frontals and
  their high-frequency energy (variance of the Laplacian) relative to the real images, beside the same two
  numbers for a σ = 3 px Gaussian blur of the real images;
* ``separation_table`` (labels→F, T→F): images generated from a finding and from its absence, scored by the
  classifier; the AUROC with which the scores tell the two sets apart, beside the classifier's own
  validation AUROC on real images (how well it can read that finding at all);
* ``feature_fid_table``: Fréchet distance in the classifier's penultimate features, generated vs real
  validation frontals, beside real vs real (two disjoint sets of the same n) and a σ = 3 px blur of real;
* ``view_table``: a logistic-regression view reader on the same features, fit on real training frontals vs
  laterals: the share of generated frontals read frontal and of generated laterals read lateral;
* ``following_grids``: real validation frontals beside generated ones, and samples per label set.

``image_following_tables`` runs them all on an evaluation split with the pipeline's defaults (steps, guidance,
sampler); every table states its n and seeds, and says "n/a" with the reason where it cannot be computed.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from codixr.modality import NO_FINDING, Modality

logger = logging.getLogger(__name__)

BLUR_SIGMA = 3.0  # px at the model's resolution: the reference blur of issue 13
BATCH = 8  # images per pipeline / VAE / classifier call
GRID_TILE = 128  # px per tile in the card grids (real and generated at the same size; keeps the PNGs small)
GRID_COLUMNS = 6

# Issue 13's targets, shown beside the numbers.
TARGETS = {"psnr_db": 32.0, "hf_ratio": 0.5, "labels_opacity_auroc": 0.8, "text_opacity_auroc": 0.75,
           "view_share": 0.95}

OPACITY_OUTPUTS = ("Lung Opacity", "Pneumonia")  # classifier outputs averaged into the opacity score


@dataclass(frozen=True)
class Separation:
    """A finding asked for (``labels``) vs No Finding, scored by the mean of the classifier ``outputs``."""

    name: str
    labels: tuple[str, ...]
    outputs: tuple[str, ...]
    target: float | None = None


LABEL_SEPARATIONS: tuple[Separation, ...] = (
    Separation("Lung Opacity + Pneumonia", ("Lung Opacity", "Pneumonia"), OPACITY_OUTPUTS,
               TARGETS["labels_opacity_auroc"]),
    Separation("Cardiomegaly", ("Cardiomegaly",), ("Cardiomegaly",)),
    Separation("Pleural Effusion", ("Pleural Effusion",), ("Pleural Effusion",)),
)


def na(reason: str) -> dict[str, Any]:
    """A table (or row) that cannot be computed, with the reason."""
    return {"na": reason}


# ---------------------------------------------------------------------------------------------- pixels
def psnr(real: np.ndarray, other: np.ndarray) -> np.ndarray:
    """Per-image PSNR in dB of ``other`` against ``real``, both (N, H, W) in [0, 1] (inf where identical)."""
    mse = ((np.asarray(real, np.float64) - np.asarray(other, np.float64)) ** 2).reshape(len(real), -1).mean(axis=1)
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(1.0 / mse)


def laplacian_energy(images: np.ndarray) -> np.ndarray:
    """Per-image variance of the Laplacian (3x3, interior pixels only) of (N, H, W) images: high-frequency energy."""
    x = np.asarray(images, np.float64)
    lap = (x[:, :-2, 1:-1] + x[:, 2:, 1:-1] + x[:, 1:-1, :-2] + x[:, 1:-1, 2:] - 4 * x[:, 1:-1, 1:-1])
    return lap.reshape(len(x), -1).var(axis=1)


def hf_ratio(real: np.ndarray, other: np.ndarray) -> float:
    """Mean Laplacian variance of ``other`` over that of ``real`` (1 = as sharp as the real images)."""
    return float(laplacian_energy(other).mean() / max(laplacian_energy(real).mean(), 1e-12))


def gaussian_blur(images: np.ndarray, sigma: float = BLUR_SIGMA) -> np.ndarray:
    """Each (H, W) image of (N, H, W) blurred with a Gaussian of ``sigma`` px (reflected borders)."""
    from scipy.ndimage import gaussian_filter

    return np.stack([gaussian_filter(np.asarray(im, np.float64), sigma, mode="reflect") for im in images])


def pixel_row(real: np.ndarray, other: np.ndarray) -> dict[str, float]:
    values = psnr(real, other)
    finite = values[np.isfinite(values)]
    return {"psnr_db": float(values.mean()) if len(finite) == len(values) else float("inf"),
            "psnr_db_min": float(values.min()), "hf_ratio": hf_ratio(real, other)}


@torch.no_grad()
def reconstruct(vae, images: np.ndarray, batch: int = BATCH) -> np.ndarray:
    """VAE reconstructions (posterior mean, no sampling) of (N, H, W) images in [0, 1], clipped to [0, 1]."""
    out = []
    for i in range(0, len(images), batch):
        x = torch.from_numpy(np.asarray(images[i:i + batch], np.float32))[:, None].to(vae.device, vae.dtype)
        z = vae.encode(x * 2 - 1).latent_dist.mean
        out.append(((vae.decode(z).sample.float().clamp(-1, 1) + 1) / 2)[:, 0].cpu().numpy())
    return np.concatenate(out)


def autoencoder_table(vae, images: np.ndarray, sigma: float = BLUR_SIGMA) -> dict[str, Any]:
    """PSNR and high-frequency energy ratio of VAE reconstructions of real images, and of a blur of them."""
    if len(images) == 0:
        return na("no real validation frontals")
    images = np.asarray(images, np.float64)
    recon = reconstruct(vae, images)
    return {"n": len(images), "size": int(images.shape[-1]), "sigma": sigma,
            "vae": pixel_row(images, recon), "blur": pixel_row(images, gaussian_blur(images, sigma)),
            "targets": {"psnr_db": TARGETS["psnr_db"], "hf_ratio": TARGETS["hf_ratio"]}}


# ---------------------------------------------------------------------------------------------- reader
class ClassifierReader:
    """The findings classifier as a reader of images: penultimate features and calibrated scores in one pass."""

    def __init__(self, classifier, batch: int = 16):
        from codixr.findings.classifier import pathology_name

        self.clf = classifier
        self.batch = batch
        self.names = [pathology_name(t) if t else "" for t in classifier.targets]
        self.source = classifier.source
        self.validation_auroc = classifier.validation_auroc
        validation = classifier.card.get("validation") or {}
        self.validation_sources = {pathology_name(str(e.get("name") or k)): sorted(e.get("by_source") or {})
                                   for k, e in validation.items() if isinstance(e, dict)}

    @torch.no_grad()
    def read(self, images: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """(features (N, D), output name -> calibrated score (N,)) for (N, H, W) images in [0, 1]."""
        from codixr.findings.classifier import import_xrv, to_xrv_input

        xrv = import_xrv()
        model = self.clf.model
        device = next(model.parameters()).device
        thr = self.clf.op_threshs.to(device)
        feats, scores = [], []
        for i in range(0, len(images), self.batch):
            x = to_xrv_input(torch.from_numpy(np.asarray(images[i:i + self.batch], np.float32))[:, None],
                             self.clf.image_size).to(device)
            f = model.features2(x)
            prob = torch.sigmoid(model.classifier(f))
            feats.append(f.float().cpu().numpy())
            scores.append(torch.where(torch.isnan(thr), prob, xrv.models.op_norm(prob, thr)).float().cpu().numpy())
        s = np.concatenate(scores)
        return np.concatenate(feats).astype(np.float64), {n: s[:, j] for j, n in enumerate(self.names) if n}

    def score(self, images: np.ndarray, outputs: Sequence[str]) -> np.ndarray | None:
        """Mean calibrated score of ``outputs`` (those the classifier has); None when it has none of them."""
        have = [o for o in outputs if o in self.names]
        if not have:
            return None
        _, scores = self.read(images)
        return np.mean([scores[o] for o in have], axis=0)


def load_reader(device: str | None = None) -> ClassifierReader | str:
    """The findings classifier as a reader, or the reason (str) it is not available."""
    from codixr.findings import ClassifierUnavailable, load_classifier

    try:
        return ClassifierReader(load_classifier("auto", device))
    except ClassifierUnavailable as exc:
        logger.warning("findings classifier not available: %s", exc)
        return f"the findings classifier is not available: {exc}"


# ---------------------------------------------------------------------------------------------- separation
def separation_auroc(positive: Sequence[float], negative: Sequence[float]) -> float:
    """AUROC of scores telling ``positive`` from ``negative`` (NaN when a group is empty)."""
    from sklearn.metrics import roc_auc_score

    positive, negative = np.asarray(positive, np.float64), np.asarray(negative, np.float64)
    if len(positive) == 0 or len(negative) == 0:
        return float("nan")
    return float(roc_auc_score(np.r_[np.ones(len(positive)), np.zeros(len(negative))], np.r_[positive, negative]))


def auroc_standard_error(auroc: float, n_positive: int, n_negative: int) -> float:
    """Hanley & McNeil (1982) standard error of an AUROC from ``n_positive`` and ``n_negative`` cases."""
    if not (n_positive and n_negative) or not np.isfinite(auroc):
        return float("nan")
    q1, q2 = auroc / (2 - auroc), 2 * auroc ** 2 / (1 + auroc)
    var = (auroc * (1 - auroc) + (n_positive - 1) * (q1 - auroc ** 2) + (n_negative - 1) * (q2 - auroc ** 2))
    return float(np.sqrt(max(var, 0.0) / (n_positive * n_negative)))


def separation_row(reader: ClassifierReader, positive: np.ndarray, negative: np.ndarray,
                   outputs: Sequence[str], target: float | None = None) -> dict[str, Any]:
    """One separation: AUROC of the classifier's score between images of a finding and of its absence."""
    have = [o for o in outputs if o in reader.names]
    if not have:
        return na(f"the classifier has no {' / '.join(outputs)} output")
    pos, neg = reader.score(positive, have), reader.score(negative, have)
    real = {o: reader.validation_auroc.get(o) for o in have}
    auroc = separation_auroc(pos, neg)
    return {"n_positive": len(positive), "n_negative": len(negative), "outputs": have,
            "auroc": auroc, "auroc_se": auroc_standard_error(auroc, len(positive), len(negative)), "mean_score_positive": float(pos.mean()),
            "mean_score_negative": float(neg.mean()), "real_validation_auroc": real,
            "real_validation_sources": {o: reader.validation_sources.get(o, []) for o in have}, "target": target}


# ---------------------------------------------------------------------------------------------- Fréchet
def feature_fid_table(reader: ClassifierReader, real_reference: np.ndarray, real_other: np.ndarray,
                      generated: np.ndarray, sigma: float = BLUR_SIGMA) -> dict[str, Any]:
    """Fréchet distance in the classifier's features to ``real_reference``: of generated images, of another
    real set of the same n (real vs real) and of a σ blur of that other set."""
    from codixr.metrics import MetricInputError, fid_from_features

    n = min(len(real_reference), len(real_other), len(generated))
    if n < 2:
        return na(f"needs at least 2 images in each set; have {len(real_reference)} + {len(real_other)} real "
                  f"(disjoint) and {len(generated)} generated")
    ref, _ = reader.read(real_reference[:n])
    rows = {"generated": generated[:n], "real": real_other[:n], "blur": gaussian_blur(real_other[:n], sigma)}
    out: dict[str, Any] = {"n": n, "sigma": sigma, "feature_dim": int(ref.shape[1])}
    try:
        for name, images in rows.items():
            out[name] = fid_from_features(ref, reader.read(np.asarray(images))[0], "findings classifier").value
    except MetricInputError as exc:
        return na(str(exc))
    out["closer_than_blur"] = bool(out["generated"] < out["blur"])
    out["times_real_vs_real"] = out["generated"] / out["real"] if out["real"] > 0 else float("inf")
    return out


# ---------------------------------------------------------------------------------------------- views
class ViewReader:
    """Frontal vs lateral from classifier features: standardised logistic regression with balanced classes."""

    def __init__(self, c: float = 1.0):
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        self.model = make_pipeline(StandardScaler(), LogisticRegression(C=c, class_weight="balanced", max_iter=5000))

    def fit(self, frontal: np.ndarray, lateral: np.ndarray) -> "ViewReader":
        self.model.fit(np.r_[frontal, lateral], np.r_[np.zeros(len(frontal)), np.ones(len(lateral))])
        return self

    def is_lateral(self, features: np.ndarray) -> np.ndarray:
        return self.model.predict_proba(features)[:, 1] >= 0.5

    def share(self, features: np.ndarray, view: Modality) -> float:
        """Share of images (features) read as ``view``."""
        lateral = self.is_lateral(features)
        return float((lateral if view is Modality.LATERAL else ~lateral).mean())


def view_table(reader: ClassifierReader, train: dict[Modality, np.ndarray], validation: dict[Modality, np.ndarray],
               outputs: dict[str, tuple[Modality, np.ndarray | str]]) -> dict[str, Any]:
    """Fit a view reader on real training frontals vs laterals; its accuracy on real validation images of each
    view; the share of each generated setting's images (``outputs``: name -> (view asked for, images or the
    reason there are none)) read as the view asked for."""
    if min(len(train.get(v, ())) for v in (Modality.FRONTAL, Modality.LATERAL)) < 2:
        return na(f"needs real training images of both views; have {len(train.get(Modality.FRONTAL, ()))} frontal "
                  f"and {len(train.get(Modality.LATERAL, ()))} lateral")
    view = ViewReader().fit(reader.read(train[Modality.FRONTAL])[0], reader.read(train[Modality.LATERAL])[0])
    real = {}
    for v in (Modality.FRONTAL, Modality.LATERAL):
        images = validation.get(v, ())
        real[v.value] = ({"n": len(images), "accuracy": view.share(reader.read(images)[0], v)} if len(images)
                         else na(f"no real validation {v.value} images"))
    rows = {}
    for name, (v, images) in outputs.items():
        if isinstance(images, str):
            rows[name] = na(images)
            continue
        rows[name] = {"view": v.value, "n": len(images), "share": view.share(reader.read(images)[0], v),
                      "target": TARGETS["view_share"]}
    return {"train": {v.value: len(train[v]) for v in (Modality.FRONTAL, Modality.LATERAL)}, "real": real,
            "generated": rows}


# ---------------------------------------------------------------------------------------------- generation
def pipeline_image_generator(pipe, batch_size: int = BATCH) -> Callable[..., np.ndarray]:
    """``generate(output, seeds, labels=..., report=..., frontal=..., lateral=...)`` -> (N, H, W) in [0, 1],
    with the pipeline's defaults (steps, per-output guidance, sampler), one seed per image."""
    from codixr.evaluate.generation import fit_texts

    def generate(output: Modality, seeds: Sequence[int], **inputs) -> np.ndarray:
        out = []
        for i in range(0, len(seeds), batch_size):
            kwargs = {k: list(v[i:i + batch_size]) for k, v in inputs.items() if v is not None}
            if "report" in kwargs:
                kwargs["report"] = fit_texts(pipe, kwargs["report"])[0]
            result = pipe(outputs=(output,), seed=[int(s) for s in seeds[i:i + batch_size]], **kwargs)
            out += [np.asarray(im, np.float32) / 255.0 for im in getattr(result, output.value)]
        return np.stack(out) if out else np.zeros((0, pipe.image_size, pipe.image_size), np.float32)

    return generate


def real_images(pipe, paths: Sequence[str]) -> np.ndarray:
    """(N, S, S) real images in [0, 1] at the model's resolution, prepared as the pipeline prepares its inputs."""
    if not paths:
        return np.zeros((0, pipe.image_size, pipe.image_size), np.float32)
    return np.stack([pipe._image_tensor(p)[0].numpy() for p in paths]).astype(np.float32)


@torch.no_grad()
def image_latents_and_conditions(pipe, paths: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """VAE latents (posterior mean, scaled) and P_X conditions of real images, for ``conditioning_gap``."""
    images = torch.from_numpy(real_images(pipe, paths))[:, None].to(pipe.device)
    latents = pipe.vae.encode(images.to(pipe.vae.dtype) * 2 - 1).latent_dist.mean * pipe.vae.config.scaling_factor
    conditions = pipe.prompt_encoder.encode_image(images.to(pipe.prompt_encoder.dtype)).pooled
    return latents, conditions


# ---------------------------------------------------------------------------------------------- grids
def following_grids(real: np.ndarray, text_to_frontal: np.ndarray, per_label: dict[str, np.ndarray],
                    folder: str | Path, tile: int = GRID_TILE) -> dict[str, str]:
    """The card's grids: real validation frontals above T→F frontals, and real above each label set's samples
    (every tile ``tile`` px). Returns name -> file path."""
    from codixr.evaluate.report import image_rows

    folder = Path(folder)
    out = {}
    if len(real) and len(text_to_frontal):
        out["T→F"] = str(image_rows([("real validation frontals", real), ("generated T-to-F", text_to_frontal)],
                                    folder / "following_T-to-F_frontal.png", GRID_COLUMNS, (tile, tile)))
    rows = [(f"labels: {name}", images) for name, images in per_label.items() if len(images)]
    if len(real) and rows:
        out["labels→F"] = str(image_rows([("real validation frontals", real), *rows],
                                         folder / "following_labels-to-F_frontal.png", GRID_COLUMNS, (tile, tile)))
    return out


# ---------------------------------------------------------------------------------------------- all of them
def image_following_tables(pipe, data, n: int = 16, n_fid: int = 64, out_dir: str | Path | None = None,
                           reader: ClassifierReader | str | None = None,
                           generate: Callable[..., np.ndarray] | None = None) -> dict[str, Any]:
    """Every image table on an evaluation split (``codixr.evaluate.data.EvalData``).

    ``n``: images per label set (labels→F), per impression group (T→F), per view-check setting (T→L, F→L,
    L→F) and, twice that, real frontals for the autoencoder; ``n_fid``: T→F images (and real frontals per real
    set) for the Fréchet distance. Seeds 0..n-1 in each set (0..n_fid-1 for the Fréchet set), so the sets
    of one table share their noise and differ only in their condition. ``out_dir``: the results folder (grids
    go to its ``plots/``; none without). ``reader``: the findings classifier (default: loaded here), or why it is unavailable.
    """
    from codixr.evaluate.following import OPACITY_FAMILY, asserts, names_label

    started = time.time()
    generate = generate or pipeline_image_generator(pipe)
    reader = load_reader(str(pipe.device)) if reader is None else reader
    no_reader = reader if isinstance(reader, str) else None
    seconds: dict[str, float] = {}
    out: dict[str, Any] = {"n": n, "n_fid": n_fid, "size": pipe.image_size, "seeds": f"0..{n - 1} per set",
                           "guidance": {m.value: pipe.default_guidance_scale(m) for m in (Modality.FRONTAL, Modality.LATERAL)},
                           "sampler": "pipeline defaults (20 DPM-Solver++ steps)",
                           "reader": no_reader or reader.source, "seconds": seconds}

    def timed(name: str, fn: Callable[[], Any]) -> Any:
        t = time.time()
        logger.info("image following: %s", name)
        value = fn()
        seconds[name] = time.time() - t
        return value

    frontal_paths = [it.frontal for it in data.studies if it.frontal]
    lateral_paths = [it.lateral for it in data.studies if it.lateral]

    # 1. Autoencoder
    out["autoencoder"] = timed("autoencoder", lambda: autoencoder_table(pipe.vae, real_images(pipe, frontal_paths[:2 * n])))

    # 2. labels -> F
    seeds = list(range(n))
    per_label = timed("labels→F generation", lambda: {
        name: generate(Modality.FRONTAL, seeds, labels=[list(labels)] * n)
        for name, labels in [(s.name, s.labels) for s in LABEL_SEPARATIONS] + [(NO_FINDING, (NO_FINDING,))]})
    if no_reader:
        out["labels_to_frontal"] = na(no_reader)
    else:
        out["labels_to_frontal"] = timed("labels→F scoring", lambda: {
            s.name: separation_row(reader, per_label[s.name], per_label[NO_FINDING], s.outputs, s.target)
            for s in LABEL_SEPARATIONS})

    # 3. T -> F: impressions that assert opacity vs impressions that read normal
    impressions = [it.impression for it in data.texts if it.impression]
    groups = {"opacity": [t for t in impressions if asserts(t, OPACITY_FAMILY)][:n],
              "normal": [t for t in impressions if names_label(t, NO_FINDING)][:n]}
    if no_reader:
        out["text_to_frontal"] = na(no_reader)
    elif not (groups["opacity"] and groups["normal"]):
        out["text_to_frontal"] = na(f"needs validation impressions of both kinds; have {len(groups['opacity'])} "
                                    f"asserting {' / '.join(OPACITY_FAMILY).lower()} and {len(groups['normal'])} normal")
    else:
        made = timed("T→F generation", lambda: {k: generate(Modality.FRONTAL, list(range(len(v))), report=v)
                                                 for k, v in groups.items()})
        out["text_to_frontal"] = timed("T→F scoring", lambda: {
            "Lung Opacity / Pneumonia / Consolidation impressions": separation_row(
                reader, made["opacity"], made["normal"], OPACITY_OUTPUTS, TARGETS["text_opacity_auroc"]),
            "examples": {k: v[:3] for k, v in groups.items()}})

    # 4. Fréchet distance: T->F from the first n_fid validation impressions vs real validation frontals
    # (without a reader, only as many as the grid shows)
    fid_texts = impressions[:n_fid] if not no_reader else impressions[:GRID_COLUMNS if out_dir is not None else 0]
    fid_generated = (timed("T→F (Fréchet set) generation", lambda: generate(Modality.FRONTAL, list(range(len(fid_texts))),
                                                                           report=fid_texts))
                     if fid_texts else np.zeros((0, pipe.image_size, pipe.image_size), np.float32))
    real_a = real_images(pipe, frontal_paths[:n_fid])
    real_b = real_images(pipe, frontal_paths[n_fid:2 * n_fid])
    if no_reader:
        out["frechet"] = na(no_reader)
    elif not fid_texts:
        out["frechet"] = na("no validation impressions to generate T→F frontals from")
    else:
        out["frechet"] = timed("Fréchet", lambda: feature_fid_table(reader, real_a, real_b, fid_generated))
        if "n" in out["frechet"] and out["frechet"]["n"] < n_fid:
            out["frechet"]["note"] = (f"n = {out['frechet']['n']} < {n_fid}: the split has {len(frontal_paths)} "
                                      f"validation frontals ({2 * n_fid} needed for two disjoint real sets) and "
                                      f"{len(fid_texts)} impressions")

    # 5. Views
    if no_reader:
        out["views"] = na(no_reader)
    else:
        view_outputs: dict[str, tuple[Modality, np.ndarray | str]] = {
            "T→F": (Modality.FRONTAL, fid_generated if len(fid_generated) else "no validation impressions"),
            "labels→F": (Modality.FRONTAL, np.concatenate(list(per_label.values()))),
        }
        first_texts = impressions[:n]
        view_outputs["L→F"] = (Modality.FRONTAL, timed("L→F generation", lambda: generate(
            Modality.FRONTAL, list(range(len(lateral_paths[:n]))), lateral=lateral_paths[:n]))
            if lateral_paths else "no real validation laterals to condition on")
        view_outputs["T→L"] = (Modality.LATERAL, timed("T→L generation", lambda: generate(
            Modality.LATERAL, list(range(len(first_texts))), report=first_texts))
            if first_texts else "no validation impressions")
        view_outputs["F→L"] = (Modality.LATERAL, timed("F→L generation", lambda: generate(
            Modality.LATERAL, list(range(len(frontal_paths[:n]))), frontal=frontal_paths[:n]))
            if frontal_paths else "no real validation frontals to condition on")
        train = training_views(data, pipe, 4 * n)
        validation = {Modality.FRONTAL: real_a[:2 * n], Modality.LATERAL: real_images(pipe, lateral_paths[:2 * n])}
        out["views"] = timed("views", lambda: view_table(reader, train, validation, view_outputs))
        if "train" in out["views"]:
            out["views"]["lateral_sources"] = sorted({it.source for it in data.train_studies if it.lateral})

    # 6. Grids
    if out_dir is not None:
        grids = following_grids(real_a[:GRID_COLUMNS], fid_generated[:GRID_COLUMNS],
                                {k: v[:GRID_COLUMNS] for k, v in per_label.items()}, Path(out_dir) / "plots")
        out["grids"] = {k: Path(v).relative_to(out_dir).as_posix() for k, v in grids.items()}
    out["wall_time_s"] = time.time() - started
    return out


def training_views(data, pipe, n_frontal: int) -> dict[Modality, np.ndarray]:
    """Real training images of both views for the view reader: every lateral, up to ``n_frontal`` frontals from
    the sources that have laterals (so that the dataset an image comes from is no cue to its view) and up to
    ``n_frontal`` from the other sources (so that their frontals are read as frontals too)."""
    studies = getattr(data, "train_studies", [])
    sources = {it.source for it in studies if it.lateral}
    laterals = [it.lateral for it in studies if it.lateral]
    frontals = ([it.frontal for it in studies if it.frontal and it.source in sources][:n_frontal]
                + [it.frontal for it in studies if it.frontal and it.source not in sources][:n_frontal])
    return {Modality.FRONTAL: real_images(pipe, frontals), Modality.LATERAL: real_images(pipe, laterals)}


# ---------------------------------------------------------------------------------------------- Markdown
def _f(value: Any, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float) and not np.isfinite(value):
        return "inf" if value > 0 else "n/a"
    return f"{value:.{digits}f}"


def _met(value: Any, target: float | None) -> str:
    if target is None or value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    return f"≥ {target:g}: {'yes' if value >= target else 'no'}"


def image_following_markdown(block: dict[str, Any]) -> list[str]:
    """The Markdown of ``image_following_tables``."""
    if not block:
        return []
    if "na" in block:
        return [f"**Image tables**: n/a ({block['na']}).", ""]
    lines = ["#### Do the images follow their input? (`codixr.evaluate.image_following`)", "",
             f"{block['size']} px, {block['sampler']}, guidance " +
             ", ".join(f"{k} {v:g}" for k, v in block["guidance"].items()) + f"; n = {block['n']} per set, seeds "
             f"{block['seeds']} (the sets of a table share their noise); reader: {block['reader']}; "
             f"{block['wall_time_s']:.0f} s.", ""]
    ae = block.get("autoencoder", {})
    if "na" in ae:
        lines += [f"**Autoencoder**: n/a ({ae['na']}).", ""]
    elif ae:
        lines += [f"**Autoencoder** on {ae['n']} real validation frontals at {ae['size']} px (reconstruction from the "
                  f"posterior mean; high-frequency energy = variance of the Laplacian, mean over images, relative to "
                  f"the real images):", "",
                  "| | PSNR dB (mean) | PSNR dB (worst image) | high-frequency energy vs real |", "|---|---:|---:|---:|",
                  f"| VAE reconstruction | {_f(ae['vae']['psnr_db'], 2)} | {_f(ae['vae']['psnr_db_min'], 2)} | "
                  f"{ae['vae']['hf_ratio']:.1%} |",
                  f"| σ = {ae['sigma']:g} px blur of the real images (reference) | {_f(ae['blur']['psnr_db'], 2)} | "
                  f"{_f(ae['blur']['psnr_db_min'], 2)} | {ae['blur']['hf_ratio']:.1%} |",
                  f"| target (issue 13) | ≥ {ae['targets']['psnr_db']:g} | | ≥ {ae['targets']['hf_ratio']:.0%} |", ""]
    lines += _separation_lines("labels→F", "label set vs No Finding",
                               block.get("labels_to_frontal", {}), block["n"])
    lines += _separation_lines("T→F", "impressions asserting the finding vs normal impressions (project labeler)",
                               block.get("text_to_frontal", {}), block["n"])
    fr = block.get("frechet", {})
    if "na" in fr:
        lines += [f"**Fréchet distance in the classifier's features**: n/a ({fr['na']}).", ""]
    elif fr:
        lines += [f"**Fréchet distance in the classifier's features** ({fr['feature_dim']}-d penultimate layer; n = "
                  f"{fr['n']} per set, all against the same {fr['n']} real validation frontals; with n below the "
                  "feature dimension the numbers are biased upwards, compare only at the same n):", "",
                  "| set | Fréchet distance |", "|---|---:|",
                  f"| generated T→F (first {fr['n']} validation impressions, seeds 0..{fr['n'] - 1}) | {fr['generated']:.2f} |",
                  f"| real vs real (another {fr['n']} validation frontals) | {fr['real']:.2f} |",
                  f"| σ = {fr['sigma']:g} px blur of those real frontals | {fr['blur']:.2f} |", "",
                  f"Generated is {'closer than' if fr['closer_than_blur'] else 'further than'} the blur (target: "
                  f"closer) and {fr['times_real_vs_real']:.1f}× the real-vs-real distance."
                  + (f" {fr['note']}." if fr.get("note") else ""), ""]
    views = block.get("views", {})
    if "na" in views:
        lines += [f"**View checks**: n/a ({views['na']}).", ""]
    elif views:
        real = views["real"]
        acc = "; ".join(f"{v} {_f(r.get('accuracy'))} of {r['n']}" if "n" in r else f"{v} n/a ({r['na']})"
                        for v, r in real.items())
        lines += [f"**View checks**: a logistic-regression view reader on the classifier's features, fit on "
                  f"{views['train']['frontal']} real training frontals vs {views['train']['lateral']} laterals (laterals "
                  f"from {', '.join(views.get('lateral_sources', [])) or 'the training split'}; frontals half from the "
                  f"same sources, half from the others); its accuracy on real validation images: {acc}.", "",
                  "| setting | view asked for | n | read as that view | target |", "|---|---|---:|---:|---|"]
        for name, r in views["generated"].items():
            if "na" in r:
                lines.append(f"| {name} | | | n/a ({r['na']}) | |")
            else:
                lines.append(f"| {name} | {r['view']} | {r['n']} | {r['share']:.1%} | {_met(r['share'], r['target'])} |")
        lines.append("")
    for name, path in block.get("grids", {}).items():
        lines.append(f"![real validation frontals above generated ones, {name}]({path})")
    if block.get("grids"):
        lines.append("")
    return lines


def _separation_lines(title: str, what: str, table: dict[str, Any], n: int) -> list[str]:
    if not table:
        return []
    if "na" in table:
        return [f"**{title}**: n/a ({table['na']}).", ""]
    lines = [f"**{title}** ({what}): AUROC with which the classifier's score (mean of the named calibrated outputs) "
             "tells the two sets of generated frontals apart, beside the classifier's validation AUROC on real "
             "images (how well it reads that finding at all, and on which data it was validated); SE after Hanley & "
             "McNeil:", "",
             "| finding | classifier outputs | n (finding / none) | AUROC, generated (± SE) | mean score (finding / none) "
             "| classifier AUROC on real | target |", "|---|---|---:|---:|---:|---|---|"]
    for name, r in table.items():
        if name == "examples":
            continue
        if "na" in r:
            lines.append(f"| {name} | | | n/a ({r['na']}) | | | |")
            continue
        real = ", ".join(f"{o} {_f(a, 2)}" + (f" ({', '.join(r['real_validation_sources'].get(o, []))})"
                                              if r["real_validation_sources"].get(o) else "")
                         for o, a in r["real_validation_auroc"].items())
        lines.append(f"| {name} | {' + '.join(r['outputs'])} | {r['n_positive']} / {r['n_negative']} | "
                     f"{_f(r['auroc'])} ± {_f(r.get('auroc_se'), 2)} | {r['mean_score_positive']:.3f} / {r['mean_score_negative']:.3f} | {real} | "
                     f"{_met(r['auroc'], r['target'])} |")
    return [*lines, ""]
