"""G_F / G_L conditioning (issue 13): the flow follows its condition, the adapter travels in packages, the image
condition sampler pairs images only with label-matched impressions, and continuing an old UNet changes nothing."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler, UNet2DConditionModel

from codixr.modality import CONDITION_LABELS, NO_FINDING, Modality
from codixr.models.conditioning import ConditionAdapter, condition_flow
from codixr.models.configs import SD_SCHEDULER, build_condition_adapter, get_config
from training.image_conditions import KINDS, LOW_RESOLUTION_SOURCES, ImageConditionSampler, impression_bridge
from training.stage2_unet import UNetModule, initial_flow, sample_latents, with_class_embedding

TINY = get_config("tiny")


def _blob(sign: float, n: int) -> torch.Tensor:
    """(n, 4, 16, 16) latents: a centred square at +-1.5 on a zero background."""
    z = torch.zeros(n, 4, 16, 16)
    z[:, :, 5:11, 5:11] = 1.5 * sign
    return z


def _centre(z: torch.Tensor) -> torch.Tensor:
    return z[:, :, 5:11, 5:11].mean(dim=(1, 2, 3))


@pytest.fixture(scope="module")
def trained_blob_flow():
    """A tiny G_F + adapter trained 300 steps through ``UNetModule`` on bright vs dark blobs, one condition each."""
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**TINY["unet"])
    adapter = build_condition_adapter(TINY, "frontal")
    d = TINY["prompt_encoder"]["projection_dim"]
    conds = torch.nn.functional.normalize(torch.randn(2, d), dim=-1)
    n = 16
    latents = torch.cat([_blob(1.0, n), _blob(-1.0, n)])
    embeddings = torch.cat([conds[0].expand(n, -1), conds[1].expand(n, -1)])
    sampler = ImageConditionSampler(embeddings, np.zeros((2 * n, len(CONDITION_LABELS)), np.float32), None, None,
                                    None, np.zeros(2 * n, bool), weights={"image": 1.0})
    module = UNetModule(unet, adapter, DDPMScheduler(**SD_SCHEDULER), sampler, latents,
                        torch.full_like(latents, 0.05), 1.0, dropout=0.2)
    params = [p for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=2e-3, weight_decay=0.0)
    for step in range(300):
        generator = torch.Generator().manual_seed(step)
        idx = torch.randperm(2 * n, generator=generator)[:16].numpy()
        loss, _ = module({"indices": idx}, generator=generator)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return unet.eval(), adapter.eval(), conds


def test_a_tiny_g_f_follows_its_condition_and_the_null_ignores_it(trained_blob_flow):
    unet, adapter, conds = trained_blob_flow
    bright = _centre(sample_latents(unet, conds[0].expand(4, -1), adapter, steps=10, guidance=3.0, seed=0))
    dark = _centre(sample_latents(unet, conds[1].expand(4, -1), adapter, steps=10, guidance=3.0, seed=0))
    # same noise, opposite blobs: every seed row is brighter with the bright condition, and the sets straddle 0
    assert (bright - dark > 0.5).all() and bright.mean() > 0.3 and dark.mean() < -0.3, (bright, dark)
    # a dropped condition is the learned null, whichever condition was dropped
    drop = torch.ones(2, dtype=torch.bool)
    null_a, null_b = condition_flow(adapter, conds, drop=drop).kwargs().values()
    assert torch.equal(null_a[0], null_a[1]) and torch.equal(null_b[0], null_b[1])
    # and the denoiser reads the condition at high noise: from the same z_t, its clean-latent estimate has the
    # blob the condition asks for
    alphas = DDPMScheduler(**SD_SCHEDULER).alphas_cumprod
    z_t = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(1))
    for step in (500, 900):
        t, a = torch.tensor([step, step]), alphas[step]
        with torch.no_grad():
            eps = unet(z_t, t, **condition_flow(adapter, conds).kwargs()).sample
        x0 = _centre((z_t - (1 - a).sqrt() * eps) / a.sqrt())
        print("clean-latent centre, bright vs dark condition, t =", step, x0.tolist())
        assert x0[0] - x0[1] > 0.05, (step, x0)


def test_the_frontal_adapter_round_trips_inside_a_tiny_pipeline(tmp_path):
    from codixr.pipeline import CoDiXRPipeline
    from codixr.testing import tiny_pipeline

    pipe = tiny_pipeline()
    assert pipe.unet_frontal.config.class_embed_type == "projection"
    with torch.no_grad():
        pipe.condition_frontal.low_resolution.normal_()
    pipe.condition_frontal.register_to_config(guidance_scale=3.5)
    pipe.save_pretrained(tmp_path / "pkg")
    loaded = CoDiXRPipeline.from_pretrained(tmp_path / "pkg")
    loaded.set_progress_bar_config(disable=True)
    assert isinstance(loaded.condition_frontal, ConditionAdapter) and isinstance(loaded.condition_lateral,
                                                                                 ConditionAdapter)
    assert loaded.default_guidance_scale(Modality.FRONTAL) == 3.5
    for name, tensor in pipe.condition_frontal.state_dict().items():
        assert torch.equal(tensor, loaded.condition_frontal.state_dict()[name]), name
    a = pipe(labels=["Pneumonia"], outputs="frontal", num_inference_steps=2, seed=0).frontal
    b = loaded(labels=["Pneumonia"], outputs="frontal", num_inference_steps=2, seed=0).frontal
    assert np.array_equal(np.asarray(a), np.asarray(b))
    # an adapter saved without the low-resolution flag (older packages) loads without it
    ConditionAdapter(condition_dim=32, cross_attention_dim=32).save_pretrained(tmp_path / "old")
    assert ConditionAdapter.from_pretrained(tmp_path / "old").low_resolution is None


def _labels(**values):
    out = {name: None for name in CONDITION_LABELS}
    out.update({k.replace("_", " "): v for k, v in values.items()})
    return out


def test_the_sampler_draws_only_label_matched_impressions_and_flags_only_nih_rows_low_resolution():
    from codixr.metrics.labeler import label_report
    from codixr.models.configs import build_prompt_encoder
    from codixr.testing import FIXTURE_IMPRESSIONS, tiny_tokenizer
    from training.conditions import impression_matches, positive_set
    from training.data import labels_multi_hot

    normal = _labels(**{"No Finding": 1.0})
    studies = [  # (source, labels): what the public sets give
        ("rsna-pneumonia", _labels(Lung_Opacity=1.0, Pneumonia=1.0)),
        ("rsna-pneumonia", _labels(Lung_Opacity=0.0, Pneumonia=0.0)),
        ("nih-cxr14-64px", _labels(Cardiomegaly=1.0, Atelectasis=0.0)),
        ("nih-cxr14-64px", normal),
        ("covid-cxr", _labels(Pneumonia=1.0)),
        ("covid-cxr", normal),
    ]
    data = SimpleNamespace(
        studies=[SimpleNamespace(study_id=f"s{i}", labels=lab) for i, (_, lab) in enumerate(studies)],
        report_items=lambda split: [SimpleNamespace(impression=t) for t in FIXTURE_IMPRESSIONS])
    items = [SimpleNamespace(study_id=f"s{i}", source=src, labels=labels_multi_hot(lab), text=None)
             for i, (src, lab) in enumerate(studies)]
    torch.manual_seed(0)
    tok = tiny_tokenizer()
    pe = build_prompt_encoder(TINY, dict(TINY["prompt_encoder"]["text_config"], vocab_size=len(tok))).eval()
    h_imp, matches, _ = impression_bridge(data, items, pe, tok)
    low = np.array([it.source in LOW_RESOLUTION_SOURCES for it in items])
    images = torch.nn.functional.normalize(torch.randn(len(items), 32), dim=-1)
    sampler = ImageConditionSampler(images, np.stack([it.labels for it in items]), h_imp, matches, pe, low,
                                    weights={"image": 0.2, "labels": 0.4, "impression": 0.4})
    assert sampler.kind_counts()["labels"] == 5  # the RSNA negative has no label set (no detailed class info)
    read = [label_report(t) for t in FIXTURE_IMPRESSIONS]
    seen = set()
    for step in range(40):
        idx = np.arange(len(items)).repeat(4)
        drawn = sampler.draw(idx, torch.Generator().manual_seed(step))
        assert torch.equal(drawn.low_resolution, torch.as_tensor(low[idx]))
        for i, kind, imp, cond in zip(idx, drawn.kinds.tolist(), drawn.impressions.tolist(), drawn.conditions):
            if KINDS[kind] == "impression":
                seen.add((int(i), imp))
                assert impression_matches(studies[i][1], positive_set(read[imp]), read[imp].get(NO_FINDING) == 1)
                assert torch.allclose(cond, h_imp[imp])
            else:
                assert imp == -1
            if KINDS[kind] == "image":
                assert torch.equal(cond, images[i])
    # every image that has a matching impression drew some (the fixture has none that asserts only pneumonia /
    # opacity, so the RSNA positive and the COVID pneumonia have none), and the normal ones only normal ones
    matching = {i for i, (_, lab) in enumerate(studies)
                if any(impression_matches(lab, positive_set(r), r.get(NO_FINDING) == 1) for r in read)}
    assert {i for i, _ in seen} == matching and {1, 2, 3, 5} <= matching
    assert sampler.counts.tolist() == [len(m) for m in matches]
    assert not low[[0, 1, 4, 5]].any() and low[[2, 3]].all()


def test_continuing_a_unet_without_class_embedding_changes_no_prediction_at_step_0(tmp_path):
    torch.manual_seed(0)
    old_cfg = {k: v for k, v in TINY["unet"].items() if not k.startswith(("class_embed", "projection_class"))}
    old = UNet2DConditionModel(**old_cfg).eval()
    old.save_pretrained(tmp_path / "stage2_unet_frontal" / "final" / "unet_frontal")
    unet, adapter, info = initial_flow(str(tmp_path / "stage2_unet_frontal"), "frontal", TINY, tmp_path)
    unet.eval()
    assert info["class_embedding_added"] and info["adapter_from"] == "single-token start"
    assert unet.config.class_embed_type == "projection"
    z, t = torch.randn(3, 4, 16, 16), torch.tensor([10, 400, 900])
    cond = torch.nn.functional.normalize(torch.randn(3, 32), dim=-1)
    with torch.no_grad():
        # the UNet itself: identical whatever class_labels say
        ref = old(z, t, encoder_hidden_states=cond[:, None]).sample
        same = unet(z, t, encoder_hidden_states=cond[:, None], class_labels=torch.randn(3, 32)).sample
        assert torch.equal(ref, same)
        # the null condition through the adapter: the old zero token, exactly
        null_ref = old(z, t, encoder_hidden_states=torch.zeros(3, 1, 32)).sample
        null = unet(z, t, **condition_flow(adapter, cond, drop=torch.ones(3, dtype=torch.bool)).kwargs()).sample
        assert torch.equal(null_ref, null)
        # a condition through the adapter: the old single token, up to the LayerNorm's centring (~1/d)
        through = unet(z, t, **condition_flow(adapter, cond).kwargs()).sample
        assert (through - ref).abs().max() < 0.1 * ref.abs().max()
    # G_L's start from a finished G_F keeps G_F's adapter
    final = tmp_path / "stage2_unet_frontal" / "final"
    unet.save_pretrained(final / "unet_frontal")
    adapter.register_to_config(guidance_scale=4.0)
    adapter.save_pretrained(final / "condition_frontal")
    (tmp_path / "stage2_unet_frontal" / "DONE.json").write_text("{}")
    _, lateral_adapter, info = initial_flow("frontal", "lateral", TINY, tmp_path)
    assert info["adapter_from"].endswith("condition_frontal") and lateral_adapter.config.guidance_scale == 4.0
    for name, tensor in adapter.state_dict().items():
        assert torch.equal(tensor, lateral_adapter.state_dict()[name]), name


def test_with_class_embedding_keeps_a_unet_that_has_one():
    unet = UNet2DConditionModel(**TINY["unet"])
    assert with_class_embedding(unet, 32) == (unet, False)
    with pytest.raises(ValueError, match="32-d"):
        with_class_embedding(unet, 64)
