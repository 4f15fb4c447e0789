"""The conditioning path (ConditionAdapter) and the text VAE's round trip, on seeded tiny models."""

from __future__ import annotations

import pytest
import torch
from diffusers import DDPMScheduler, DPMSolverMultistepScheduler

from codixr import Modality
from codixr.models.conditioning import ConditionAdapter, Conditioning, condition_flow, drop_mask
from codixr.models.configs import SD_SCHEDULER, get_config
from codixr.models.objectives import diffusion_loss
from codixr.models.text_unet import TextUNet
from codixr.models.text_vae import OptimusTextVAE
from codixr.pipeline import denoise_latents
from codixr.testing import FIXTURE_IMPRESSIONS, tiny_pipeline, tiny_tokenizer


def _tiny_report_flow(seed: int = 0):
    torch.manual_seed(seed)
    cfg = get_config("tiny")
    unet = TextUNet(**cfg["text_unet"])
    adapter = ConditionAdapter(condition_dim=32, cross_attention_dim=cfg["text_unet"]["cross_attention_dim"],
                               **cfg["condition_report"])
    return unet, adapter


def test_adapter_shapes_null_and_guidance_layout():
    _, adapter = _tiny_report_flow()
    cond = torch.nn.functional.normalize(torch.randn(3, 32), dim=-1)
    out = adapter(cond)
    assert out.tokens.shape == (3, 2, 32) and out.class_labels.shape == (3, 32)
    dropped = adapter(cond, drop=torch.tensor([False, True, False]))
    null = adapter.null(1)
    assert torch.allclose(dropped.tokens[1], null.tokens[0]) and not torch.allclose(dropped.tokens[0], null.tokens[0])
    both = condition_flow(adapter, cond, guidance=True)
    assert both.tokens.shape[0] == 6
    assert torch.allclose(both.tokens[:3], adapter.null(3).tokens) and torch.allclose(both.tokens[3:], out.tokens)
    # without an adapter: one token and a zero null (the first bundled model's convention)
    legacy = condition_flow(None, cond, guidance=True)
    assert legacy.tokens.shape == (6, 1, 32) and legacy.class_labels is None and legacy.tokens[:3].abs().sum() == 0


def test_drop_mask_rate_and_off():
    assert drop_mask(8, 0.0) is None
    mask = drop_mask(10_000, 0.1, torch.Generator().manual_seed(0))
    assert 0.08 < mask.float().mean() < 0.12


def test_text_unet_requires_the_pooled_condition_when_configured():
    unet, adapter = _tiny_report_flow()
    z = torch.randn(2, 16)
    cond = adapter(torch.randn(2, 32))
    assert unet(z, 10, **cond.kwargs()).sample.shape == (2, 16)
    with pytest.raises(ValueError, match="class_labels"):
        unet(z, 10, encoder_hidden_states=cond.tokens)


def test_trained_flow_follows_its_condition():
    """Two conditions, two target latents: after a short training through the adapter, sampling with condition A
    lands near A's latent and with B near B's, and the null condition lands in neither (the path works end to end:
    training and sampling share ``condition_flow``)."""
    unet, adapter = _tiny_report_flow(seed=1)
    scheduler = DDPMScheduler(**SD_SCHEDULER)
    g = torch.Generator().manual_seed(0)
    targets = torch.stack([torch.full((16,), 1.0), torch.full((16,), -1.0)])
    conds = torch.nn.functional.normalize(torch.randn(2, 32, generator=g), dim=-1)
    params = [*unet.parameters(), *adapter.parameters()]
    opt = torch.optim.AdamW(params, lr=3e-3)
    for step in range(500):
        which = torch.randint(0, 2, (16,), generator=g)
        conditioning = condition_flow(adapter, conds[which], drop=drop_mask(16, 0.2, g))
        loss = diffusion_loss(unet, scheduler, targets[which], conditioning, g)
        opt.zero_grad()
        loss.backward()
        opt.step()
    unet.eval(), adapter.eval()
    sampler = DPMSolverMultistepScheduler.from_config(SD_SCHEDULER, algorithm_type="dpmsolver++")
    sampler.set_timesteps(20)
    noise = torch.randn((1, 16), generator=torch.Generator().manual_seed(7)).expand(2, 16).clone()  # one seed
    with torch.no_grad():
        out = denoise_latents({"r": unet}, {"r": noise * sampler.init_noise_sigma},
                              {"r": condition_flow(adapter, conds, guidance=True)}, {"r": sampler}, 3.0)["r"]
    assert out[0].mean() > 0.3 and out[1].mean() < -0.3 and out[0].mean() - out[1].mean() > 1.0, out.mean(dim=1)


def test_text_vae_round_trip_after_overfit():
    """The Optimus objective with a fixed-noise latent: a tiny VAE overfit on a handful of impressions decodes its
    own posterior means back to exactly those impressions, and different impressions get different latents."""
    tok = tiny_tokenizer()
    texts = list(FIXTURE_IMPRESSIONS[:4])
    torch.manual_seed(0)
    cfg = dict(get_config("tiny")["text_vae"], latent_noise=0.1)
    tv = OptimusTextVAE(vocab_size=len(tok), pad_token_id=tok.pad_token_id, bos_token_id=tok.cls_token_id,
                        eos_token_id=tok.sep_token_id, **cfg)
    enc = tok(texts, padding=True, return_tensors="pt")
    opt = torch.optim.AdamW(tv.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(300):
        out = tv(enc["input_ids"], enc["attention_mask"], beta=0.1, generator=g, word_dropout=0.1)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    tv.eval()
    latents = tv.encode_latents(enc["input_ids"], enc["attention_mask"])
    decoded = [t.strip() for t in tok.batch_decode(tv.decode_latents(latents), skip_special_tokens=True)]
    assert [d.lower().replace(" ", "") for d in decoded] == [t.lower().replace(" ", "") for t in texts]
    assert torch.cdist(latents, latents)[~torch.eye(4, dtype=torch.bool)].min() > 0
    # sampling is repeatable with a generator and stops at [SEP]
    a = tv.decode_latents(latents, do_sample=True, generator=torch.Generator().manual_seed(3))
    b = tv.decode_latents(latents, do_sample=True, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_text_vae_objective_sums_over_tokens():
    tok = tiny_tokenizer()
    enc = tok(list(FIXTURE_IMPRESSIONS[:3]), padding=True, return_tensors="pt")
    torch.manual_seed(0)
    base = get_config("tiny")["text_vae"]
    summed = OptimusTextVAE(vocab_size=len(tok), **dict(base, reconstruction="sum"))
    mean = OptimusTextVAE(vocab_size=len(tok), **dict(base, reconstruction="mean"))
    mean.load_state_dict(summed.state_dict())
    summed.eval(), mean.eval()  # no dropout: the two objectives see the same network
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    a = summed(enc["input_ids"], enc["attention_mask"], beta=0.0, generator=g())
    b = mean(enc["input_ids"], enc["attention_mask"], beta=0.0, generator=g())
    tokens_per_report = (enc["attention_mask"][:, 1:].sum() / 3).item()
    assert torch.allclose(a.reconstruction_loss, b.reconstruction_loss)  # reported per token either way
    assert a.loss.item() == pytest.approx(b.loss.item() * tokens_per_report, rel=1e-4)


def test_pipeline_uses_the_adapter_and_its_validated_guidance():
    pipe = tiny_pipeline(seed=0)
    assert pipe.condition_adapter(Modality.REPORT) is not None
    assert pipe.condition_adapter(Modality.FRONTAL) is not None  # image flows have one too (issue 13)
    pipe.condition_report.register_to_config(guidance_scale=4.0)
    assert pipe.default_guidance_scale(Modality.REPORT) == 4.0 and pipe.default_guidance_scale(Modality.FRONTAL) == 2.0
    same = pipe(labels=["Pneumonia"], outputs="report", seed=0)
    explicit = pipe(labels=["Pneumonia"], outputs="report", seed=0, guidance_scale={"report": 4.0})
    assert same.report == explicit.report
    # different conditions at one seed reach the report flow differently (its noise prediction differs)
    conds = pipe.encode_labels([["Pneumonia"], ["No Finding"]])
    c = condition_flow(pipe.condition_report, conds)
    assert isinstance(c, Conditioning)
    eps = pipe.text_unet(torch.zeros(2, 16), 500, **c.kwargs()).sample
    assert not torch.allclose(eps[0], eps[1])
