"""Stage 2b — the X-ray LDMs G_F and G_L (paper Sec. III.B): UNet + condition adapter on P(I), VAE and P frozen.

    python -m training.stage2_unet --view frontal --config small
    python -m training.stage2_unet --view lateral --config small     # starts from G_F (few lateral views here)
    python -m training.stage2_unet --view frontal --config small --init /root/codixr-runs/bundled/stage2_unet_frontal
    python -m training.stage2_unet --view frontal --config paper --init stable-diffusion-v1-5/stable-diffusion-v1-5

Latents of every training image are computed once with the frozen AutoKL (mean and std of q(z|x); each
step samples z). Conditions come from the frozen stage-1 prompt encoder through
``training.image_conditions.ImageConditionSampler``: the image's own P_X, a subset of its labels (label
encoder), P_R of a real IU impression whose labels match the image's, or its paired notes. The flow reads
them through its ``ConditionAdapter`` (``codixr.models.conditioning.condition_flow``: context tokens + the
condition in the time embedding), with condition dropout to the adapter's learned null condition; NIH's 64-px
images are flagged low resolution. Loss: Eq. 2 with the DDPM schedule. At the end the guidance scale is chosen
on labels -> F (Lung Opacity + Pneumonia vs No Finding, read by the findings classifier) and stored in the
adapter.

``augment_copies`` (G_L: ~40 training laterals) adds that many randomly varied versions of every training image
(``training.data.augment_radiographs``: small rotation, shift, zoom and contrast; no flips), encoded once like the
originals.

``init_from`` (``--init``) continues an existing UNet: another view's finished stage ("frontal": G_L starts from
G_F, adapter included), a run's stage folder, a package, a UNet folder or a hub id. A UNet made without the class
embedding gets one with its last layer zero-initialised (its predictions are unchanged at step 0) and an adapter
that starts as its single-token convention (``ConditionAdapter.init_as_single_token``). A UNet made for a
narrower latent (the previous 8-channel X-ray autoencoder) is widened by ``with_latent_channels``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL, DDPMScheduler, DPMSolverMultistepScheduler, UNet2DConditionModel
from transformers import PreTrainedTokenizerFast

from codixr.models.conditioning import ConditionAdapter, condition_flow, drop_mask
from codixr.models.configs import SD_SCHEDULER, build_condition_adapter, get_config
from codixr.models.objectives import diffusion_loss
from codixr.models.prompt_encoder import PromptEncoder
from codixr.pipeline import denoise_latents
from training.common import autoencoder_dir, load_done, prepare_stage, train_stage
from training.data import GENERATION_SOURCES, augment_radiographs
from training.image_conditions import KINDS, LOW_RESOLUTION_SOURCES, build_image_sampler
from training.samples import save_image_grid

logger = logging.getLogger("training.stage2_unet")


class UNetModule(torch.nn.Module):
    """G_F or G_L: the UNet and its condition adapter, trained together on sampled real conditions."""

    def __init__(self, unet, adapter, scheduler, sampler, latent_mean, latent_std, scale, dropout):
        super().__init__()
        self.unet, self.adapter, self.scheduler, self.sampler, self.dropout = unet, adapter, scheduler, sampler, dropout
        self.latent_mean, self.latent_std, self.scale = latent_mean, latent_std, scale

    def forward(self, batch, generator=None):
        idx = batch["indices"]
        mean, std = self.latent_mean[idx], self.latent_std[idx]
        z = (mean + std * torch.randn(mean.shape, generator=generator)).to(self.unet.device) * self.scale
        drawn = self.sampler.draw(idx, generator)
        drop = drop_mask(len(idx), self.dropout, generator, z.device)
        conditioning = condition_flow(self.adapter, drawn.conditions.to(z.device), drop=drop,
                                      low_resolution=drawn.low_resolution)
        return diffusion_loss(self.unet, self.scheduler, z, conditioning, generator), {}


@torch.no_grad()
def encode_latents(vae, images_fn, n: int, batch: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    means, stds = [], []
    for i in range(0, n, batch):
        dist = vae.encode(images_fn(range(i, min(i + batch, n))) * 2 - 1).latent_dist
        means.append(dist.mean)
        stds.append(dist.std)
    return torch.cat(means), torch.cat(stds)


@torch.no_grad()
def sample_latents(unet, conditions: torch.Tensor, adapter: ConditionAdapter | None = None, steps: int = 20,
                   guidance: float = 2.0, seed: int = 0) -> torch.Tensor:
    """(B, d) conditions -> (B, C, h, w) latents, with DPM-Solver++ and classifier-free guidance, through the same
    conditioning path as the pipeline (``condition_flow``). The starting noise depends only on ``seed`` and B."""
    scheduler = DPMSolverMultistepScheduler.from_config(SD_SCHEDULER, algorithm_type="dpmsolver++")
    scheduler.set_timesteps(steps)
    cfg = unet.config
    generator = torch.Generator().manual_seed(seed)
    z = torch.randn((conditions.shape[0], cfg.in_channels, cfg.sample_size, cfg.sample_size), generator=generator)
    cond = condition_flow(adapter, conditions.to(z.dtype), guidance=guidance > 1)
    return denoise_latents({"x": unet}, {"x": z * scheduler.init_noise_sigma}, {"x": cond}, {"x": scheduler},
                           guidance)["x"]


@torch.no_grad()
def sample_images(unet, vae, conditions: torch.Tensor, adapter: ConditionAdapter | None = None, steps: int = 20,
                  guidance: float = 2.0, seed: int = 0) -> torch.Tensor:
    """(B, d) conditions -> (B, H, W) images in [0, 1] (``sample_latents`` decoded by the X-ray VAE)."""
    z = sample_latents(unet, conditions, adapter, steps, guidance, seed)
    return ((vae.decode(z / vae.config.scaling_factor).sample[:, 0] + 1) / 2).clamp(0, 1)


def load_frozen(root: Path):
    """The frozen stage-1 prompt encoder + tokenizer and the stage-2a VAE."""
    stage1 = load_done(root / "stage1_align", "Stage 1 (prompt encoders)")
    vae_dir = autoencoder_dir(root)
    pe = PromptEncoder.from_pretrained(stage1 / "prompt_encoder").eval().requires_grad_(False)
    tokenizer = PreTrainedTokenizerFast.from_pretrained(stage1 / "tokenizer")
    vae = AutoencoderKL.from_pretrained(vae_dir / "vae").eval().requires_grad_(False)
    return pe, tokenizer, vae


def load_image_flow(folder: Path, view: str) -> tuple[UNet2DConditionModel, ConditionAdapter | None]:
    """A finished G_F/G_L from a stage's ``final/`` or a package: its UNet and adapter (None if it has none)."""
    unet = UNet2DConditionModel.from_pretrained(folder / f"unet_{view}")
    adapter = folder / f"condition_{view}"
    return unet, (ConditionAdapter.from_pretrained(adapter) if adapter.is_dir() else None)


# ---------------------------------------------------------------------------------------------- initialisation
def with_class_embedding(unet: UNet2DConditionModel, condition_dim: int) -> tuple[UNet2DConditionModel, bool]:
    """``unet`` with the pooled condition added to its time embedding (``class_embed_type="projection"``).

    A UNet made without it is rebuilt with it, its weights loaded, and the new embedding's last layer set to zero,
    so that its predictions are unchanged whatever ``class_labels`` say. Returns (UNet, whether it was rebuilt).
    """
    if unet.config.class_embed_type == "projection":
        if unet.config.projection_class_embeddings_input_dim != condition_dim:
            raise ValueError(f"the UNet's class embedding takes {unet.config.projection_class_embeddings_input_dim}-d "
                             f"conditions, the prompt encoder gives {condition_dim}-d ones")
        return unet, False
    if unet.config.class_embed_type is not None or unet.config.num_class_embeds is not None:
        raise ValueError(f"cannot continue a UNet with class_embed_type={unet.config.class_embed_type!r}")
    config = {k: v for k, v in unet.config.items() if not k.startswith("_")}
    new = UNet2DConditionModel.from_config({**config, "class_embed_type": "projection",
                                            "projection_class_embeddings_input_dim": condition_dim})
    missing, unexpected = new.load_state_dict(unet.state_dict(), strict=False)
    if unexpected or any(not k.startswith("class_embedding.") for k in missing):
        raise ValueError(f"the UNet does not fit the rebuilt one (missing {missing}, unexpected {unexpected})")
    with torch.no_grad():
        new.class_embedding.linear_2.weight.zero_()
        new.class_embedding.linear_2.bias.zero_()
    return new, True


def with_latent_channels(unet: UNet2DConditionModel, channels: int) -> tuple[UNet2DConditionModel, bool]:
    """``unet`` for latents of ``channels`` channels (a wider X-ray autoencoder than the one it was trained on).

    Everything but ``conv_in``/``conv_out`` is kept; the old channels keep their weights, the new input channels start
    with zero weights and the new output channels predict zero noise, so the UNet starts as it was on the channels it
    knows. Returns (UNet, whether it was rebuilt).
    """
    old = unet.config.in_channels
    if old == channels and unet.config.out_channels == channels:
        return unet, False
    if channels < old:
        raise ValueError(f"cannot continue a UNet made for {old}-channel latents on {channels}-channel ones")
    config = {k: v for k, v in unet.config.items() if not k.startswith("_")}
    new = UNet2DConditionModel.from_config({**config, "in_channels": channels, "out_channels": channels})
    state = unet.state_dict()
    own = new.state_dict()
    with torch.no_grad():
        conv_in = torch.zeros_like(own["conv_in.weight"])
        conv_in[:, :old] = state["conv_in.weight"]
        conv_out_w = torch.zeros_like(own["conv_out.weight"])
        conv_out_w[:old] = state["conv_out.weight"]
        conv_out_b = torch.zeros_like(own["conv_out.bias"])
        conv_out_b[:old] = state["conv_out.bias"]
    state.update({"conv_in.weight": conv_in, "conv_out.weight": conv_out_w, "conv_out.bias": conv_out_b})
    new.load_state_dict(state)
    return new, True


def resolve_init(init: str, view: str, root: Path) -> tuple[Path | str, Path | None]:
    """Where ``init_from`` points: (UNet folder or hub id, the adapter folder beside it or None)."""
    if init in ("frontal", "lateral"):  # another view's finished LDM of this run (G_L starts from G_F)
        final = load_done(root / f"stage2_unet_{init}", f"G_{init}")
        return final / f"unet_{init}", final / f"condition_{init}"
    path = Path(init).expanduser()
    if not path.exists():
        return init, None  # a hub id (e.g. Stable Diffusion 1.5, the `paper` configuration's UNet)
    for folder in (path / "final", path):  # a run's stage folder, a stage's final/ or a package
        if (folder / f"unet_{view}").is_dir():
            return folder / f"unet_{view}", folder / f"condition_{view}"
    if (path / "unet").is_dir():  # a Stable-Diffusion-style folder
        return path / "unet", None
    return path, path.parent / f"condition_{view}"  # a UNet folder


def initial_flow(init: str | None, view: str, model_cfg: dict, root: Path
                 ) -> tuple[UNet2DConditionModel, ConditionAdapter, dict]:
    """The UNet and adapter a G_F/G_L run starts from, and what it says about them (for DONE.json)."""
    wanted = build_condition_adapter(model_cfg, view)
    condition_dim = model_cfg["prompt_encoder"]["projection_dim"]
    if not init:
        return UNet2DConditionModel(**model_cfg["unet"]), wanted, {"init_from": None}
    unet_dir, adapter_dir = resolve_init(init, view, root)
    unet = UNet2DConditionModel.from_pretrained(unet_dir) if isinstance(unet_dir, Path) else \
        UNet2DConditionModel.from_pretrained(unet_dir, subfolder="unet")
    unet, rebuilt = with_class_embedding(unet, condition_dim)
    old_channels = unet.config.in_channels
    unet, widened = with_latent_channels(unet, model_cfg["unet"]["in_channels"])
    info = {"init_from": str(unet_dir), "class_embedding_added": rebuilt}
    if widened:
        info["latent_channels_widened"] = [old_channels, unet.config.in_channels]
    if adapter_dir is not None and adapter_dir.is_dir() and not rebuilt:
        old = ConditionAdapter.from_pretrained(adapter_dir)
        # the old adapter's weights in an adapter with this configuration's flags (e.g. low_resolution_embedding)
        adapter = ConditionAdapter.from_config({**{k: v for k, v in old.config.items() if not k.startswith("_")},
                                                "low_resolution_embedding": wanted.config.low_resolution_embedding})
        adapter.load_state_dict(old.state_dict(), strict=False)
        info["adapter_from"] = str(adapter_dir)
    else:
        adapter = wanted
        info["adapter_from"] = "single-token start" if rebuilt and adapter.init_as_single_token() else "fresh"
    if adapter.config.cross_attention_dim != unet.config.cross_attention_dim:
        raise ValueError(f"adapter makes {adapter.config.cross_attention_dim}-d tokens, the UNet attends to "
                         f"{unet.config.cross_attention_dim}-d ones")
    return unet, adapter, info


# ---------------------------------------------------------------------------------------------- guidance
def auroc(positive: np.ndarray, negative: np.ndarray) -> float:
    """Probability that a positive scores above a negative (ties count half): the rank AUROC."""
    diff = np.asarray(positive, float)[:, None] - np.asarray(negative, float)[None, :]
    return float(((diff > 0) + 0.5 * (diff == 0)).mean())


def opacity_reader():
    """Images -> the findings classifier's mean calibrated Lung Opacity / Pneumonia score, or None if absent."""
    from codixr.findings import ClassifierUnavailable, load_classifier
    from codixr.findings.classifier import pathology_name

    try:
        clf = load_classifier("auto")
    except ClassifierUnavailable as exc:
        logger.warning("guidance scale not chosen: %s", exc)
        return None
    columns = [i for i, t in enumerate(clf.targets) if t and pathology_name(t) in ("Lung Opacity", "Pneumonia")]

    @torch.no_grad()
    def read(images: torch.Tensor) -> np.ndarray:
        return torch.cat([clf(images[i:i + 16, None].float())[:, columns].mean(1)
                          for i in range(0, len(images), 16)]).cpu().numpy()

    return read


@torch.no_grad()
def choose_guidance(unet, adapter, vae, pe, scales, n: int = 16, steps: int = 20, reader=None
                    ) -> tuple[float | None, list[dict]]:
    """The guidance scale at which labels -> image separates best: ``n`` images from Lung Opacity + Pneumonia and
    ``n`` from No Finding (same seeds), scored by the findings classifier (AUROC of its opacity/pneumonia score).
    Ties go to the smaller scale. Returns (best scale or None without a classifier, the table of every scale)."""
    from codixr.modality import CONDITION_LABELS, NO_FINDING

    reader = reader or opacity_reader()
    if reader is None:
        return None, []
    hot = torch.zeros(2, len(CONDITION_LABELS))
    hot[0, [CONDITION_LABELS.index("Lung Opacity"), CONDITION_LABELS.index("Pneumonia")]] = 1
    hot[1, CONDITION_LABELS.index(NO_FINDING)] = 1
    opacity, normal = pe.encode_labels(hot).pooled.float()
    table = []
    for scale in scales:
        scores = [reader(sample_images(unet, vae, c.expand(n, -1), adapter, steps=steps, guidance=scale))
                  for c in (opacity, normal)]
        row = {"guidance_scale": float(scale), "auroc_opacity_vs_no_finding": round(auroc(*scores), 4),
               "mean_score_opacity": round(float(scores[0].mean()), 4),
               "mean_score_no_finding": round(float(scores[1].mean()), 4), "n_each": n}
        logger.info("guidance %.1f: %s", scale, row)
        table.append(row)
    best = max(table, key=lambda r: (r["auroc_opacity_vs_no_finding"], -r["guidance_scale"]))
    return best["guidance_scale"], table


# ---------------------------------------------------------------------------------------------- stage
def main(argv=None) -> dict:
    def extra(parser):
        parser.add_argument("--view", choices=("frontal", "lateral"), required=True)
        parser.add_argument("--init", default=None,
                            help="start from a finished G_F/G_L: a run's stage folder, a package, a UNet folder or a hub id")

    ctx = prepare_stage(__doc__, lambda a: f"stage2_unet_{a.view}", extra, argv)
    args, config, root, stage, spec, data = ctx.args, ctx.config, ctx.root, ctx.stage, ctx.spec, ctx.data
    model_cfg = get_config(config["model"])
    pe, tokenizer, vae = load_frozen(root)
    sources = GENERATION_SOURCES + (LOW_RESOLUTION_SOURCES if spec.extra.get("low_resolution_images", True) else ())
    items = data.image_items("train", views=(args.view,), sources=sources)
    if not items:
        raise RuntimeError(f"no training images of the {args.view} view")
    val = data.image_items("validate", views=(args.view,), sources=GENERATION_SOURCES)[:6] or items[:6]
    init = args.init or spec.extra.get("init_from")
    unet, adapter, init_info = initial_flow(init, args.view, model_cfg, root)
    logger.info("%s: %d training images (%d low resolution); encoding latents and conditions; start: %s", stage,
                len(items), sum(it.source in LOW_RESOLUTION_SOURCES for it in items), init_info)
    copies = int(spec.extra.get("augment_copies", 0))
    originals = len(items)
    if copies:  # few images of this view (laterals): each also enters as `copies` randomly varied versions
        items = items * (1 + copies)
        logger.info("%s: %d images, each with %d augmented copies", stage, originals, copies)

    def training_images(idx) -> torch.Tensor:
        idx = list(idx)
        images = data.images(items, idx)
        varied = [k for k, i in enumerate(idx) if i >= originals]
        if varied:
            generator = torch.Generator().manual_seed(idx[varied[0]])
            images[varied] = augment_radiographs(images[varied], generator)
        return images

    mean, std = encode_latents(vae, training_images, len(items))
    weights = {k: float(spec.extra[f"{k}_weight"]) for k in KINDS if f"{k}_weight" in spec.extra}
    sampler, sampler_info = build_image_sampler(data, items, pe, tokenizer, weights)
    val_sampler, _ = build_image_sampler(data, val, pe, tokenizer, weights)
    module = UNetModule(unet, adapter, DDPMScheduler(**SD_SCHEDULER), sampler, mean, std, vae.config.scaling_factor,
                        float(spec.extra.get("condition_dropout", 0.1)))

    def batch_fn(indices, generator):
        return {"indices": indices}

    def sample_fn(module, out: Path, step: int):
        rows = [data.images(val, range(len(val)))[:, 0]]
        titles = [f"real {args.view} (validation)"]
        guidance = float(module.adapter.config.guidance_scale)
        for kind in KINDS:  # one row per condition kind, blank where a study lacks it
            drawn, have = val_sampler.of_kind(range(len(val)), kind, torch.Generator().manual_seed(0))
            if have.any():
                images = torch.zeros_like(rows[0])
                images[have] = sample_images(module.unet, vae, drawn.conditions, module.adapter, guidance=guidance)
                rows.append(images)
                titles.append(f"generated from its {kind}")
        save_image_grid(rows, out / f"samples-{step:06d}.png", titles)

    def save_fn(module, final: Path):
        unet, adapter = module.unet.eval(), module.adapter.eval()
        scales = [float(s) for s in spec.extra.get("guidance_scales", (1.5, 2.0, 3.0, 5.0))]
        if args.view == "frontal" and len(scales) > 1:
            best, table = choose_guidance(unet, adapter, vae, pe, scales, n=int(spec.extra.get("guidance_samples", 16)),
                                          steps=int(spec.extra.get("guidance_steps", 20)))
            if best is not None:
                adapter.register_to_config(guidance_scale=best)
                info["guidance_selection"] = table
        elif args.view == "lateral":  # the classifier reads frontals only: G_L keeps the scale it started with
            info["guidance_selection"] = "kept from the start (the findings classifier reads frontal views only)"
        info["guidance_scale"] = float(adapter.config.guidance_scale)
        unet.save_pretrained(final / f"unet_{args.view}")
        adapter.save_pretrained(final / f"condition_{args.view}")

    info = {"images": originals, "augmented_copies": copies, "sources": {src: sum(it.source == src for it in items[:originals])
                                                                   for src in sorted({it.source for it in items})},
            "conditions": sampler_info, **init_info}
    return train_stage(spec, root / stage, module, len(items), batch_fn, save_fn, sample_fn, info)


if __name__ == "__main__":
    main()
