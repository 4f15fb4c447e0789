"""Components, losses, configurations and a one-batch overfit of every training stage."""

from __future__ import annotations

import math

import pytest
import torch

from codixr.models.conditioning import condition_flow
from codixr.models.configs import build_components
from codixr.models.describe import count_parameters, parameter_table
from codixr.models.environment import cross_attention_layers
from codixr.models.losses import info_nce
from codixr.models.objectives import (
    Flow,
    contrastive_loss,
    diffusion_loss,
    joint_diffusion_loss,
    text_vae_loss,
    vae_loss,
)
from codixr.testing import FIXTURE_IMPRESSIONS, tiny_tokenizer


def test_info_nce_matches_hand_computation_on_3x3():
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    b = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    scale = 2.0
    # cosine similarities by hand: rows of a vs rows of b
    r = 1 / math.sqrt(2)
    sim = [[1.0, r, 0.0], [0.0, r, 1.0], [r, 1.0, r]]

    def ce(rows):
        return sum(-math.log(math.exp(scale * rows[i][i]) / sum(math.exp(scale * s) for s in rows[i]))
                   for i in range(3)) / 3

    expected = ce(sim) + ce([list(col) for col in zip(*sim)])
    assert info_nce(a, b, scale).item() == pytest.approx(expected, rel=1e-6)


def test_paper_configuration_counts_on_meta_device():
    counts = count_parameters("paper")
    # SD-1.5 UNet (859.5M), SD AutoKL with one-channel in/out (83.6M), CLIP ViT-L/14 + 12-layer text tower.
    assert counts["unet_frontal"] == counts["unet_lateral"]
    assert 855e6 < counts["unet_frontal"] < 865e6
    assert 83e6 < counts["vae"] < 84e6
    from codixr.models.adapatch import AdaPatch, adapatch_config
    from codixr.models.configs import get_config

    pe_cfg = get_config("paper")["prompt_encoder"]
    with torch.device("meta"):
        head = AdaPatch(**adapatch_config(pe_cfg["vision_config"], pe_cfg["projection_dim"], **pe_cfg["adapatch"]))
    clip_towers = counts["prompt_encoder"] - sum(p.numel() for p in head.parameters())
    assert 420e6 < clip_towers < 435e6  # CLIP ViT-L/14 + 12-layer text tower (+ label encoder)
    table = parameter_table("paper")
    assert "6.77B" in table and "1.77B" in table


def test_small_configuration_fits_the_package_budget():
    total = sum(count_parameters("small").values())
    assert total * 2 < 60e6, "the bundled default must stay under 60 MB as fp16 safetensors"


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    tok = tiny_tokenizer()
    return build_components("tiny", tokenizer=tok), tok


def test_cross_modal_attention_covers_every_cross_attention(tiny):
    comps, _ = tiny
    for name, unet in (("frontal", comps["unet_frontal"]), ("report", comps["text_unet"])):
        assert set(cross_attention_layers(unet)) == set(comps[f"cross_attention_{name}"].qkv_layers)


def test_untrained_qkv_layers_leave_a_unet_unchanged(tiny):
    comps, _ = tiny
    unet = comps["unet_frontal"]
    z, ctx = torch.randn(1, 4, 16, 16), torch.randn(1, 1, 32)
    env = torch.randn(1, 5, 32)
    comps["cross_attention_frontal"].attach(unet)
    with torch.no_grad():
        cls = torch.randn(1, 32)  # the pooled condition in the time embedding (class_embed_type="projection")
        plain = unet(z, 10, encoder_hidden_states=ctx, class_labels=cls).sample
        with_env = unet(z, 10, encoder_hidden_states=ctx, class_labels=cls,
                        cross_attention_kwargs={"environment": env}).sample
    assert torch.equal(plain, with_env)  # zero-initialised output projections


def _overfit(params, loss_fn, steps=15, lr=3e-3):
    opt = torch.optim.AdamW(params, lr=lr)
    losses = []
    for _ in range(steps):
        loss = loss_fn()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def _batch(tok, n=4):
    enc = tok(list(FIXTURE_IMPRESSIONS[:n]), padding=True, return_tensors="pt")
    # smooth X-ray-like intensity patterns (one per sample), easy to overfit quickly
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 64), torch.linspace(-1, 1, 64), indexing="ij")
    images = torch.stack([torch.sigmoid(3 * torch.cos((k + 1) * xx) * torch.sin((k + 2) * yy)) for k in range(n)])[:, None]
    return images, enc["input_ids"], enc["attention_mask"]


def test_one_batch_overfit_every_stage(tiny):
    comps, tok = tiny
    images, ids, mask = _batch(tok)
    labels = torch.eye(4, 11)
    sched = comps["scheduler"]
    results = {}
    drop_f = torch.tensor([False, False, False, True])

    def fixed(seed):  # the same noise and timesteps every step: a true one-batch overfit
        return torch.Generator().manual_seed(seed)

    pe = comps["prompt_encoder"].train()
    results["stage 1: CL_XR (+labels)"] = _overfit(
        pe.parameters(), lambda: contrastive_loss(pe, images, ids, mask, labels))
    vae = comps["vae"].train()
    results["stage 2a: AutoKL"] = _overfit(vae.parameters(), lambda: vae_loss(vae, images * 2 - 1, generator=fixed(1))[0],
                                          lr=1e-2)
    with torch.no_grad():
        latents = vae.encode(images * 2 - 1).latent_dist.mean
        cond = pe.encode_text(ids, mask).pooled[:, None]
    unet, image_adapter = comps["unet_frontal"].train(), comps["condition_frontal"].train()
    low_res = torch.tensor([False, False, True, False])  # one row flagged low resolution (an NIH image)
    results["stage 2b: G_F"] = _overfit(
        [*unet.parameters(), *image_adapter.parameters()],
        lambda: diffusion_loss(unet, sched, latents, condition_flow(image_adapter, cond, drop=drop_f,
                                                                    low_resolution=low_res), fixed(2)))
    image_cond = condition_flow(image_adapter.eval().requires_grad_(False), cond)
    tvae = comps["text_vae"].train()
    results["stage 2c: text VAE"] = _overfit(tvae.parameters(), lambda: text_vae_loss(tvae, ids, mask, generator=fixed(3))[0])
    with torch.no_grad():
        text_latents = tvae.encode_latents(ids, mask)
    tunet, adapter = comps["text_unet"].train(), comps["condition_report"].train()
    drop = torch.tensor([False, True, False, False])  # one row trains the learned null condition
    results["stage 2d: G_R"] = _overfit(
        [*tunet.parameters(), *adapter.parameters()],
        lambda: diffusion_loss(tunet, sched, text_latents, condition_flow(adapter, cond, drop=drop), fixed(4)))
    report_cond = condition_flow(adapter.eval().requires_grad_(False), cond)

    for m in ("frontal", "report"):
        comps[f"cross_attention_{m}"].attach(comps["unet_frontal"] if m == "frontal" else comps["text_unet"])
    flows = {"frontal": Flow(unet.eval().requires_grad_(False), latents, image_cond, comps["environment_frontal"]),
             "report": Flow(tunet.eval().requires_grad_(False), text_latents, report_cond, comps["environment_report"])}
    trainable = [p for m in ("frontal", "report") for k in ("environment", "cross_attention")
                 for p in comps[f"{k}_{m}"].parameters()]
    results["stage 3: L_FR"] = _overfit(trainable, lambda: joint_diffusion_loss(flows, sched, fixed(5))[0])

    for stage, losses in results.items():
        assert losses[-1] < losses[0] * 0.9, f"{stage}: loss did not fall ({losses[0]:.4f} -> {losses[-1]:.4f})"
