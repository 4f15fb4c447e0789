"""Classifier findings: torchxrayvision's DenseNet-121, with official or locally trained weights.

One wrapper, `XRVClassifier`, runs both weight sources through the same code path:

* the official ``densenet121-res224-all`` weights (the classifier the CoDi-XR paper evaluates with),
  read from torchxrayvision's cache folder (``~/.torchxrayvision/models_data/``) or from the file named by
  ``CODIXR_XRV_WEIGHTS``. This module never downloads them: when the file is absent the classifier is
  reported as unavailable, with what to do about it;
* the DenseNet trained here by ``python -m training.train_classifier`` (a folder with ``config.json`` and
  ``model.safetensors``), found at ``assets/classifier`` or in the folder named by ``CODIXR_CLASSIFIER``.

Input convention (torchxrayvision's, see ``xrv.utils.normalize`` and ``xrv.datasets.XRayCenterCrop``): a
single-channel image in [0, 1] is scaled to [-1024, 1024] (``(2 * x - 1) * 1024``, which is
``xrv.utils.normalize(x * 255, 255)``), centre-cropped to a square on its long side and resized to the
model's resolution (224) with antialiased bilinear interpolation (as ``xrv.utils.fix_resolution`` does).
Feeding anything else (e.g. [0, 1] or [0, 255] pixels) gives nearly the same output for every image, so
`to_xrv_input` refuses images outside [0, 1].

Scores: the network's logits go through a sigmoid (the *probability*) and then torchxrayvision's
``op_norm`` with the model's operating thresholds, which maps each threshold to 0.5 (the *calibrated
score*). `Findings.scores` holds the calibrated scores (positive at >= 0.5); the raw probabilities and the
operating points are kept in `Findings.probabilities` / `Findings.operating_points`.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F

from codixr.errors import InputError, ModelPackageError
from codixr.findings.result import (
    TRAINED_SOURCE,
    XRV_SOURCE,
    ZERO_SHOT_SOURCE,
    Findings,
    findings_from,
)
from codixr.modality import PATHOLOGIES

logger = logging.getLogger(__name__)

XRV_WEIGHTS = "densenet121-res224-all"
ENV_XRV_WEIGHTS = "CODIXR_XRV_WEIGHTS"
ENV_CLASSIFIER = "CODIXR_CLASSIFIER"
DEFAULT_CLASSIFIER_DIR = Path(__file__).resolve().parents[2] / "assets" / "classifier"
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
XRV_RESOLUTION = 224
XRV_MAX = 1024.0  # torchxrayvision pixel range is [-XRV_MAX, XRV_MAX]
DENSENET121 = {"growth_rate": 32, "block_config": [6, 12, 24, 16], "num_init_features": 64, "bn_size": 4}
SOURCES = ("auto", "xrv", "trained", "zero-shot")

# torchxrayvision target names -> names used by CoDiXR (the paper's Table I names where they differ).
XRV_TO_PATHOLOGY = {"Effusion": "Pleural Effusion", "Pleural_Thickening": "Pleural Thickening"}


class ClassifierUnavailable(ModelPackageError):
    """The requested classifier's weights are not installed (or cannot be read); the message says what to do."""


def import_xrv():
    """Import torchxrayvision without letting its import-time ``warnings.filterwarnings("ignore")`` leak."""
    with warnings.catch_warnings():
        import torchxrayvision as xrv
    return xrv


def pathology_name(target: str) -> str:
    """CoDiXR's name for a torchxrayvision target ("Effusion" -> "Pleural Effusion"); others unchanged."""
    return XRV_TO_PATHOLOGY.get(target, target)


# --------------------------------------------------------------------------------------------- input
def as_image_array(image: Any) -> np.ndarray:
    """An image as a float32 (H, W) array in [0, 1].

    Accepts a path (read with `codixr.io.read_xray`), a `codixr.io.XRay`, a PIL image, a numpy array or a
    torch tensor. Integer arrays are divided by their type's maximum; float arrays must already be in [0, 1].
    Colour images are averaged to grey.
    """
    if isinstance(image, (str, os.PathLike)):
        from codixr.io import read_xray

        image = read_xray(image)
    if hasattr(image, "image") and not isinstance(image, np.ndarray):  # codixr.io.XRay
        image = image.image
    if hasattr(image, "mode") and hasattr(image, "convert"):  # PIL.Image
        if image.mode.startswith("I;16"):
            image = np.asarray(image, dtype=np.float32) / 65535.0
        else:
            image = np.asarray(image.convert("L"), dtype=np.float32) / 255.0
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().float().numpy()
    arr = np.asarray(image)
    if arr.dtype == np.bool_:
        arr = arr.astype(np.float32)
    elif np.issubdtype(arr.dtype, np.integer):
        arr = arr.astype(np.float32) / float(np.iinfo(arr.dtype).max)
    arr = arr.astype(np.float32, copy=False)
    if arr.ndim == 3 and 1 in (arr.shape[0], arr.shape[-1]):
        arr = arr.reshape(arr.shape[1:] if arr.shape[0] == 1 else arr.shape[:2])
    elif arr.ndim == 3 and arr.shape[-1] in (3, 4):
        arr = arr[..., :3].mean(axis=-1)
    if arr.ndim != 2 or min(arr.shape) < 2:
        raise InputError(f"Expected a single grey-level image of shape (H, W); got an array of shape {arr.shape}.")
    _check_unit_range(arr.min(), arr.max())
    return arr


def _check_unit_range(lo: float, hi: float, tol: float = 1e-3) -> None:
    if not np.isfinite(lo) or not np.isfinite(hi) or lo < -tol or hi > 1 + tol:
        raise InputError(
            f"The image must have pixel values in [0, 1] (found {float(lo):.4g} to {float(hi):.4g}). "
            "Divide 8-bit images by 255 (or pass the uint8 array / PIL image directly); the classifier "
            "does its own [-1024, 1024] scaling."
        )


def center_crop_resize(image: np.ndarray | torch.Tensor, size: int = XRV_RESOLUTION) -> torch.Tensor:
    """Centre crop to a square on the long side (``xrv.datasets.XRayCenterCrop``) and resize to `size`.

    `image` is (H, W), (1, H, W) or (N, 1, H, W); the result is (N, 1, size, size), differentiable in `image`.
    Resizing is antialiased bilinear, as torchxrayvision's ``utils.fix_resolution``.
    """
    x = image if isinstance(image, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(image))
    x = x.float()
    if x.ndim == 2:
        x = x[None, None]
    elif x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[1] != 1:
        raise InputError(f"Expected a grey-level image (H, W) or a batch (N, 1, H, W); got shape {tuple(x.shape)}.")
    h, w = x.shape[-2:]
    crop = min(h, w)
    top, left = h // 2 - crop // 2, w // 2 - crop // 2  # same arithmetic as XRayCenterCrop
    x = x[..., top : top + crop, left : left + crop]
    if crop != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=crop > size, align_corners=False)
    return x


def xrv_scale(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] pixels -> torchxrayvision's [-1024, 1024] range (``xrv.utils.normalize(x * 255, 255)``)."""
    return (2.0 * x - 1.0) * XRV_MAX


def to_xrv_input(image: np.ndarray | torch.Tensor, size: int = XRV_RESOLUTION) -> torch.Tensor:
    """The tensor torchxrayvision's DenseNet expects, from an image in [0, 1]: (N, 1, size, size) in [-1024, 1024].

    Raises `InputError` when the image is not in [0, 1] (the scaling trap that makes every image look alike).
    """
    t = image.detach() if isinstance(image, torch.Tensor) else np.asarray(image)
    _check_unit_range(float(t.min()), float(t.max()))
    return xrv_scale(center_crop_resize(image, size))


# --------------------------------------------------------------------------------------------- model
def build_densenet(targets: list[str], op_threshs: list[float | None] | None = None,
                   densenet: Mapping[str, Any] | None = None) -> torch.nn.Module:
    """An untrained torchxrayvision DenseNet (``weights=None``, one input channel) with `targets` as outputs."""
    xrv = import_xrv()
    params = dict(DENSENET121 if densenet is None else densenet)
    params["block_config"] = tuple(params["block_config"])
    thr = None if op_threshs is None else torch.tensor([np.nan if t is None else t for t in op_threshs],
                                                        dtype=torch.float32)
    model = xrv.models.DenseNet(weights=None, num_classes=len(targets), in_channels=1, op_threshs=thr, **params)
    model.targets = list(targets)
    model.pathologies = model.targets  # torchxrayvision keeps both names
    return model


class XRVClassifier(torch.nn.Module):
    """A torchxrayvision DenseNet with its input convention, targets and operating thresholds.

    The same class serves the official weights (`from_xrv_weights`) and the ones trained here
    (`from_pretrained`); `load(source)` picks and checks the weight source. Call the module on images in
    [0, 1] to get calibrated scores (differentiable, for saliency); use `predict` for a `Findings`.
    """

    def __init__(self, model: torch.nn.Module, source: str, image_size: int = XRV_RESOLUTION,
                 card: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        self.model = model
        self.source = source
        self.image_size = int(image_size)
        self.card = dict(card or {})
        self.requires_grad_(False)  # an inference wrapper: frozen unless a trainer unfreezes it
        self.eval()

    # -- outputs
    @property
    def targets(self) -> list[str]:
        """The model's output names, torchxrayvision style ("" for an output it does not assess)."""
        return list(self.model.targets)

    @property
    def op_threshs(self) -> torch.Tensor:
        thr = getattr(self.model, "op_threshs", None)
        return torch.full((len(self.targets),), float("nan")) if thr is None else thr

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Raw logits for xrv-scaled input (N, 1, S, S) in [-1024, 1024]."""
        return self.model.classifier(self.model.features2(x))

    def outputs(self, image: np.ndarray | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(probabilities, calibrated scores), each (N, n_targets), for images in [0, 1]."""
        xrv = import_xrv()
        device = next(self.model.parameters()).device
        x = to_xrv_input(image, self.image_size).to(device)
        prob = torch.sigmoid(self.logits(x))
        thr = self.op_threshs.to(device)
        calibrated = torch.where(torch.isnan(thr), prob, xrv.models.op_norm(prob, thr))
        return prob, calibrated

    def forward(self, image: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Calibrated scores (N, n_targets) for images in [0, 1]; 0.5 is each target's operating point."""
        return self.outputs(image)[1]

    @property
    def validation_auroc(self) -> dict[str, float | None]:
        """Pathology -> AUROC on the validation split recorded in the card (``card["validation"]``, written by
        ``training.train_classifier``); None where the card records none or marks the pathology not assessed
        (too few cases). The official torchxrayvision weights carry no validation of their own here."""
        out: dict[str, float | None] = {}
        for target, entry in (self.card.get("validation") or {}).items():
            if isinstance(entry, Mapping):
                name = pathology_name(str(entry.get("name") or target))
                auroc = entry.get("auroc") if entry.get("assessed", True) else None
                out[name] = None if auroc is None else float(auroc)
        return out

    @torch.no_grad()
    def predict(self, image: Any, include_extra: bool = False) -> Findings:
        """`Findings` for one image (array in [0, 1], PIL image, `XRay` or path)."""
        prob, cal = (t[0].float().cpu().tolist() for t in self.outputs(as_image_array(image)))
        thr = self.op_threshs.float().cpu().tolist()
        names = [pathology_name(t) if t else "" for t in self.targets]
        keep = [i for i, n in enumerate(names) if n]
        has_op = {names[i]: not np.isnan(thr[i]) for i in keep}
        return findings_from(
            self.source,
            scores={names[i]: cal[i] for i in keep},
            thresholds={n: (0.5 if ok else None) for n, ok in has_op.items()},
            probabilities={names[i]: prob[i] for i in keep if names[i] in PATHOLOGIES},
            operating_points={names[i]: thr[i] for i in keep if names[i] in PATHOLOGIES},
            validation_auroc=self.validation_auroc,
            include_extra=include_extra,
        )

    # -- weight sources
    @classmethod
    def load(cls, source: str = "auto", device: str | torch.device | None = None) -> "XRVClassifier":
        """Load (once, then from cache) the classifier for `source`: "auto", "xrv" or "trained".

        "auto" prefers the official torchxrayvision weights and falls back to the one trained here.
        Raises `ClassifierUnavailable` with a plain message when the weights are not installed.
        """
        return load_classifier(source, device)

    @classmethod
    def from_xrv_weights(cls, path: str | os.PathLike | None = None) -> "XRVClassifier":
        """The official ``densenet121-res224-all`` classifier from a local file; never downloads.

        `path` defaults to ``$CODIXR_XRV_WEIGHTS`` or the file in torchxrayvision's cache folder. The file is
        torchxrayvision's release file (a pickled torch model, loaded as torchxrayvision loads it) or a
        ``.safetensors`` state dict converted from it.
        """
        xrv = import_xrv()
        info = xrv.models.model_urls[XRV_WEIGHTS]
        file = Path(path) if path is not None else xrv_weights_path()
        if not file.is_file():
            raise ClassifierUnavailable(_xrv_missing_message(file))
        try:
            state = _read_state_dict(file)
            model = build_densenet(list(info["labels"]), [float(t) for t in info["op_threshs"]])
            state["op_threshs"] = model.op_threshs  # thresholds come from torchxrayvision's registry
            model.load_state_dict(state)
        except Exception as exc:  # a corrupt or foreign file: say which and what to do
            raise ClassifierUnavailable(
                f"torchxrayvision weights {XRV_WEIGHTS} at {file} could not be read ({type(exc).__name__}: {exc}). "
                "Replace the file with the official release file. Findings from the XRV classifier are not available."
            ) from exc
        logger.info("Loaded torchxrayvision %s weights from %s", XRV_WEIGHTS, file)
        return cls(model, XRV_SOURCE, int(info.get("input_resolution", XRV_RESOLUTION)),
                   card={"weights": XRV_WEIGHTS, "file": str(file), "description": info.get("description", "")})

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike | None = None) -> "XRVClassifier":
        """A classifier saved by `save_pretrained` (``config.json`` + ``model.safetensors``).

        `folder` defaults to ``$CODIXR_CLASSIFIER`` or ``assets/classifier``.
        """
        from safetensors.torch import load_file

        folder = Path(folder) if folder is not None else trained_classifier_dir()
        if not (folder / CONFIG_NAME).is_file() or not (folder / WEIGHTS_NAME).is_file():
            raise ClassifierUnavailable(_trained_missing_message(folder))
        try:
            config = json.loads((folder / CONFIG_NAME).read_text())
            model = build_densenet(config["targets"], config["op_threshs"], config.get("densenet"))
            state = {k: (v.float() if v.is_floating_point() else v) for k, v in load_file(folder / WEIGHTS_NAME).items()}
            state["op_threshs"] = model.op_threshs  # the thresholds of config.json are the reference
            model.load_state_dict(state)
        except Exception as exc:
            raise ClassifierUnavailable(
                f"The classifier at {folder} could not be read ({type(exc).__name__}: {exc}). Retrain it with "
                "`python -m training.train_classifier`. Findings from the trained classifier are not available."
            ) from exc
        source = config.get("source") or f"{TRAINED_SOURCE} ({folder.name})"
        logger.info("Loaded the trained classifier from %s", folder)
        return cls(model, source, config.get("image_size", XRV_RESOLUTION), card=config)

    def save_pretrained(self, folder: str | os.PathLike, dtype: torch.dtype = torch.float16,
                        **card: Any) -> Path:
        """Write ``config.json`` (targets, thresholds, image size, + `card`) and ``model.safetensors``.

        Floating-point weights are stored as `dtype` (float16 halves the size; loading casts back to float32),
        except tensors that `dtype` cannot hold: BatchNorm running variances of the first layer reach ~1e5 with
        inputs in [-1024, 1024], past float16's 65504, and would turn into inf (every image then reads alike).
        """
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        state = {k: _storable(k, v, dtype).detach().cpu().contiguous() for k, v in self.model.state_dict().items()}
        save_file(state, folder / WEIGHTS_NAME, metadata={"format": "pt"})
        thr = self.op_threshs.float().cpu().tolist()
        config = {**self.card, **card}
        config.update({
            "_class_name": type(self).__name__,
            "architecture": "torchxrayvision.models.DenseNet",
            "densenet": _densenet_params(self.model),
            "targets": self.targets,
            "op_threshs": [None if np.isnan(t) else t for t in thr],
            "image_size": self.image_size,
            "input_convention": "grey [0,1] -> (2x-1)*1024, centre crop, antialiased bilinear resize",
            "source": card.get("source", self.card.get("source", self.source)),
            "weights_dtype": str(dtype).replace("torch.", ""),
        })
        (folder / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
        return folder


def _storable(name: str, tensor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """`tensor` in `dtype` when that keeps every finite value finite, else in float32 (and op_threshs as is)."""
    if not tensor.is_floating_point() or name == "op_threshs" or dtype == tensor.dtype:
        return tensor
    cast = tensor.to(dtype)
    if bool((torch.isfinite(cast) | ~torch.isfinite(tensor)).all()):
        return cast
    logger.info("%s kept in float32: its values exceed the range of %s", name, str(dtype).replace("torch.", ""))
    return tensor.float()


def _densenet_params(model: torch.nn.Module) -> dict[str, Any]:
    """Recover the DenseNet hyper-parameters from a built model (for config.json)."""
    feats = model.features
    blocks = [m for n, m in feats.named_children() if n.startswith("denseblock")]
    first = blocks[0].denselayer1
    return {
        "growth_rate": first.conv2.out_channels,
        "block_config": [len(b) for b in blocks],
        "num_init_features": feats.conv0.out_channels,
        "bn_size": first.conv1.out_channels // first.conv2.out_channels,
    }


def _read_state_dict(file: Path) -> dict[str, torch.Tensor]:
    if file.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(file)
    # torchxrayvision ships the whole pickled module; load it the way torchxrayvision.models.DenseNet does.
    obj = torch.load(file, map_location="cpu", weights_only=False)
    if isinstance(obj, torch.nn.Module):
        for mod in obj.modules():  # old pickles lack this attribute (pytorch/pytorch#42242)
            if not hasattr(mod, "_non_persistent_buffers_set"):
                mod._non_persistent_buffers_set = set()
        obj = obj.state_dict()
    return dict(obj)


# --------------------------------------------------------------------------------------------- where
def xrv_weights_path() -> Path:
    """Where the official weights are looked for: ``$CODIXR_XRV_WEIGHTS`` (a file, or a folder holding the
    release file) or torchxrayvision's own cache folder (``xrv.utils.get_cache_dir()``)."""
    xrv = import_xrv()
    filename = os.path.basename(xrv.models.model_urls[XRV_WEIGHTS]["weights_url"])
    env = os.environ.get(ENV_XRV_WEIGHTS)
    if env:
        path = Path(env).expanduser()
        return path / filename if path.is_dir() else path
    return Path(xrv.utils.get_cache_dir()) / filename


def trained_classifier_dir() -> Path:
    """Where the classifier trained here is looked for: ``$CODIXR_CLASSIFIER`` or ``assets/classifier``."""
    env = os.environ.get(ENV_CLASSIFIER)
    return Path(env).expanduser() if env else DEFAULT_CLASSIFIER_DIR


def _xrv_missing_message(file: Path) -> str:
    where = f"{ENV_XRV_WEIGHTS} points to {file}, which does not exist" if os.environ.get(ENV_XRV_WEIGHTS) \
        else f"no file at {file}"
    return (f"torchxrayvision weights {XRV_WEIGHTS} are not installed ({where}): put the file {file.name} at "
            f"{file.parent} or set {ENV_XRV_WEIGHTS} to its path. Findings from the XRV classifier are not available.")


def _trained_missing_message(folder: Path) -> str:
    return (f"The classifier trained for CoDiXR is not installed: no {CONFIG_NAME} and {WEIGHTS_NAME} in {folder}. "
            f"Train it with `python -m training.train_classifier --out {DEFAULT_CLASSIFIER_DIR}` or set "
            f"{ENV_CLASSIFIER} to its folder. Findings from the trained classifier are not available.")


# --------------------------------------------------------------------------------------------- loading
def _parse_source(source: str) -> str:
    key = str(source).strip().lower().replace("_", "-").replace(" ", "-")
    key = {"zeroshot": "zero-shot", "official": "xrv", "torchxrayvision": "xrv"}.get(key, key)
    if key not in SOURCES:
        raise InputError(f"Unknown findings source {source!r}: use one of {', '.join(SOURCES)}.")
    return key


def _file_stamp(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return -1


@functools.lru_cache(maxsize=8)
def _load_cached(kind: str, path: str, stamp: int, device: str) -> XRVClassifier:
    # `stamp` (the file's mtime) is part of the key so a replaced file is loaded again.
    clf = XRVClassifier.from_xrv_weights(path) if kind == "xrv" else XRVClassifier.from_pretrained(path)
    return clf.to(device)


def load_classifier(source: str = "auto", device: str | torch.device | None = None) -> XRVClassifier:
    """The classifier for `source` ("auto", "xrv" or "trained"), loaded once and cached.

    Raises `ClassifierUnavailable` (with what to install) when its weights are absent; failures are not cached.
    """
    source = _parse_source(source)
    if source == "zero-shot":
        raise InputError("The zero-shot reading is not a classifier: use codixr.findings.classify(..., source='zero-shot').")
    device = str(torch.device(device or "cpu"))
    if source == "auto":
        try:
            return load_classifier("xrv", device)
        except ClassifierUnavailable as xrv_error:
            try:
                return load_classifier("trained", device)
            except ClassifierUnavailable as trained_error:
                raise ClassifierUnavailable(f"No findings classifier is installed. {xrv_error} {trained_error}") from None
    if source == "xrv":
        path = xrv_weights_path()
        if not path.is_file():  # checked before anything is built: nothing here can download
            raise ClassifierUnavailable(_xrv_missing_message(path))
        return _load_cached("xrv", str(path), _file_stamp(path), device)
    folder = trained_classifier_dir()
    return _load_cached("trained", str(folder), _file_stamp(folder / WEIGHTS_NAME), device)


def clear_cache() -> None:
    """Forget the loaded classifiers (e.g. after installing weights)."""
    _load_cached.cache_clear()


# --------------------------------------------------------------------------------------------- API
def zero_shot_findings(image: Any, pipe: Any) -> Findings:
    """The model's own zero-shot reading (`codixr.findings.zero_shot.zero_shot_scores`) as `Findings`.

    Its scores are probabilities from comparing the image with positive/negative prompts; the threshold is 0.5.
    Returns an unavailable `Findings` when no model is given or the scorer is not installed.
    """
    if pipe is None:
        return Findings.unavailable(ZERO_SHOT_SOURCE, "The zero-shot reading needs the CoDiXR model: pass pipe=... "
                                                      "(codixr.CoDiXRPipeline.from_pretrained()).")
    try:
        from codixr.findings.zero_shot import zero_shot_scores
    except ImportError as exc:
        logger.warning("Zero-shot scorer unavailable: %s", exc)
        return Findings.unavailable(ZERO_SHOT_SOURCE, f"The zero-shot scorer is not available in this installation ({exc}).")
    scores = {k: v for k, v in zero_shot_scores(pipe, as_image_array(image)).items() if k in PATHOLOGIES}
    return Findings(scores=scores, thresholds={k: 0.5 for k in scores}, source=ZERO_SHOT_SOURCE)


def classify(image: Any, pipe: Any = None, source: str = "auto", include_extra: bool = False,
             device: str | torch.device | None = None) -> Findings:
    """What a classifier finds on `image` (array in [0, 1], PIL image, `XRay` or path).

    Args:
        image: the chest X-ray (given or generated).
        pipe: the CoDiXR pipeline, needed for ``source="zero-shot"``; its device is used when `device` is None.
        source: "auto" (official torchxrayvision weights when installed, else the classifier trained here),
            "xrv", "trained" or "zero-shot".
        include_extra: also report the classifier's other targets (e.g. "Fracture") in `extra_scores`.
        device: where to run the classifier (default: the pipeline's device, else CPU).

    Returns a `Findings` with all ten pathologies as keys (None where not assessed). When the weights are
    absent it returns ``Findings(available=False, message=...)`` instead of raising.
    """
    source = _parse_source(source)
    if source == "zero-shot":
        return zero_shot_findings(image, pipe)
    array = as_image_array(image)
    try:
        clf = load_classifier(source, device or getattr(pipe, "device", None))
    except ClassifierUnavailable as exc:
        name = {"xrv": XRV_SOURCE, "trained": TRAINED_SOURCE}.get(source, "no findings classifier installed")
        return Findings.unavailable(name, str(exc))
    return clf.predict(array, include_extra=include_extra)


def classify_all(image: Any, pipe: Any = None, include_extra: bool = False,
                 device: str | torch.device | None = None) -> dict[str, Findings | None]:
    """Both readings of `image`: ``{"classifier": Findings, "zero_shot": Findings | None}``.

    "classifier" is `classify(..., source="auto")`; "zero_shot" is the model's own reading, None without `pipe`.
    """
    array = as_image_array(image)
    return {
        "classifier": classify(array, pipe, "auto", include_extra=include_extra, device=device),
        "zero_shot": zero_shot_findings(array, pipe) if pipe is not None else None,
    }
