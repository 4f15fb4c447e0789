"""Fréchet distance between real and generated X-rays in the feature space of a pluggable backbone.

FID = ||mu_r - mu_g||^2 + Tr(S_r + S_g - 2 (S_r S_g)^{1/2}) (Heusel et al., 2017), with the matrix
square root from :func:`scipy.linalg.sqrtm`, following pytorch-fid's ``calculate_frechet_distance``.

Backbones (paper Table II reports both of the first two):

* :class:`InceptionV3Backbone` ("inception-v3"): torchvision's ImageNet Inception-v3, 2048-d pool3
  features. These are torchvision's weights, not the TF-ported ``pt_inception`` weights of
  pytorch-fid, so absolute values are not interchangeable with numbers from that tool.
* :class:`XRVDenseNetBackbone` ("xrv-densenet121-res224-all"): torchxrayvision's in-domain
  DenseNet-121, 1024-d globally pooled features (``features2``).
* :class:`CallableBackbone`: any function images -> (N, D) features, e.g. CoDi-XR's image prompt encoder P_X.

Weights are read from local files only; a missing file raises :class:`BackboneUnavailableError`
saying where to put it. Every :class:`FIDResult` names the backbone that produced it.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol, runtime_checkable

import numpy as np
import torch
from scipy import linalg

from codixr.metrics.errors import BackboneUnavailableError, MetricInputError

logger = logging.getLogger(__name__)

INCEPTION_WEIGHTS_ENV = "CODIXR_INCEPTION_WEIGHTS"
XRV_WEIGHTS_ENV = "CODIXR_XRV_WEIGHTS"
XRV_WEIGHTS = "densenet121-res224-all"


@dataclass(frozen=True)
class FIDResult:
    """A FID value and what produced it."""

    value: float
    backbone: str
    n_real: int
    n_fake: int

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@runtime_checkable
class FeatureBackbone(Protocol):
    """Maps a batch of images (B, 1, H, W), float in [0, 1], to features (B, dim) as float64."""

    name: str
    dim: int | None

    def __call__(self, images: torch.Tensor) -> np.ndarray: ...


# --------------------------------------------------------------------------- the distance


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, eps: float = 1e-6) -> float:
    """Fréchet distance between the Gaussians N(mu1, sigma1) and N(mu2, sigma2).

    When the product of covariances is singular (fewer samples than feature dimensions), ``eps``
    is added to both diagonals, as pytorch-fid does.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (mu1.size, mu1.size):
        raise MetricInputError(
            f"means and covariances do not match: mu {mu1.shape} / {mu2.shape}, sigma {sigma1.shape} / {sigma2.shape}."
        )
    diff = mu1 - mu2
    with warnings.catch_warnings():  # singularity is detected and handled below
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(sigma1 @ sigma2)
        if not np.isfinite(covmean).all() or (np.iscomplexobj(covmean) and np.abs(covmean.imag).max() > 1e-3):
            logger.warning("FID: product of covariances is singular; adding %g to the diagonals.", eps)
            offset = np.eye(mu1.size) * eps
            covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise MetricInputError(
                "FID matrix square root has a large imaginary part; the feature covariance is too "
                "ill-conditioned. Use more images (ideally more than the feature dimension)."
            )
        covmean = covmean.real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (unbiased) covariance of (N, D) features."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or features.shape[0] < 2:
        raise MetricInputError(f"need at least 2 feature vectors as an (N, D) array; got shape {features.shape}.")
    return features.mean(axis=0), np.cov(features, rowvar=False)


def fid_from_features(real: np.ndarray, fake: np.ndarray, backbone: str = "features") -> FIDResult:
    """FID between two (N, D) feature sets; ``backbone`` names their source in the result."""
    real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise MetricInputError(f"real and fake features must be (N, D) with the same D; got {real.shape} and {fake.shape}.")
    n_min = min(len(real), len(fake))
    if n_min < real.shape[1]:
        logger.warning(
            "FID (%s) from %d images with %d-d features: covariances are rank-deficient and FID is "
            "biased upwards; compare only numbers computed with the same N.", backbone, n_min, real.shape[1],
        )
    value = frechet_distance(*feature_statistics(real), *feature_statistics(fake))
    return FIDResult(value=value, backbone=backbone, n_real=len(real), n_fake=len(fake))


# --------------------------------------------------------------------------- images -> features


def as_image_batch(images: Any) -> torch.Tensor:
    """Validate images as float (N, 1, H, W) or (N, H, W) in [0, 1]; return a float32 (N, 1, H, W) tensor."""
    x = images.detach().cpu() if isinstance(images, torch.Tensor) else torch.as_tensor(np.asarray(images))
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4 or x.shape[1] != 1:
        raise MetricInputError(f"images must be grayscale (N, 1, H, W) or (N, H, W); got shape {tuple(x.shape)}.")
    if not torch.is_floating_point(x):
        raise MetricInputError(f"images must be floats in [0, 1]; got dtype {x.dtype} (divide 8-bit images by 255).")
    x = x.float()
    if x.numel() and (not torch.isfinite(x).all() or x.min() < 0 or x.max() > 1):
        raise MetricInputError(
            f"images must lie in [0, 1]; got range [{x.min().item():.3g}, {x.max().item():.3g}]."
        )
    return x


def extract_features(images: Any, backbone: FeatureBackbone, batch_size: int = 32) -> np.ndarray:
    """Run ``backbone`` over ``images`` in batches; returns (N, D) float64 features."""
    x = as_image_batch(images)
    chunks = []
    for start in range(0, len(x), batch_size):
        batch = x[start:start + batch_size]
        feats = backbone(batch)
        feats = feats.detach().cpu().numpy() if isinstance(feats, torch.Tensor) else np.asarray(feats)
        if feats.ndim != 2 or feats.shape[0] != len(batch):
            raise MetricInputError(
                f"backbone {backbone.name!r} returned features of shape {feats.shape} for {len(batch)} images; expected ({len(batch)}, D)."
            )
        chunks.append(feats.astype(np.float64))
    if not chunks:
        raise MetricInputError("no images given.")
    return np.concatenate(chunks)


def compute_fid(real_images: Any, fake_images: Any, backbone: FeatureBackbone, batch_size: int = 32) -> FIDResult:
    """FID between real and generated images, float (N, 1, H, W) or (N, H, W) in [0, 1], in ``backbone``'s feature space."""
    real = extract_features(real_images, backbone, batch_size)
    fake = extract_features(fake_images, backbone, batch_size)
    result = fid_from_features(real, fake, backbone.name)
    logger.info("FID[%s] = %.4f (%d real, %d generated)", result.backbone, result.value, result.n_real, result.n_fake)
    return result


# --------------------------------------------------------------------------- backbones


class CallableBackbone:
    """Wrap any function images (B, 1, H, W) in [0, 1] -> (B, D) features (tensor or array) as a backbone."""

    def __init__(self, name: str, fn: Callable[[torch.Tensor], Any], dim: int | None = None):
        self.name, self.fn, self.dim = name, fn, dim

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> np.ndarray:
        feats = self.fn(images)
        feats = feats.detach().float().cpu().numpy() if isinstance(feats, torch.Tensor) else np.asarray(feats)
        if feats.ndim < 2 or feats.shape[0] != len(images):
            raise MetricInputError(
                f"backbone {self.name!r} returned features of shape {feats.shape} for {len(images)} images; expected ({len(images)}, D)."
            )
        feats = feats.reshape(len(images), -1).astype(np.float64)
        if self.dim is not None and feats.shape[1] != self.dim:
            raise MetricInputError(f"backbone {self.name!r} returned {feats.shape[1]}-d features; expected {self.dim}.")
        self.dim = feats.shape[1]
        return feats

    def __repr__(self) -> str:
        return f"CallableBackbone(name={self.name!r}, dim={self.dim})"


class _TorchBackbone:
    """A frozen torch model with a preprocessing step; subclasses set ``name``, ``dim`` and ``model``."""

    name: str
    dim: int
    model: torch.nn.Module
    device: torch.device

    def _freeze(self, model: torch.nn.Module, device: str | torch.device | None) -> torch.nn.Module:
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        return model.eval().requires_grad_(False).to(self.device)  # frozen feature extractor

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> np.ndarray:
        x = self.preprocess(as_image_batch(images)).to(self.device)
        return self.forward_features(x).double().cpu().numpy()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, dim={self.dim}, device={self.device})"


def _weights_file(explicit: str | os.PathLike | None, env_var: str, default: Path, what: str, how: str) -> Path:
    """The weight file to use (argument, else ``env_var``, else ``default``), or BackboneUnavailableError."""
    path = Path(explicit or os.environ.get(env_var) or default).expanduser()
    if not path.is_file():
        raise BackboneUnavailableError(
            f"The {what} weights are not on this machine (looked for {path}). Nothing is downloaded: "
            f"copy the file there or set {env_var}=/path/to/the/file. {how}"
        )
    return path


def inception_weights_path() -> Path:
    """Where torchvision keeps its Inception-v3 ImageNet weights (torch hub cache)."""
    from torchvision.models import Inception_V3_Weights

    filename = os.path.basename(Inception_V3_Weights.IMAGENET1K_V1.url)
    return Path(torch.hub.get_dir()) / "checkpoints" / filename


class InceptionV3Backbone(_TorchBackbone):
    """torchvision Inception-v3 (ImageNet), 2048-d pool3 features: gray -> 3 channels, 299 px, ImageNet normalisation.

    Weights: ``weights_path``, else ``$CODIXR_INCEPTION_WEIGHTS``, else torchvision's cache file
    (``<torch hub dir>/checkpoints/inception_v3_google-0cc3c7bd.pth``).
    """

    name = "inception-v3"
    dim = 2048
    resolution = 299

    def __init__(self, weights_path: str | os.PathLike | None = None, device: str | torch.device | None = None):
        from torchvision.models import Inception_V3_Weights, inception_v3

        weights = Inception_V3_Weights.IMAGENET1K_V1
        path = _weights_file(
            weights_path, INCEPTION_WEIGHTS_ENV, inception_weights_path(), "Inception-v3 (ImageNet)",
            f"It is torchvision's IMAGENET1K_V1 file ({weights.url}); on a machine with internet, "
            "torchvision.models.inception_v3(weights='IMAGENET1K_V1') saves it in the torch hub cache.",
        )
        # transform_input=True: torchvision's pretrained Inception expects it with ImageNet-normalised input.
        model = inception_v3(weights=None, aux_logits=True, init_weights=False, transform_input=True)
        try:
            model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        except Exception as err:  # corrupt or foreign file
            raise BackboneUnavailableError(f"{path} is not a torchvision Inception-v3 state dict ({err}).") from err
        model.fc = torch.nn.Identity()  # keep the 2048-d pool3 features, drop the ImageNet classifier
        self.model = self._freeze(model, device)
        preset = weights.transforms()
        self._mean = torch.tensor(preset.mean).view(1, 3, 1, 1)
        self._std = torch.tensor(preset.std).view(1, 3, 1, 1)
        logger.info("Loaded Inception-v3 FID backbone from %s", path)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        x = torch.nn.functional.interpolate(images, size=(self.resolution,) * 2, mode="bilinear", align_corners=False, antialias=True)
        return (x.repeat(1, 3, 1, 1) - self._mean) / self._std


class XRVDenseNetBackbone(_TorchBackbone):
    """torchxrayvision DenseNet-121 ("densenet121-res224-all"), 1024-d pooled features (``features2``).

    The same model, weight lookup and input convention as the findings classifier
    (:class:`codixr.findings.classifier.XRVClassifier`): [0, 1] images scaled to [-1024, 1024], centre-cropped
    and resized to 224 px (``to_xrv_input``). Weights: ``weights_path``, else ``$CODIXR_XRV_WEIGHTS``, else
    torchxrayvision's cache file; nothing is downloaded. The release file is a pickled torch module
    (torchxrayvision's format): only use files you trust.
    """

    dim = 1024

    def __init__(self, weights_path: str | os.PathLike | None = None, device: str | torch.device | None = None):
        from codixr.findings.classifier import ClassifierUnavailable, XRVClassifier

        try:
            classifier = XRVClassifier.from_xrv_weights(weights_path)
        except ClassifierUnavailable as err:
            raise BackboneUnavailableError(str(err)) from err
        self.name = f"xrv-{XRV_WEIGHTS}"
        self.resolution = classifier.image_size
        self.model = self._freeze(classifier.model, device)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        from codixr.findings.classifier import to_xrv_input

        return to_xrv_input(images, size=self.resolution)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.features2(x)


BACKBONES: dict[str, Callable[..., FeatureBackbone]] = {
    "inception-v3": InceptionV3Backbone,
    "xrv-densenet": XRVDenseNetBackbone,
}


def load_backbone(name: str, **kwargs: Any) -> FeatureBackbone:
    """Build a named backbone ("inception-v3" or "xrv-densenet"); raises BackboneUnavailableError without weights."""
    if name not in BACKBONES:
        raise MetricInputError(f"Unknown FID backbone {name!r}; choose one of {', '.join(BACKBONES)} or wrap a function in CallableBackbone.")
    return BACKBONES[name](**kwargs)
