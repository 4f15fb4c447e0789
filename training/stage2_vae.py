"""Stage 2a — the X-ray autoencoder (AutoKL) of G_F and G_L.

    python -m training.stage2_vae --config small [--init PATH_TO_SD_VAE]
    python -m training.stage2_vae --config small --decoder-only [--init PATH]    # stage 2a': sharpen the decoder

The paper keeps Stable Diffusion 1.5's AutoKL frozen; no SD weights can be had here, so we train a
one-channel AutoKL on the X-rays (frontal and lateral) instead. ``--init`` (or ``stages.stage2_vae.init``)
starts from a user's VAE folder or hub id (e.g. an SD-1.5 ``vae`` subfolder): its RGB input/output
convolutions are averaged/summed to one channel. Training runs on random crops (``crop_size``) for speed;
the autoencoder is fully convolutional, so it encodes and decodes whole 256-px images afterwards. At the
end the latent scaling factor is measured on training images (1 / std of the latents, as in LDM) and
stored in the VAE config.

Stage 2a' (``--decoder-only``, section ``stage2_vae_decoder``, folder ``<run>/stage2_vae_decoder``) fine-tunes only
the decoder of a finished autoencoder (``--init``, default this run's stage 2a) with L1, an edge term and, with
``adversarial_weight`` > 0, a patch discriminator (``codixr.models.discriminator``) whose term is balanced against
the reconstruction by the gradient at the decoder's last layer, after ``adversarial_start`` batches of L1-only
warm-up. The encoder, its latent space and its scaling factor are unchanged, so G_F, G_L and stage 3 trained on
stage 2a's latents stay valid; later stages and the package take the sharpened decoder
(``training.common.autoencoder_dir``).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL

from codixr.models.configs import get_config
from codixr.models.discriminator import PatchDiscriminator
from codixr.models.objectives import adversarial_decoder_loss, vae_loss
from training.common import load_done, prepare_stage, train_stage
from training.data import GENERATION_SOURCES, TrainingData
from training.samples import save_image_grid

logger = logging.getLogger("training.stage2_vae")
STAGE = "stage2_vae"
DECODER_STAGE = "stage2_vae_decoder"  # stage 2a': the decoder sharpened, encoder and latent space kept


def widen_latent_state(state: dict[str, torch.Tensor], old_channels: int, new_channels: int) -> dict[str, torch.Tensor]:
    """A one-channel AutoKL's weights mapped onto a wider latent (``new_channels`` >= ``old_channels``).

    The old latent channels keep their weights; the new ones start with small random encoder weights, an identity
    ``post_quant_conv`` and zero ``decoder.conv_in`` columns, so the widened autoencoder reconstructs exactly as the
    old one at step 0 and the extra channels only add detail as they learn (``decoder.conv_in``'s new columns get a
    gradient from the first step).
    """
    if new_channels < old_channels:
        raise ValueError(f"cannot narrow an autoencoder's latent from {old_channels} to {new_channels} channels")
    out = dict(state)
    o, n = old_channels, new_channels

    def moments(weight: torch.Tensor) -> torch.Tensor:  # rows [mean (o), logvar (o)] -> [mean (n), logvar (n)]
        shape = (2 * n,) + tuple(weight.shape[1:])
        new = torch.randn(shape, generator=torch.Generator().manual_seed(0)) * (weight.std() * 0.1)
        new[:o], new[n:n + o] = weight[:o], weight[o:]
        return new

    w = state["encoder.conv_out.weight"]
    out["encoder.conv_out.weight"] = moments(w)
    b = torch.zeros(2 * n)
    b[:o], b[n:n + o] = state["encoder.conv_out.bias"][:o], state["encoder.conv_out.bias"][o:]
    b[n + o:] = state["encoder.conv_out.bias"][o:].mean()
    out["encoder.conv_out.bias"] = b
    if "quant_conv.weight" in state:  # 1x1 (2o -> 2o): block-wise copy, identity on the new channels
        q = torch.zeros(2 * n, 2 * n, 1, 1)
        idx = list(range(o)) + list(range(n, n + o))
        q[torch.tensor(idx)[:, None], torch.tensor(idx)[None, :]] = state["quant_conv.weight"]
        for c in list(range(o, n)) + list(range(n + o, 2 * n)):
            q[c, c] = 1.0
        qb = torch.zeros(2 * n)
        qb[torch.tensor(idx)] = state["quant_conv.bias"]
        out["quant_conv.weight"], out["quant_conv.bias"] = q, qb
    if "post_quant_conv.weight" in state:
        p = torch.eye(n).reshape(n, n, 1, 1).clone()
        p[:o, :o] = state["post_quant_conv.weight"]
        pb = torch.zeros(n)
        pb[:o] = state["post_quant_conv.bias"]
        out["post_quant_conv.weight"], out["post_quant_conv.bias"] = p, pb
    c = state["decoder.conv_in.weight"]
    wide = torch.zeros((c.shape[0], n) + tuple(c.shape[2:]))
    wide[:, :o] = c
    out["decoder.conv_in.weight"] = wide
    return out


def vae_from(init: str | None, config: dict) -> AutoencoderKL:
    """A fresh one-channel AutoKL, or one initialised from an existing VAE: an RGB one (e.g. SD-1.5's, whose input
    and output convolutions are summed/averaged to one channel) or a one-channel one with fewer latent channels
    (a previous X-ray autoencoder, widened by ``widen_latent_state``)."""
    vae = AutoencoderKL(**config)
    if init:
        source = AutoencoderKL.from_pretrained(init, subfolder="vae" if (Path(init) / "vae").is_dir() else None)
        state = source.state_dict()
        if state["encoder.conv_in.weight"].shape[1] != 1:
            state["encoder.conv_in.weight"] = state["encoder.conv_in.weight"].sum(1, keepdim=True)
            state["decoder.conv_out.weight"] = state["decoder.conv_out.weight"].mean(0, keepdim=True)
            state["decoder.conv_out.bias"] = state["decoder.conv_out.bias"].mean(0, keepdim=True)
        old_c, new_c = source.config.latent_channels, vae.config.latent_channels
        if old_c != new_c:
            state = widen_latent_state(state, old_c, new_c)
        own = vae.state_dict()
        matched = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
        vae.load_state_dict(matched, strict=False)
        if old_c == new_c and source.config.in_channels == 1:  # same latent space: keep its measured scale
            vae.register_to_config(scaling_factor=source.config.scaling_factor)
        logger.info("initialised the VAE from %s (%d of %d tensors; latent channels %d -> %d)", init, len(matched),
                    len(own), old_c, new_c)
    return vae


class VAEModule(torch.nn.Module):
    """The autoencoder's training loss. ``decoder_only`` freezes the encoder (and its moment projection): the
    latent space, its scaling factor and every UNet trained on it stay valid, and only the decoder learns to
    draw sharper images from the same latents (as Stable Diffusion's fine-tuned decoders were made). With a
    ``discriminator`` the decoder also plays against it (``adversarial_decoder_loss``) once the module has seen
    ``adversarial_start`` batches (a counter kept in the module's state, so a resumed run keeps its place)."""

    def __init__(self, vae, kl_weight, gradient_weight=0.0, decoder_only=False, discriminator=None,
                 adversarial_weight=0.5, adversarial_start=0):
        super().__init__()
        self.vae, self.kl_weight, self.gradient_weight = vae, kl_weight, gradient_weight
        self.decoder_only = decoder_only
        if discriminator is not None and not decoder_only:
            raise ValueError("the adversarial term is for fine-tuning a decoder: use it with decoder_only")
        self.discriminator, self.adversarial_weight, self.adversarial_start = (discriminator, adversarial_weight,
                                                                               adversarial_start)
        self.register_buffer("batches_seen", torch.zeros((), dtype=torch.long))
        if decoder_only:
            for part in (vae.encoder, vae.quant_conv):
                if part is not None:
                    part.requires_grad_(False)

    def forward(self, batch, generator=None):
        images = batch["image"] * 2 - 1
        if self.discriminator is None:
            return vae_loss(self.vae, images, self.kl_weight, generator, self.gradient_weight)
        active = bool(self.batches_seen >= self.adversarial_start)
        self.batches_seen += 1
        return adversarial_decoder_loss(self.vae, self.discriminator, images, generator, self.gradient_weight,
                                        self.adversarial_weight, adversarial=active)


@torch.no_grad()
def measure_scaling_factor(vae, data: TrainingData, items, n: int = 256) -> float:
    rows = np.linspace(0, len(items) - 1, min(n, len(items))).astype(int)
    latents = torch.cat([vae.encode(data.images(items, rows[i:i + 16]) * 2 - 1).latent_dist.mean
                         for i in range(0, len(rows), 16)])
    return float(1.0 / latents.std())


def reconstruction_quality(real: np.ndarray, recon: np.ndarray) -> dict[str, float]:
    """PSNR (dB) and high-frequency energy ratio of (N, H, W) reconstructions in [0, 1], as ``codixr.evaluate``."""
    from codixr.evaluate.image_following import hf_ratio, psnr

    return {"psnr_db": float(psnr(real, recon).mean()), "hf_ratio": hf_ratio(real, recon)}


@torch.no_grad()
def validation_quality(vae, data: TrainingData, n: int = 64) -> dict[str, float]:
    """Reconstruction quality (posterior mean) on up to ``n`` validation frontals and laterals at full size."""
    val = data.image_items("validate", sources=GENERATION_SOURCES)
    rows = np.linspace(0, len(val) - 1, min(n, len(val))).astype(int) if val else []
    real, recon = [], []
    for i in range(0, len(rows), 8):
        x = data.images(val, rows[i:i + 8])
        real.append(x[:, 0].numpy())
        recon.append(((vae.decode(vae.encode(x * 2 - 1).latent_dist.mean).sample[:, 0] + 1) / 2).clamp(0, 1).numpy())
    if not real:
        return {}
    return {"images": len(rows), **reconstruction_quality(np.concatenate(real), np.concatenate(recon))}


def main(argv=None) -> dict:
    def extra_args(parser):
        parser.add_argument("--init", default=None, help="a VAE folder or hub id")
        parser.add_argument("--decoder-only", action="store_true",
                            help="stage 2a': train only the decoder of --init (default: this run's stage 2a) against "
                                 "a patch discriminator; the latent space and the UNets stay valid")

    ctx = prepare_stage(__doc__, lambda a: DECODER_STAGE if a.decoder_only else STAGE, extra_args, argv)
    args, config, root, spec, data = ctx.args, ctx.config, ctx.root, ctx.spec, ctx.data
    decoder_only = bool(args.decoder_only)
    init = args.init or spec.extra.get("init")
    if decoder_only and not init:
        init = str(load_done(root / STAGE, "Stage 2a (X-ray autoencoder), whose decoder --decoder-only fine-tunes"))
    vae = vae_from(init, get_config(config["model"])["vae"])
    if decoder_only and vae.config.latent_channels != AutoencoderKL.load_config(
            init, subfolder="vae" if (Path(init) / "vae").is_dir() else None)["latent_channels"]:
        raise ValueError("--decoder-only keeps the latent space of --init, so the config's latent_channels must match it")
    items = data.image_items("train", sources=GENERATION_SOURCES)
    val = data.image_items("validate", sources=GENERATION_SOURCES)[:8]
    crop = int(spec.extra.get("crop_size", data.size))

    def batch_fn(indices, generator):
        images = data.images(items, indices)
        if crop < data.size:
            y, x = torch.randint(0, data.size - crop + 1, (2,), generator=generator).tolist()
            images = images[..., y:y + crop, x:x + crop]
        return {"image": images}

    def sample_fn(module, out: Path, step: int):
        if not val:
            return
        real = data.images(val, range(len(val)))
        recon = module.vae.decode(module.vae.encode(real * 2 - 1).latent_dist.mean).sample
        recon = ((recon[:, 0].float() + 1) / 2).clamp(0, 1)
        save_image_grid([real[:, 0], recon], out / f"reconstruction-{step:06d}.png",
                        titles=["real (validation)", "reconstruction"])
        quality = reconstruction_quality(real[:, 0].numpy(), recon.numpy())
        logger.info("step %d: validation reconstructions %.2f dB PSNR, high-frequency energy %.1f %% of real", step,
                    quality["psnr_db"], 100 * quality["hf_ratio"])

    def save_fn(module, final: Path):
        if not decoder_only:  # a frozen encoder keeps its latent scale, which the UNets were trained on
            module.vae.register_to_config(scaling_factor=measure_scaling_factor(module.vae, data, items))
        module.vae.save_pretrained(final / "vae")
        info["validation"] = validation_quality(module.vae, data)

    adversarial_weight = float(spec.extra.get("adversarial_weight", 0.0))
    discriminator = None
    if adversarial_weight > 0:
        discriminator = PatchDiscriminator(**spec.extra.get("discriminator", {}))
    info = {"images": len(items), "crop_size": crop, "sources": sorted({it.source for it in items}),
            "decoder_only": decoder_only, "init_from": init, "adversarial_weight": adversarial_weight}
    if decoder_only:
        info["validation_before"] = validation_quality(vae.eval(), data)
        logger.info("%s: validation reconstructions before: %s", spec.name, info["validation_before"])
    module = VAEModule(vae, float(spec.extra.get("kl_weight", 1e-6)), float(spec.extra.get("gradient_weight", 0.0)),
                       decoder_only=decoder_only, discriminator=discriminator, adversarial_weight=adversarial_weight,
                       adversarial_start=int(spec.extra.get("adversarial_start", 0)))
    return train_stage(spec, root / ctx.stage, module, len(items),
                       batch_fn, save_fn, sample_fn, info)


if __name__ == "__main__":
    main()
