"""Stage 2a' (issue 13): the X-ray decoder sharpened against a patch discriminator, encoder and latent space kept."""

from __future__ import annotations

import json

import torch
from diffusers import AutoencoderKL

from codixr.models.configs import get_config
from codixr.models.discriminator import PatchDiscriminator
from codixr.models.objectives import adversarial_decoder_loss, hinge_discriminator_loss


def _tiny():
    torch.manual_seed(0)
    vae = AutoencoderKL(**get_config("tiny")["vae"])
    vae.encoder.requires_grad_(False)
    vae.quant_conv.requires_grad_(False)
    return vae, PatchDiscriminator(base_channels=8, num_layers=2, norm_groups=4)


def test_patch_discriminator_scores_patches_and_round_trips(tmp_path):
    torch.manual_seed(0)
    disc = PatchDiscriminator(base_channels=8, num_layers=3, norm_groups=4).eval()
    x = torch.rand(2, 1, 128, 128) * 2 - 1
    logits = disc(x)
    assert logits.shape[:2] == (2, 1) and 8 <= logits.shape[-1] < 32  # a grid of overlapping patches
    disc.save_pretrained(tmp_path / "d")
    again = PatchDiscriminator.from_pretrained(tmp_path / "d").eval()
    assert torch.equal(disc(x), again(x))


def test_each_term_reaches_only_its_own_network():
    vae, disc = _tiny()
    images = torch.rand(2, 1, 64, 64) * 2 - 1
    loss, parts = adversarial_decoder_loss(vae, disc, images, torch.Generator().manual_seed(0), gradient_weight=0.5,
                                           adversarial_weight=0.5, adversarial=True)
    loss.backward()
    assert parts["adversarial_weight"] > 0 and "discriminator" in parts
    assert all(p.grad is None for p in vae.encoder.parameters())
    d_grads = [p.grad.clone() for p in disc.parameters()]
    decoder_grad = vae.decoder.conv_out.weight.grad.clone()

    # the discriminator's gradient is that of its hinge loss alone (the decoder's adversarial term does not train it)
    disc.zero_grad()
    with torch.no_grad():
        z = vae.encode(images).latent_dist.sample(generator=torch.Generator().manual_seed(0))
        recon = vae.decode(z).sample
    hinge_discriminator_loss(disc(images), disc(recon)).backward()
    assert all(torch.allclose(a, p.grad, atol=1e-6) for a, p in zip(d_grads, disc.parameters()))

    # and the decoder feels the adversarial term: without it its gradient differs
    vae.zero_grad()
    disc.zero_grad()
    loss, parts = adversarial_decoder_loss(vae, disc, images, torch.Generator().manual_seed(0), gradient_weight=0.5,
                                           adversarial=False)
    loss.backward()
    assert parts["adversarial_weight"] == 0.0
    assert not torch.allclose(decoder_grad, vae.decoder.conv_out.weight.grad)


def test_adversarial_term_starts_after_the_warm_up_and_the_counter_is_saved():
    from training.stage2_vae import VAEModule

    vae, disc = _tiny()
    module = VAEModule(vae, 1e-6, gradient_weight=0.5, decoder_only=True, discriminator=disc, adversarial_start=2)
    weights = [module({"image": torch.rand(2, 1, 64, 64)})[1]["adversarial_weight"] for _ in range(3)]
    assert weights[0] == weights[1] == 0.0 and weights[2] > 0
    assert int(module.state_dict()["batches_seen"]) == 3  # a resumed run keeps its place in the warm-up


def test_decoder_stage_keeps_the_encoder_and_feeds_later_stages(tmp_path, shared_data_dir):
    """The tiny recipe end to end: stage 2a, then 2a' from it; later stages read the sharpened decoder."""
    from training import stage2_vae
    from training.common import autoencoder_dir

    run = tmp_path / "run"
    common = ["--config", "tiny", "--run-dir", str(run), "--limit", "4", "--data-dir", shared_data_dir]
    stage2_vae.main(common)
    assert autoencoder_dir(run) == run / "stage2_vae" / "final"
    done = stage2_vae.main(common + ["--decoder-only"])
    assert done["decoder_only"] and done["adversarial_weight"] > 0 and "validation_before" in done
    assert autoencoder_dir(run) == run / "stage2_vae_decoder" / "final"
    before = AutoencoderKL.from_pretrained(run / "stage2_vae" / "final" / "vae")
    after = AutoencoderKL.from_pretrained(run / "stage2_vae_decoder" / "final" / "vae")
    assert after.config.scaling_factor == before.config.scaling_factor
    for name in ("encoder", "quant_conv"):
        old, new = getattr(before, name).state_dict(), getattr(after, name).state_dict()
        assert all(torch.equal(old[k], new[k]) for k in old)
    assert any(not torch.equal(v, after.decoder.state_dict()[k]) for k, v in before.decoder.state_dict().items())
    metrics = (run / "stage2_vae_decoder" / "metrics.csv").read_text().splitlines()
    assert "generator_adversarial" in metrics[0] and "discriminator" in metrics[0]
    assert json.loads((run / "stage2_vae_decoder" / "DONE.json").read_text())["init_from"].endswith("final")
