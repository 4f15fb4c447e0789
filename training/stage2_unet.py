"""Stage 2b — the X-ray LDMs G_F and G_L (paper Sec. III.B): UNet conditioned on P(I), VAE and P frozen.

    python -m training.stage2_unet --view frontal --config small
    python -m training.stage2_unet --view lateral --config small     # starts from G_F (few lateral views here)
    python -m training.stage2_unet --view frontal --config paper --init stable-diffusion-v1-5/stable-diffusion-v1-5

Latents of every training image are computed once with the frozen AutoKL (mean and std of q(z|x); each
step samples z). Conditions come from the frozen stage-1 prompt encoder (``training.conditions``): the
image's own P_X embedding, its labels, or its paired text, with condition dropout for classifier-free
guidance. Loss: Eq. 2 with the DDPM schedule.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL, DDPMScheduler, DPMSolverMultistepScheduler, UNet2DConditionModel
from transformers import PreTrainedTokenizerFast

from codixr.models.configs import SD_SCHEDULER, get_config
from codixr.models.objectives import diffusion_loss
from codixr.models.prompt_encoder import PromptEncoder
from codixr.pipeline import denoise_latents
from training.common import load_done, prepare_stage, train_stage
from training.conditions import ConditionBank, embed_images, embed_labels, embed_texts
from training.data import GENERATION_SOURCES, TrainingData
from training.samples import save_image_grid

logger = logging.getLogger("training.stage2_unet")


class UNetModule(torch.nn.Module):
    def __init__(self, unet, scheduler, bank, latent_mean, latent_std, scale, dropout):
        super().__init__()
        self.unet, self.scheduler, self.bank, self.dropout = unet, scheduler, bank, dropout
        self.latent_mean, self.latent_std, self.scale = latent_mean, latent_std, scale

    def forward(self, batch, generator=None):
        idx = batch["indices"]
        mean, std = self.latent_mean[idx], self.latent_std[idx]
        z = (mean + std * torch.randn(mean.shape, generator=generator)).to(self.unet.device) * self.scale
        cond = self.bank.sample(idx, generator, self.dropout).to(z.device)
        return diffusion_loss(self.unet, self.scheduler, z, cond, generator), {}


@torch.no_grad()
def encode_latents(vae, images_fn, n: int, batch: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    means, stds = [], []
    for i in range(0, n, batch):
        dist = vae.encode(images_fn(range(i, min(i + batch, n))) * 2 - 1).latent_dist
        means.append(dist.mean)
        stds.append(dist.std)
    return torch.cat(means), torch.cat(stds)


@torch.no_grad()
def sample_images(unet, vae, conditions: torch.Tensor, steps: int = 20, guidance: float = 2.0, seed: int = 0) -> torch.Tensor:
    """(B, 1, d) conditions -> (B, H, W) images in [0, 1], with DPM-Solver++ and classifier-free guidance."""
    scheduler = DPMSolverMultistepScheduler.from_config(SD_SCHEDULER, algorithm_type="dpmsolver++")
    scheduler.set_timesteps(steps)
    cfg = unet.config
    generator = torch.Generator().manual_seed(seed)
    z = torch.randn((conditions.shape[0], cfg.in_channels, cfg.sample_size, cfg.sample_size), generator=generator)
    context = torch.cat([torch.zeros_like(conditions), conditions]) if guidance > 1 else conditions
    z = denoise_latents({"x": unet}, {"x": z * scheduler.init_noise_sigma}, context, {"x": scheduler}, guidance)["x"]
    return ((vae.decode(z / vae.config.scaling_factor).sample[:, 0] + 1) / 2).clamp(0, 1)


def load_frozen(root: Path):
    """The frozen stage-1 prompt encoder + tokenizer and the stage-2a VAE."""
    stage1 = load_done(root / "stage1_align", "Stage 1 (prompt encoders)")
    vae_dir = load_done(root / "stage2_vae", "Stage 2a (X-ray autoencoder)")
    pe = PromptEncoder.from_pretrained(stage1 / "prompt_encoder").eval().requires_grad_(False)
    tokenizer = PreTrainedTokenizerFast.from_pretrained(stage1 / "tokenizer")
    vae = AutoencoderKL.from_pretrained(vae_dir / "vae").eval().requires_grad_(False)
    return pe, tokenizer, vae


def image_condition_bank(pe, tokenizer, data: TrainingData, items) -> ConditionBank:
    """Candidate conditions of image items: P_X(image), labels, paired text."""
    h_img = embed_images(pe, lambda idx: data.images(items, list(idx)), len(items))
    multi_hot = np.stack([it.labels for it in items])
    has_labels = np.array([it.has_labels for it in items])
    h_lab = embed_labels(pe, multi_hot, has_labels)
    h_txt, has_txt = embed_texts(pe, tokenizer, [it.text for it in items])
    return ConditionBank([h_img, h_lab if has_labels.any() else None, h_txt if has_txt.any() else None],
                         [np.ones(len(items), bool), has_labels, has_txt], ["image", "labels", "text"])


def main(argv=None) -> dict:
    def extra(parser):
        parser.add_argument("--view", choices=("frontal", "lateral"), required=True)
        parser.add_argument("--init", default=None, help="start from a UNet folder or hub id (e.g. an SD-1.5 folder)")

    ctx = prepare_stage(__doc__, lambda a: f"stage2_unet_{a.view}", extra, argv)
    args, config, root, stage, spec, data = ctx.args, ctx.config, ctx.root, ctx.stage, ctx.spec, ctx.data
    pe, tokenizer, vae = load_frozen(root)
    items = data.image_items("train", views=(args.view,), sources=GENERATION_SOURCES)
    if not items:
        raise RuntimeError(f"no training images of the {args.view} view")
    val = data.image_items("validate", views=(args.view,), sources=GENERATION_SOURCES)[:6] or items[:6]
    init = args.init or spec.extra.get("init_from")
    if init in ("frontal", "lateral"):  # another view's finished LDM (G_L starts from G_F here)
        init_dir = load_done(root / f"stage2_unet_{init}", f"G_{init}")
        unet = UNet2DConditionModel.from_pretrained(init_dir / f"unet_{init}")
    elif init:  # a user's UNet folder or hub id, e.g. Stable Diffusion 1.5 (matches the `paper` configuration)
        unet = UNet2DConditionModel.from_pretrained(init, subfolder="unet" if (Path(init) / "unet").is_dir() else None)
    else:
        unet = UNet2DConditionModel(**get_config(config["model"])["unet"])
    logger.info("%s: %d training images; encoding latents and conditions", stage, len(items))
    mean, std = encode_latents(vae, lambda idx: data.images(items, list(idx)), len(items))
    bank = image_condition_bank(pe, tokenizer, data, items)
    val_bank = image_condition_bank(pe, tokenizer, data, val)
    module = UNetModule(unet, DDPMScheduler(**SD_SCHEDULER), bank, mean, std, vae.config.scaling_factor,
                        float(spec.extra.get("condition_dropout", 0.1)))
    def batch_fn(indices, generator):
        return {"indices": indices}

    def sample_fn(module, out: Path, step: int):
        rows = [data.images(val, range(len(val)))[:, 0]]
        titles = [f"real {args.view} (validation)"]
        for k, name in enumerate(val_bank.names):  # one row per condition kind, blank where a study lacks it
            have = val_bank.mask[:, k]
            if have.any():
                images = torch.zeros_like(rows[0])
                images[have] = sample_images(module.unet, vae, val_bank.embeddings[have, k][:, None])
                rows.append(images)
                titles.append(f"generated from its {name}")
        save_image_grid(rows, out / f"samples-{step:06d}.png", titles)

    def save_fn(module, final: Path):
        module.unet.save_pretrained(final / f"unet_{args.view}")

    info = {"images": len(items), "condition_kinds": bank.names,
            "sources": sorted({it.source for it in items}), "init_from": init}
    return train_stage(spec, root / stage, module, len(items), batch_fn, save_fn, sample_fn, info)


if __name__ == "__main__":
    main()
