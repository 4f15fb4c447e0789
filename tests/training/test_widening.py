"""Widening the X-ray latent (issue 13): a wider autoencoder and its UNets start as the narrower ones were."""

from __future__ import annotations

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel

from codixr.models.configs import get_config
from codixr.models.objectives import vae_loss
from training.stage2_unet import with_latent_channels
from training.stage2_vae import vae_from


def _tiny_vae_config(latent_channels):
    config = get_config("tiny")["vae"]
    config["latent_channels"] = latent_channels
    return config


def test_widened_autoencoder_reconstructs_exactly_as_the_narrow_one(tmp_path):
    torch.manual_seed(0)
    narrow = AutoencoderKL(**_tiny_vae_config(4)).eval()
    narrow.save_pretrained(tmp_path / "vae")
    wide = vae_from(str(tmp_path / "vae"), _tiny_vae_config(8)).eval()
    assert wide.config.latent_channels == 8
    x = torch.rand(2, 1, 64, 64) * 2 - 1
    with torch.no_grad():
        a = narrow.decode(narrow.encode(x).latent_dist.mean).sample
        b = wide.decode(wide.encode(x).latent_dist.mean).sample
        z = wide.encode(x).latent_dist.mean
    assert torch.allclose(a, b, atol=1e-5)
    assert z[:, 4:].abs().sum() > 0  # the new channels carry something the decoder can learn to use
    loss, _ = vae_loss(wide, x)
    loss.backward()
    assert wide.decoder.conv_in.weight.grad[:, 4:].abs().sum() > 0  # and it gets a gradient from the first step


def test_gradient_term_penalises_a_blurred_reconstruction_more_than_l1_alone():
    torch.manual_seed(0)
    vae = AutoencoderKL(**_tiny_vae_config(4))
    x = torch.rand(2, 1, 64, 64) * 2 - 1
    plain, parts = vae_loss(vae, x, generator=torch.Generator().manual_seed(0))
    with_edges, parts_edges = vae_loss(vae, x, generator=torch.Generator().manual_seed(0), gradient_weight=0.5)
    assert "gradient_l1" not in parts and parts_edges["gradient_l1"] > 0
    assert torch.isclose(with_edges, plain + 0.5 * parts_edges["gradient_l1"], rtol=1e-4)


def test_widened_unet_predicts_as_before_on_the_old_channels():
    torch.manual_seed(0)
    config = get_config("tiny")["unet"]
    narrow = UNet2DConditionModel(**config).eval()
    wide, rebuilt = with_latent_channels(narrow, 8)
    assert rebuilt and wide.config.in_channels == wide.config.out_channels == 8
    z = torch.randn(2, 4, 16, 16)
    ctx, pooled, t = torch.randn(2, 2, 32), torch.randn(2, 32), torch.tensor([10, 500])
    extra = torch.randn(2, 4, 16, 16)
    with torch.no_grad():
        a = narrow(z, t, encoder_hidden_states=ctx, class_labels=pooled).sample
        b = wide(torch.cat([z, extra], 1), t, encoder_hidden_states=ctx, class_labels=pooled).sample
    assert torch.allclose(a, b[:, :4], atol=1e-5) and b[:, 4:].abs().max() == 0
    assert with_latent_channels(wide, 8)[1] is False


def test_decoder_only_training_keeps_the_latent_space(tmp_path):
    from training.stage2_vae import VAEModule

    torch.manual_seed(0)
    source = AutoencoderKL(**_tiny_vae_config(4))
    source.register_to_config(scaling_factor=0.37)
    source.save_pretrained(tmp_path / "vae")
    vae = vae_from(str(tmp_path / "vae"), _tiny_vae_config(4))
    assert vae.config.scaling_factor == 0.37  # the UNets were trained on latents scaled by it
    module = VAEModule(vae, 1e-6, gradient_weight=0.5, decoder_only=True)
    encoder_before = {k: v.clone() for k, v in vae.encoder.state_dict().items()}
    decoder_before = {k: v.clone() for k, v in vae.decoder.state_dict().items()}
    optimizer = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=1e-3)
    for _ in range(2):
        loss, _ = module({"image": torch.rand(2, 1, 64, 64)})
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert all(torch.equal(v, vae.encoder.state_dict()[k]) for k, v in encoder_before.items())
    assert any(not torch.equal(v, vae.decoder.state_dict()[k]) for k, v in decoder_before.items())
