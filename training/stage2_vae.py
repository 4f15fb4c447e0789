"""Stage 2a — the X-ray autoencoder (AutoKL) of G_F and G_L.

    python -m training.stage2_vae --config small [--init PATH_TO_SD_VAE]

The paper keeps Stable Diffusion 1.5's AutoKL frozen; no SD weights can be had here, so we train a
one-channel AutoKL on the X-rays (frontal and lateral) instead. ``--init`` (or ``stages.stage2_vae.init``)
starts from a user's VAE folder or hub id (e.g. an SD-1.5 ``vae`` subfolder): its RGB input/output
convolutions are averaged/summed to one channel. Training runs on random crops (``crop_size``) for speed;
the autoencoder is fully convolutional, so it encodes and decodes whole 256-px images afterwards. At the
end the latent scaling factor is measured on training images (1 / std of the latents, as in LDM) and
stored in the VAE config.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL

from codixr.models.configs import get_config
from codixr.models.objectives import vae_loss
from training.common import prepare_stage, train_stage
from training.data import GENERATION_SOURCES, TrainingData
from training.samples import save_image_grid

logger = logging.getLogger("training.stage2_vae")
STAGE = "stage2_vae"


def vae_from(init: str | None, config: dict) -> AutoencoderKL:
    """A fresh one-channel AutoKL, or one initialised from an existing (RGB or gray) VAE."""
    vae = AutoencoderKL(**config)
    if init:
        source = AutoencoderKL.from_pretrained(init, subfolder="vae" if (Path(init) / "vae").is_dir() else None)
        state = source.state_dict()
        state["encoder.conv_in.weight"] = state["encoder.conv_in.weight"].sum(1, keepdim=True)
        state["decoder.conv_out.weight"] = state["decoder.conv_out.weight"].mean(0, keepdim=True)
        state["decoder.conv_out.bias"] = state["decoder.conv_out.bias"].mean(0, keepdim=True)
        missing, unexpected = vae.load_state_dict(state, strict=False)
        logger.info("initialised the VAE from %s (%d tensors not matched)", init, len(missing) + len(unexpected))
    return vae


class VAEModule(torch.nn.Module):
    def __init__(self, vae, kl_weight):
        super().__init__()
        self.vae, self.kl_weight = vae, kl_weight

    def forward(self, batch, generator=None):
        return vae_loss(self.vae, batch["image"] * 2 - 1, self.kl_weight, generator)


@torch.no_grad()
def measure_scaling_factor(vae, data: TrainingData, items, n: int = 256) -> float:
    rows = np.linspace(0, len(items) - 1, min(n, len(items))).astype(int)
    latents = torch.cat([vae.encode(data.images(items, rows[i:i + 16]) * 2 - 1).latent_dist.mean
                         for i in range(0, len(rows), 16)])
    return float(1.0 / latents.std())


def main(argv=None) -> dict:
    ctx = prepare_stage(__doc__, STAGE, lambda p: p.add_argument("--init", default=None, help="a VAE folder or hub id"), argv)
    args, config, root, spec, data = ctx.args, ctx.config, ctx.root, ctx.spec, ctx.data
    vae = vae_from(args.init or spec.extra.get("init"), get_config(config["model"])["vae"])
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
        save_image_grid([real[:, 0], ((recon[:, 0] + 1) / 2).clamp(0, 1)], out / f"reconstruction-{step:06d}.png",
                        titles=["real (validation)", "reconstruction"])

    def save_fn(module, final: Path):
        module.vae.register_to_config(scaling_factor=measure_scaling_factor(module.vae, data, items))
        module.vae.save_pretrained(final / "vae")

    info = {"images": len(items), "crop_size": crop, "sources": sorted({it.source for it in items})}
    return train_stage(spec, root / STAGE, VAEModule(vae, float(spec.extra.get("kl_weight", 1e-6))), len(items),
                       batch_fn, save_fn, sample_fn, info)


if __name__ == "__main__":
    main()
