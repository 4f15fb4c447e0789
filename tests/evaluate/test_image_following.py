"""The image following tables (issue 13): pixel measures, separation AUROC, view reader, n/a paths, the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from codixr.evaluate import image_following as imf
from codixr.evaluate.data import EvalData, EvalItem, load_eval_data
from codixr.modality import Modality
from tests.evaluate.conftest import _chest


def _images(n: int = 4, size: int = 48, seed: int = 0) -> np.ndarray:
    """Radiograph-like images with fine texture (so that a blur removes high frequencies), in [0, 1]."""
    rng = np.random.default_rng(seed)
    return np.stack([_chest(rng, size) for _ in range(n)]).astype(np.float64) / 255.0


@pytest.fixture
def reader(tiny_classifier):
    from codixr.findings.classifier import XRVClassifier

    return imf.ClassifierReader(XRVClassifier.from_pretrained(tiny_classifier))


@pytest.fixture(scope="module")
def pipe():
    from codixr.testing import tiny_pipeline

    return tiny_pipeline()


# ------------------------------------------------------------------------------------------ pixels


def test_psnr_of_identity_is_inf_and_of_a_blur_lower():
    x = _images()
    assert np.isinf(imf.psnr(x, x)).all() and imf.pixel_row(x, x)["psnr_db"] == float("inf")
    blurred = imf.gaussian_blur(x, 3.0)
    assert np.isfinite(imf.psnr(x, blurred)).all() and imf.pixel_row(x, blurred)["psnr_db"] < 40
    assert imf.psnr(x, imf.gaussian_blur(x, 1.0)).mean() > imf.psnr(x, blurred).mean()  # more blur, lower PSNR


def test_high_frequency_ratio_is_one_for_identity_and_below_one_for_a_blur():
    x = _images()
    assert imf.hf_ratio(x, x) == pytest.approx(1.0)
    assert imf.hf_ratio(x, imf.gaussian_blur(x, 3.0)) < 0.1
    assert imf.hf_ratio(x, imf.gaussian_blur(x, 1.0)) > imf.hf_ratio(x, imf.gaussian_blur(x, 3.0))


def test_autoencoder_table_on_the_tiny_vae(pipe):
    table = imf.autoencoder_table(pipe.vae, _images(2, 64))
    assert table["n"] == 2 and table["size"] == 64
    assert table["blur"]["hf_ratio"] < 1 and np.isfinite(table["vae"]["psnr_db"])
    assert imf.autoencoder_table(pipe.vae, np.zeros((0, 64, 64)))["na"]


# ------------------------------------------------------------------------------------------ separation


def test_auroc_of_a_perfectly_separating_score_is_one():
    assert imf.separation_auroc([0.9, 0.8, 0.7], [0.1, 0.2]) == 1.0
    assert imf.separation_auroc([0.1, 0.2], [0.9, 0.8, 0.7]) == 0.0
    assert imf.separation_auroc([0.5, 0.5], [0.5, 0.5]) == 0.5
    assert np.isnan(imf.separation_auroc([], [0.1]))
    assert imf.auroc_standard_error(1.0, 16, 16) == 0.0
    assert 0.05 < imf.auroc_standard_error(0.75, 16, 16) < 0.1 > imf.auroc_standard_error(0.75, 64, 64)


def test_separation_row_reads_the_classifier_and_says_what_it_lacks(reader):
    x = _images(3, 64)
    row = imf.separation_row(reader, x, x[::-1], imf.OPACITY_OUTPUTS, 0.8)
    assert row["n_positive"] == row["n_negative"] == 3 and row["auroc"] == pytest.approx(0.5)
    assert row["outputs"] == ["Lung Opacity", "Pneumonia"] and set(row["real_validation_auroc"]) == set(row["outputs"])
    assert "no Pneumothorax output" in imf.separation_row(reader, x, x, ("Pneumothorax",))["na"]


def test_feature_frechet_distance_ranks_a_blur_and_itself(reader):
    x, y = _images(6, 64, seed=1), _images(6, 64, seed=2)
    table = imf.feature_fid_table(reader, x, y, imf.gaussian_blur(y, 3.0))
    assert table["n"] == 6 and table["real"] >= 0 and table["blur"] >= 0
    assert table["generated"] == pytest.approx(table["blur"])  # "generated" = the same blur here
    assert "at least 2" in imf.feature_fid_table(reader, x[:1], y, y)["na"]


# ------------------------------------------------------------------------------------------ views


def test_view_reader_separates_frontal_like_from_lateral_like(reader):
    rng = np.random.default_rng(0)

    def views(n, lateral):
        return np.stack([_chest(rng, 64, lateral=lateral) for _ in range(n)]).astype(np.float64) / 255.0

    train = {Modality.FRONTAL: views(12, False), Modality.LATERAL: views(12, True)}
    validation = {Modality.FRONTAL: views(6, False), Modality.LATERAL: views(6, True)}
    outputs = {"T→F": (Modality.FRONTAL, views(5, False)), "T→L": (Modality.LATERAL, views(5, True)),
               "F→L": (Modality.LATERAL, views(5, False)), "L→F": (Modality.FRONTAL, "no real validation laterals")}
    table = imf.view_table(reader, train, validation, outputs)
    assert table["train"] == {"frontal": 12, "lateral": 12}
    assert table["real"]["frontal"]["accuracy"] == 1.0 and table["real"]["lateral"]["accuracy"] == 1.0
    assert table["generated"]["T→F"]["share"] == 1.0 and table["generated"]["T→L"]["share"] == 1.0
    assert table["generated"]["F→L"]["share"] == 0.0  # frontal-like images asked to be lateral
    assert table["generated"]["L→F"]["na"] == "no real validation laterals"
    assert "both views" in imf.view_table(reader, {Modality.FRONTAL: train[Modality.FRONTAL]}, validation, outputs)["na"]


# ------------------------------------------------------------------------------------------ conditioning gap


@pytest.mark.parametrize("modality", [Modality.FRONTAL, Modality.LATERAL])
@pytest.mark.parametrize("with_adapter", [False, True])
def test_conditioning_gap_of_the_image_flows_with_and_without_an_adapter(pipe, modality, with_adapter, monkeypatch):
    """A flow with a condition adapter (tokens + pooled condition in the time embedding, learned null) and one
    without (the first bundled model's single token, zero null, no class embedding) both give a gap."""
    from diffusers import UNet2DConditionModel

    from codixr.evaluate.following import conditioning_gap
    from codixr.models.conditioning import ConditionAdapter

    config = {k: v for k, v in pipe.flow(modality).config.items() if not k.startswith("_")}
    config.update(class_embed_type="projection" if with_adapter else None,
                  projection_class_embeddings_input_dim=32 if with_adapter else None, cross_attention_dim=32)
    torch.manual_seed(0)
    flow = UNet2DConditionModel(**config).eval()
    adapter = ConditionAdapter(condition_dim=32, cross_attention_dim=32, num_tokens=2, hidden_dim=32).eval() \
        if with_adapter else None
    monkeypatch.setattr(type(pipe), "flow", lambda self, m: flow)
    monkeypatch.setattr(type(pipe), "condition_adapter", lambda self, m: adapter)
    latents = torch.randn(3, config["in_channels"], 16, 16, generator=torch.Generator().manual_seed(0))
    conditions = torch.nn.functional.normalize(torch.randn(3, 32, generator=torch.Generator().manual_seed(1)), dim=-1)
    gap = conditioning_gap(pipe, modality, latents, conditions, timesteps=(100, 900))
    assert gap["modality"] == modality.value and gap["adapter"] is with_adapter and gap["n"] == 3
    assert [r["t"] for r in gap["rows"]] == [100, 900]
    assert all(r["null_gap"] > 0 and r["swap_gap"] > 0 for r in gap["rows"])


# ------------------------------------------------------------------------------------------ all of them


def test_image_tables_run_on_the_tiny_pipeline(pipe, mimic_root, reader, tmp_path):
    data = load_eval_data(mimic_root)
    block = imf.image_following_tables(pipe, data, n=2, n_fid=2, out_dir=tmp_path, reader=reader)
    assert block["n"] == 2 and block["reader"] == reader.source and block["wall_time_s"] > 0
    assert block["autoencoder"]["n"] == 4  # 2n real frontals asked for; the fixture's test split has 4
    labels = block["labels_to_frontal"]
    assert set(labels) == {s.name for s in imf.LABEL_SEPARATIONS}
    assert labels["Lung Opacity + Pneumonia"]["n_positive"] == labels["Lung Opacity + Pneumonia"]["n_negative"] == 2
    assert 0 <= labels["Cardiomegaly"]["auroc"] <= 1 and 0 <= labels["Pleural Effusion"]["auroc"] <= 1
    # The fixture's test impressions read normal, cardiomegaly, effusion: no opacity impression for T->F
    assert "asserting" in block["text_to_frontal"]["na"]
    assert block["frechet"]["n"] == 2 and "generated" in block["frechet"]
    views = block["views"]
    assert views["train"] == {"frontal": 4, "lateral": 4}
    assert set(views["generated"]) == {"T→F", "labels→F", "L→F", "T→L", "F→L"}
    assert views["generated"]["labels→F"]["n"] == 8 and views["generated"]["T→F"]["n"] == 2
    for rel in block["grids"].values():
        assert (tmp_path / rel).is_file() and rel.startswith("plots/following_")
    md = "\n".join(imf.image_following_markdown(block))
    for text in ("**Autoencoder**", "**labels→F**", "**T→F**: n/a", "Fréchet distance", "**View checks**",
                 "σ = 3 px blur", "![real validation frontals"):
        assert text in md, text


def test_without_classifier_or_laterals_the_tables_say_why(pipe, tmp_path):
    import PIL.Image

    rng = np.random.default_rng(0)
    items = []
    for i in range(3):
        path = tmp_path / f"{i}.png"
        PIL.Image.fromarray(_chest(rng, 64)).save(path)
        items.append(EvalItem(key=str(i), source="x", frontal=str(path)))
    texts = [EvalItem(key="t", source="x", text="Right lower lobe pneumonia.", text_kind="impression"),
             EvalItem(key="u", source="x", text="No acute cardiopulmonary process.", text_kind="impression")]
    data = EvalData("public", "", "validate", items, texts, [], train_studies=items)
    block = imf.image_following_tables(pipe, data, n=2, n_fid=2, reader="the findings classifier is not available: test")
    assert block["autoencoder"]["n"] == 3
    for name in ("labels_to_frontal", "text_to_frontal", "frechet", "views"):
        assert "not available" in block[name]["na"], name
    md = "\n".join(imf.image_following_markdown(block))
    assert "**View checks**: n/a (the findings classifier is not available" in md
    assert imf.training_views(data, pipe, 4)[Modality.LATERAL].shape[0] == 0  # no lateral anywhere


def test_following_only_runs_the_image_tables_from_the_cli(tiny_model, mimic_root, tiny_classifier, tmp_path,
                                                          monkeypatch):
    from codixr.evaluate.cli import main
    from codixr.findings import clear_cache

    monkeypatch.setenv("CODIXR_CLASSIFIER", str(tiny_classifier))
    clear_cache()
    out = tmp_path / "follow"
    argv = ["--model", str(tiny_model), "--data", str(mimic_root), "--out", str(out), "--following", "only",
            "--n-following", "4", "--threads", "1", "--no-progress"]
    assert main([*argv, "--n-image-following", "2", "--n-fid-following", "2"]) == 0
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    block = results["following"]
    assert set(block["conditioning_gap"]) == {"report", "frontal", "lateral"}
    assert all(isinstance(block["conditioning_gap"][v]["adapter"], bool) for v in ("frontal", "lateral"))
    image = block["image"]
    assert image["labels_to_frontal"]["Lung Opacity + Pneumonia"]["n_positive"] == 2
    md = (out / "results.md").read_text(encoding="utf-8")
    assert "Conditioning gap of the lateral flow" in md and "Do the images follow their input?" in md
    assert all((out / rel).is_file() for rel in image["grids"].values())
    assert main([*argv, "--n-image-following", "0"]) == 0
    skipped = json.loads((out / "results.json").read_text(encoding="utf-8"))["following"]["image"]
    assert "not run" in skipped["na"]
