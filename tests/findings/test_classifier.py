"""Classifier findings: xrv input convention, Findings contract, weight sources, unavailable state, chart."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch

from codixr.errors import InputError
from codixr.findings import classifier as C
from codixr.findings.plots import figure_to_image, findings_chart
from codixr.findings.result import XRV_SOURCE, ZERO_SHOT_SOURCE, Findings
from codixr.modality import PATHOLOGIES

TINY = {"growth_rate": 4, "block_config": [1, 1, 1, 1], "num_init_features": 8, "bn_size": 2}



@pytest.fixture
def no_weights(tmp_path, monkeypatch):
    """No official weights (xrv cache under an empty HOME), no trained classifier, downloads forbidden."""
    xrv = C.import_xrv()
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv(C.ENV_XRV_WEIGHTS, raising=False)
    monkeypatch.setenv(C.ENV_CLASSIFIER, str(tmp_path / "no-classifier"))

    def refuse(*args, **kwargs):
        raise AssertionError("torchxrayvision tried to download weights")

    monkeypatch.setattr(xrv.utils, "download", refuse)
    C.clear_cache()
    yield tmp_path
    C.clear_cache()


def smooth_image(h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return (0.5 + 0.4 * np.sin(yy / 17.0) * np.cos(xx / 23.0)).astype(np.float32)


# ------------------------------------------------------------------ preprocessing
def test_xrv_scaling_of_hand_made_images():
    ones = C.to_xrv_input(np.ones((300, 200), np.float32))
    zeros = C.to_xrv_input(np.zeros((180, 260), np.float32))
    assert ones.shape == zeros.shape == (1, 1, 224, 224)
    torch.testing.assert_close(ones, torch.full_like(ones, 1024.0), rtol=0, atol=1e-3)
    torch.testing.assert_close(zeros, torch.full_like(zeros, -1024.0), rtol=0, atol=1e-3)
    half = C.to_xrv_input(np.full((224, 224), 0.5, np.float32))
    assert torch.all(half.abs() < 1e-3)


def test_center_crop_and_scale_match_torchxrayvision():
    xrv = C.import_xrv()
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, size=(301, 224)).astype(np.uint8)  # odd tall image: crop only, no resize
    ours = C.to_xrv_input(img / 255.0)[0].numpy()
    theirs = xrv.datasets.XRayCenterCrop()(xrv.utils.normalize(img.astype(np.float32), 255)[None])
    np.testing.assert_allclose(ours, theirs, atol=1e-3)
    # Non-square input with distinct borders: the crop keeps the centre only.
    framed = np.ones((400, 224), np.float32)
    framed[88:312] = 0.0
    assert torch.all(C.to_xrv_input(framed) == -1024.0)
    # Resizing agrees with xrv's own resizer on a smooth image (different interpolation code, same result).
    big = smooth_image(500, 640)
    ref = xrv.datasets.XRayResizer(224)(xrv.datasets.XRayCenterCrop()(xrv.utils.normalize(big * 255, 255)[None]))
    assert np.abs(C.to_xrv_input(big)[0].numpy() - ref).mean() < 2.0


def test_as_image_array_accepts_common_types_and_refuses_wrong_ranges():
    from PIL import Image

    u8 = (smooth_image(64, 80) * 255).round().astype(np.uint8)
    expected = u8.astype(np.float32) / 255
    np.testing.assert_allclose(C.as_image_array(u8), expected)
    np.testing.assert_allclose(C.as_image_array(Image.fromarray(u8)), expected)
    np.testing.assert_allclose(C.as_image_array(np.stack([u8] * 3, -1)), expected, atol=1e-6)
    np.testing.assert_allclose(C.as_image_array(torch.from_numpy(expected)[None]), expected)
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        C.as_image_array(u8.astype(np.float32))  # 0..255 floats: the classic scaling mistake
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        C.to_xrv_input(torch.full((32, 32), -1024.0))
    with pytest.raises(InputError):
        C.as_image_array(np.zeros((2, 3, 4, 5)))


# ------------------------------------------------------------------ model
def settle_batchnorm(clf: C.XRVClassifier, n: int = 4) -> None:
    """Give an untrained network BatchNorm statistics (as any trained one has), so eval mode does not saturate."""
    for m in clf.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # cumulative average
    clf.train()
    with torch.no_grad():
        clf(torch.rand(n, 1, 224, 224))
    clf.eval()


def test_gradients_flow_from_output_to_input_image():
    torch.manual_seed(0)
    clf = C.XRVClassifier(C.build_densenet(["Effusion", "Pneumonia"], [0.1, 0.2]), "test")
    settle_batchnorm(clf)
    image = torch.rand(1, 1, 240, 260, requires_grad=True)
    clf(image)[:, 0].sum().backward()
    assert image.grad is not None and image.grad.shape == image.shape
    assert image.grad.abs().sum() > 0


def test_trained_folder_round_trip(tmp_path, no_weights, monkeypatch):
    torch.manual_seed(0)
    targets = ["Atelectasis", "Effusion", "", "Fracture"]
    clf = C.XRVClassifier(C.build_densenet(targets, [0.3, 0.2, None, 0.4], TINY), "CoDiXR-trained DenseNet (test)", 64)
    image = smooth_image(90, 70)
    before = clf.predict(image, include_extra=True)
    clf.save_pretrained(tmp_path / "fp32", dtype=torch.float32, note="unit test")
    loaded = C.XRVClassifier.from_pretrained(tmp_path / "fp32")
    after = loaded.predict(image, include_extra=True)
    assert after.to_dict() == before.to_dict()
    assert loaded.targets == targets and loaded.image_size == 64 and loaded.card["note"] == "unit test"
    assert after.scores["Cardiomegaly"] is None and after.scores["Pleural Effusion"] is not None
    assert set(after.extra_scores) == {"Fracture"}
    config = json.loads((tmp_path / "fp32" / "config.json").read_text())
    assert config["op_threshs"][2] is None and config["densenet"] == TINY
    # Half-precision storage (the shipped format) gives nearly the same scores.
    clf.save_pretrained(tmp_path / "fp16")
    half = C.XRVClassifier.from_pretrained(tmp_path / "fp16").predict(image)
    assert (tmp_path / "fp16" / "model.safetensors").stat().st_size < (tmp_path / "fp32" / "model.safetensors").stat().st_size
    for p in PATHOLOGIES:
        assert (half.scores[p] is None) == (before.scores[p] is None)
        if half.scores[p] is not None:
            assert half.scores[p] == pytest.approx(before.scores[p], abs=2e-2)
    # The same folder through the public API, found via CODIXR_CLASSIFIER, cached after the first load.
    monkeypatch.setenv(C.ENV_CLASSIFIER, str(tmp_path / "fp32"))
    found = C.classify(image, source="auto")
    assert found.available and found.source == "CoDiXR-trained DenseNet (test)"
    assert found.scores == before.scores
    assert C.load_classifier("trained") is C.load_classifier("auto")


def test_official_weights_file_is_read_from_xrv_cache(no_weights):
    """A file in torchxrayvision's release format (a pickled DenseNet) at its cache path is used as-is."""
    xrv = C.import_xrv()
    torch.manual_seed(0)
    reference = xrv.models.DenseNet(weights=None)  # 18 outputs, the layout of densenet121-res224-all
    path = C.xrv_weights_path()
    assert str(path).startswith(str(no_weights / "home" / ".torchxrayvision" / "models_data"))
    path.parent.mkdir(parents=True)
    torch.save(reference, path)
    image = smooth_image(256, 256)
    found = C.classify(image, source="xrv", include_extra=True)
    assert found.available and found.source == XRV_SOURCE
    assert all(found.scores[p] is not None for p in PATHOLOGIES)  # the 'all' model assesses all ten
    assert {"Fracture", "Hernia", "Pleural Thickening"} <= set(found.extra_scores)
    # Same numbers as torchxrayvision's own forward with its operating thresholds (sigmoid + op_norm).
    reference.eval()
    reference.op_threshs = torch.tensor(xrv.models.model_urls[C.XRV_WEIGHTS]["op_threshs"], dtype=torch.float32)
    with torch.no_grad():
        expected = dict(zip(reference.targets, reference(C.to_xrv_input(image))[0].tolist()))
    assert found.scores["Pleural Effusion"] == pytest.approx(expected["Effusion"], abs=1e-5)
    assert found.scores["Lung Opacity"] == pytest.approx(expected["Lung Opacity"], abs=1e-5)
    assert found.thresholds["Pneumonia"] == 0.5
    assert found.operating_points["Pneumonia"] == pytest.approx(0.056810737)


# ------------------------------------------------------------------ unavailable state
def test_absent_weights_give_documented_state_without_network(no_weights, monkeypatch):
    image = smooth_image(128, 128)
    for source in ("xrv", "trained", "auto"):
        found = C.classify(image, source=source)
        assert isinstance(found, Findings) and not found.available
        assert list(found.scores) == list(PATHOLOGIES) and all(v is None for v in found.scores.values())
        assert found.positive == ()
    xrv_msg = C.classify(image, source="xrv").message
    assert "densenet121-res224-all are not installed" in xrv_msg and C.ENV_XRV_WEIGHTS in xrv_msg
    assert "not available" in xrv_msg
    assert C.ENV_CLASSIFIER in C.classify(image, source="trained").message
    with pytest.raises(C.ClassifierUnavailable, match="not installed"):
        C.XRVClassifier.load("xrv")
    monkeypatch.setenv(C.ENV_XRV_WEIGHTS, str(no_weights / "missing.pt"))
    assert "CODIXR_XRV_WEIGHTS points to" in C.classify(image, source="xrv").message
    with pytest.raises(InputError, match="Unknown findings source"):
        C.classify(image, source="chexnet")


def test_corrupt_weights_file_is_reported_not_raised(no_weights, monkeypatch):
    bad = no_weights / "broken.pt"
    bad.write_bytes(b"not a torch file")
    monkeypatch.setenv(C.ENV_XRV_WEIGHTS, str(bad))
    found = C.classify(smooth_image(64, 64), source="xrv")
    assert not found.available and "could not be read" in found.message


def test_zero_shot_unavailable_without_model_or_scorer(monkeypatch):
    image = smooth_image(64, 64)
    no_pipe = C.classify(image, source="zero-shot")
    assert not no_pipe.available and no_pipe.source == ZERO_SHOT_SOURCE and "pipe" in no_pipe.message
    monkeypatch.setitem(sys.modules, "codixr.findings.zero_shot", None)  # makes the import fail
    no_scorer = C.classify(image, pipe=object(), source="zero_shot")
    assert not no_scorer.available and "not available" in no_scorer.message
    assert C.classify_all(image)["zero_shot"] is None


# ------------------------------------------------------------------ Findings and chart
def test_findings_contract():
    f = Findings(scores={"Pneumonia": 0.7, "Edema": float("nan"), "Lung Opacity": 0.2, "Atelectasis": 0.9},
                 thresholds={"Pneumonia": 0.5, "Lung Opacity": 0.5, "Atelectasis": 0.5}, source="s",
                 validation_auroc={"Pneumonia": 0.85, "Lung Opacity": 0.72, "Atelectasis": 0.50})
    assert list(f.scores) == list(PATHOLOGIES)
    assert f.scores["Edema"] is None and f.scores["Cardiomegaly"] is None
    assert f.positive == ("Pneumonia",) and "Edema" in f.not_assessed and "Lung Opacity" not in f.not_assessed
    assert f.not_validated == ("Atelectasis",)  # above its threshold, but validated at chance: no call
    assert [f.status(p) for p in ("Pneumonia", "Lung Opacity", "Atelectasis", "Edema")] == \
        ["positive", "negative", "not validated", "not assessed"]
    d = json.loads(json.dumps(f.to_dict()))
    assert d["scores"]["Cardiomegaly"] is None and d["positive"] == ["Pneumonia"]
    assert d["status"]["Atelectasis"] == "not validated" and d["validation_auroc"]["Cardiomegaly"] is None
    with pytest.raises(ValueError, match="extra_scores"):
        Findings(scores={"Fracture": 0.4}, source="s")


def test_chart_renders_bars_and_not_assessed():
    assessed = Findings(scores={"Pneumonia": 0.8, "Lung Opacity": 0.3},
                        thresholds={"Pneumonia": 0.5, "Lung Opacity": 0.5}, source="reader A")
    missing = Findings.unavailable("reader B", "weights are not installed")
    fig = findings_chart([assessed, missing])
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert texts.count("not assessed") == 8
    assert any("not installed" in t for t in texts)
    assert len(fig.axes[0].patches) == 2 and [ax.get_title() for ax in fig.axes] == ["reader A", "reader B"]
    image = figure_to_image(fig)
    assert image.mode == "RGB" and image.size[0] > 300 and image.size[1] > 200
    assert np.asarray(image).std() > 0


def test_half_precision_storage_keeps_values_float16_cannot_hold(tmp_path, no_weights):
    """BatchNorm running variances after [-1024, 1024] inputs reach ~1e5; float16 would store them as inf."""
    torch.manual_seed(0)
    clf = C.XRVClassifier(C.build_densenet(["Effusion", "Pneumonia"], [0.1, 0.2], TINY), "test", 64)
    with torch.no_grad():
        clf.model.features.norm0.running_var.fill_(2.5e5)
    image = smooth_image(90, 70)
    before = clf.predict(image)
    clf.save_pretrained(tmp_path / "fp16")
    from safetensors.torch import load_file

    state = load_file(tmp_path / "fp16" / "model.safetensors")
    assert state["features.norm0.running_var"].dtype == torch.float32
    assert torch.isfinite(state["features.norm0.running_var"]).all()
    assert state["features.conv0.weight"].dtype == torch.float16
    after = C.XRVClassifier.from_pretrained(tmp_path / "fp16").predict(image)
    for p in PATHOLOGIES:
        if before.scores[p] is not None:
            assert after.scores[p] == pytest.approx(before.scores[p], abs=2e-2)
