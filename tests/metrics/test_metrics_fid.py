"""FID: the closed form, the self-distance, the backbones and their offline behaviour."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from codixr.errors import CoDiXRError
from codixr.metrics import fid as fid_module
from codixr.metrics.errors import BackboneUnavailableError, MetricInputError
from codixr.metrics.fid import (
    CallableBackbone,
    FeatureBackbone,
    InceptionV3Backbone,
    XRVDenseNetBackbone,
    compute_fid,
    extract_features,
    fid_from_features,
    frechet_distance,
)

# Two Gaussians with diagonal covariances: FID = ||mu1 - mu2||^2 + sum_k (a_k + b_k - 2 sqrt(a_k b_k)).
MU1, VAR1 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 4.0, 9.0])
MU2, VAR2 = np.array([1.0, 1.0, 0.0]), np.array([4.0, 1.0, 1.0])
# ||mu1 - mu2||^2 = 1 + 0 + 4 = 5; traces: (1 + 4 - 2*2) + (4 + 1 - 2*2) + (9 + 1 - 2*3) = 1 + 1 + 4 = 6.
CLOSED_FORM = 11.0


def test_frechet_distance_matches_closed_form_for_diagonal_covariances():
    assert frechet_distance(MU1, np.diag(VAR1), MU2, np.diag(VAR2)) == pytest.approx(CLOSED_FORM, abs=1e-9)


def test_frechet_distance_is_rotation_invariant():
    # Rotating both Gaussians by the same orthogonal matrix gives full (non-diagonal) covariances, same distance.
    q, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(3, 3)))
    value = frechet_distance(q @ MU1, q @ np.diag(VAR1) @ q.T, q @ MU2, q @ np.diag(VAR2) @ q.T)
    assert value == pytest.approx(CLOSED_FORM, abs=1e-8)


def test_fid_of_sampled_gaussians_approaches_closed_form():
    rng = np.random.default_rng(1)
    a = MU1 + rng.normal(size=(40_000, 3)) * np.sqrt(VAR1)
    b = MU2 + rng.normal(size=(40_000, 3)) * np.sqrt(VAR2)
    assert fid_from_features(a, b).value == pytest.approx(CLOSED_FORM, rel=0.03)


def test_fid_of_a_feature_set_against_itself_is_zero():
    feats = np.random.default_rng(2).normal(size=(300, 16))
    result = fid_from_features(feats, feats, backbone="test")
    assert abs(result.value) < 1e-6
    assert (result.backbone, result.n_real, result.n_fake) == ("test", 300, 300)


def test_fid_with_fewer_samples_than_dimensions_is_finite():
    rng = np.random.default_rng(3)
    result = fid_from_features(rng.normal(size=(10, 32)), rng.normal(size=(10, 32)) + 1.0)
    assert np.isfinite(result.value) and result.value > 0


def _pool_features(images: torch.Tensor) -> torch.Tensor:
    """A real (if tiny) feature extractor: 2x2 average pooling of an 8x8 image -> 16 features."""
    return torch.nn.functional.adaptive_avg_pool2d(images, 4).flatten(1)


def test_callable_backbone_end_to_end():
    torch.manual_seed(0)
    real = torch.rand(40, 1, 8, 8)
    fake = (real * 0.5).numpy()[:, 0]  # (N, H, W) numpy input is accepted too
    backbone = CallableBackbone("pool4x4", _pool_features)
    assert isinstance(backbone, FeatureBackbone)

    same = compute_fid(real, real, backbone, batch_size=7)
    assert abs(same.value) < 1e-6 and same.backbone == "pool4x4"

    result = compute_fid(real, fake, backbone, batch_size=16)
    expected = fid_from_features(_pool_features(real).double().numpy(), _pool_features(torch.from_numpy(fake)[:, None]).double().numpy())
    assert result.value == pytest.approx(expected.value, rel=1e-6)
    assert result.value > 0.1
    assert (result.n_real, result.n_fake, backbone.dim) == (40, 40, 16)
    assert result.to_dict()["backbone"] == "pool4x4"


@pytest.mark.parametrize(
    "images, message",
    [
        (np.full((2, 1, 4, 4), 1.5), "[0, 1]"),
        (np.zeros((2, 3, 4, 4)), "grayscale"),
        (np.zeros((2, 1, 4, 4), dtype=np.uint8), "floats"),
        (np.full((2, 4, 4), np.nan), "[0, 1]"),
    ],
)
def test_images_are_validated(images, message):
    with pytest.raises(MetricInputError, match=message.replace("[", r"\[").replace("]", r"\]")):
        extract_features(images, CallableBackbone("id", lambda x: x.flatten(1)))


def test_backbone_with_wrong_output_shape_is_reported():
    with pytest.raises(MetricInputError, match="returned features"):
        extract_features(np.zeros((3, 4, 4)), CallableBackbone("bad", lambda x: np.zeros((2, 5))))


def test_inception_backbone_without_weights_raises_typed_error(tmp_path, monkeypatch):
    monkeypatch.delenv(fid_module.INCEPTION_WEIGHTS_ENV, raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # torch hub cache -> empty folder
    with pytest.raises(BackboneUnavailableError) as info:
        InceptionV3Backbone()
    assert str(tmp_path) in str(info.value) and fid_module.INCEPTION_WEIGHTS_ENV in str(info.value)
    assert isinstance(info.value, CoDiXRError)

    monkeypatch.setenv(fid_module.INCEPTION_WEIGHTS_ENV, str(tmp_path / "missing.pth"))
    with pytest.raises(BackboneUnavailableError, match="missing.pth"):
        fid_module.load_backbone("inception-v3")


def test_xrv_backbone_without_weights_raises_typed_error(tmp_path, monkeypatch):
    monkeypatch.delenv(fid_module.XRV_WEIGHTS_ENV, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # torchxrayvision's cache is ~/.torchxrayvision/models_data
    with pytest.raises(BackboneUnavailableError) as info:
        XRVDenseNetBackbone()
    assert str(tmp_path) in str(info.value) and fid_module.XRV_WEIGHTS_ENV in str(info.value)
    assert not (tmp_path / ".torchxrayvision" / "models_data").exists()  # nothing was created or fetched

    monkeypatch.setenv(fid_module.XRV_WEIGHTS_ENV, str(tmp_path / "nope.pt"))
    with pytest.raises(BackboneUnavailableError, match="nope.pt"):
        XRVDenseNetBackbone()


def test_xrv_backbone_loads_a_local_file_under_any_name(tmp_path, monkeypatch):
    # A torchxrayvision DenseNet saved in its own format (a pickled module) with seeded random weights.
    from codixr.findings.classifier import import_xrv

    xrv = import_xrv()
    torch.manual_seed(0)
    path = tmp_path / "my-xrv-weights.pt"
    torch.save(xrv.models.DenseNet(weights=None), path)
    monkeypatch.setenv(fid_module.XRV_WEIGHTS_ENV, str(path))
    backbone = XRVDenseNetBackbone(device="cpu")
    assert backbone.name == "xrv-densenet121-res224-all" and backbone.dim == 1024
    x = backbone.preprocess(torch.rand(2, 1, 100, 80))
    assert x.shape == (2, 1, 224, 224) and -1024 <= x.min() and x.max() <= 1024
    feats = backbone(torch.rand(1, 1, 64, 64))
    assert feats.shape == (1, 1024) and feats.dtype == np.float64 and np.isfinite(feats).all()


@pytest.mark.slow  # builds, saves (100 MB) and runs a full Inception-v3
def test_inception_backbone_loads_a_local_state_dict(tmp_path):
    from torchvision.models import inception_v3

    torch.manual_seed(0)
    path = tmp_path / "inception.pth"
    torch.save(inception_v3(weights=None, aux_logits=True, init_weights=False).state_dict(), path)
    backbone = InceptionV3Backbone(weights_path=path, device="cpu")
    assert backbone.preprocess(torch.rand(2, 1, 64, 64)).shape == (2, 3, 299, 299)
    feats = backbone(torch.rand(2, 1, 64, 64))
    assert feats.shape == (2, 2048) and np.isfinite(feats).all()

    bad = tmp_path / "bad.pth"
    torch.save({"weight": torch.zeros(1)}, bad)
    with pytest.raises(BackboneUnavailableError, match="not a torchvision Inception-v3"):
        InceptionV3Backbone(weights_path=bad)
