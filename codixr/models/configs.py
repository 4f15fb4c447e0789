"""Model sizes: ``tiny`` (tests, seconds on CPU), ``small`` (the bundled default), ``paper`` (CoDi-XR's scale).

Each configuration gives the constructor arguments of every component; ``build_components``
turns one into freshly initialised modules. The paper's scale follows Stable Diffusion 1.5 for
the X-ray LDMs (AutoKL + SD UNet), CLIP ViT-L/14 for P_X/P_R, Optimus (BERT-base + GPT-2) with
768-d latents and a Versatile-Diffusion-sized FCResBlock UNet for the report LDM.
"""

from __future__ import annotations

import copy
from typing import Any

# Stable Diffusion 1.5's noise schedule, every field explicit so samplers built from it agree before and after saving.
SD_SCHEDULER = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                    prediction_type="epsilon", clip_sample=False, steps_offset=1, timestep_spacing="leading")


# The text VAE's objective and z injection (Optimus): summed reconstruction, z in every decoder position.
_OPTIMUS = dict(inject_embeddings=True, pooling="mean", reconstruction="sum")


def _unet(blocks, layers, cross_dim, sample_size, latent_channels, head_dim, condition_dim, groups=32):
    """An image LDM's UNet: cross-attention to the condition tokens and the pooled condition (``condition_dim``,
    the prompt encoders' projection width) added to the timestep embedding (``class_embed_type="projection"``)."""
    n = len(blocks)
    return dict(
        sample_size=sample_size, in_channels=latent_channels, out_channels=latent_channels,
        block_out_channels=list(blocks), layers_per_block=layers, cross_attention_dim=cross_dim,
        down_block_types=["CrossAttnDownBlock2D"] * (n - 1) + ["DownBlock2D"],
        up_block_types=["UpBlock2D"] + ["CrossAttnUpBlock2D"] * (n - 1),
        attention_head_dim=head_dim, norm_num_groups=groups,
        class_embed_type="projection", projection_class_embeddings_input_dim=condition_dim,
    )


def _vae(blocks, latent_channels, sample_size, layers=1, groups=32):
    return dict(
        in_channels=1, out_channels=1, latent_channels=latent_channels, block_out_channels=list(blocks),
        down_block_types=["DownEncoderBlock2D"] * len(blocks), up_block_types=["UpDecoderBlock2D"] * len(blocks),
        layers_per_block=layers, norm_num_groups=groups, sample_size=sample_size,
    )


CONFIGS: dict[str, dict[str, Any]] = {
    "tiny": dict(
        image_size=64,
        vocab_size=None,  # taken from the tokenizer
        prompt_encoder=dict(
            projection_dim=32,
            adapatch=dict(num_samples=2),
            vision_config=dict(image_size=64, patch_size=16, hidden_size=32, intermediate_size=64,
                               num_hidden_layers=1, num_attention_heads=2),
            text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2),
        ),
        vae=_vae((8, 16, 16), latent_channels=4, sample_size=64, groups=4),
        unet=_unet((16, 32), 1, 32, sample_size=16, latent_channels=4, head_dim=2, condition_dim=32, groups=8),
        text_vae=dict(
            latent_dim=16, num_prefix_tokens=2, max_length=24, **_OPTIMUS,
            encoder_config=dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                                max_position_embeddings=80),
            decoder_config=dict(n_embd=32, n_layer=1, n_head=2),
        ),
        text_unet=dict(latent_dim=16, block_out_channels=[16, 32], num_tokens=4, layers_per_block=1,
                       cross_attention_dim=32, attention_heads=2, norm_num_groups=4, condition_embedding_dim=32),
        condition_report=dict(num_tokens=2, hidden_dim=32),
        condition_frontal=dict(num_tokens=2, hidden_dim=32, low_resolution_embedding=True),
        condition_lateral=dict(num_tokens=2, hidden_dim=32, low_resolution_embedding=True),
        environment=dict(hidden_dim=16, num_tokens=2, dim_head=8),
        scheduler=SD_SCHEDULER,
    ),
    "small": dict(
        image_size=256,
        vocab_size=None,
        prompt_encoder=dict(
            projection_dim=256,
            adapatch=dict(num_samples=4),
            vision_config=dict(image_size=256, patch_size=32, hidden_size=192, intermediate_size=768,
                               num_hidden_layers=4, num_attention_heads=3),
            text_config=dict(hidden_size=192, intermediate_size=768, num_hidden_layers=4, num_attention_heads=3),
        ),
        vae=_vae((32, 64, 96, 96, 96), latent_channels=8, sample_size=256, groups=16),
        unet=_unet((40, 80, 160), 1, 256, sample_size=16, latent_channels=8, head_dim=8, condition_dim=256, groups=8),
        text_vae=dict(
            latent_dim=128, num_prefix_tokens=4, max_length=64, **_OPTIMUS,
            encoder_config=dict(hidden_size=192, num_hidden_layers=3, num_attention_heads=3, intermediate_size=768,
                                max_position_embeddings=80),
            decoder_config=dict(n_embd=192, n_layer=3, n_head=3),
        ),
        text_unet=dict(latent_dim=128, block_out_channels=[48, 96], num_tokens=4, layers_per_block=1,
                       cross_attention_dim=256, attention_heads=4, norm_num_groups=16, condition_embedding_dim=256),
        condition_report=dict(num_tokens=4, hidden_dim=512),
        # image adapters: 2 tokens, hidden = projection width (the package's 60 MB budget; the pooled condition also
        # reaches every block through the class embedding); NIH's 64-px rows are flagged low resolution
        condition_frontal=dict(num_tokens=2, hidden_dim=256, low_resolution_embedding=True),
        condition_lateral=dict(num_tokens=2, hidden_dim=256, low_resolution_embedding=True),
        environment=dict(hidden_dim=128, num_tokens=4, dim_head=32),
        scheduler=SD_SCHEDULER,
    ),
    "paper": dict(
        image_size=256,
        vocab_size=49408,  # CLIP's BPE vocabulary size
        prompt_encoder=dict(
            projection_dim=768,
            adapatch=dict(num_samples=4),
            vision_config=dict(image_size=224, patch_size=14, hidden_size=1024, intermediate_size=4096,
                               num_hidden_layers=24, num_attention_heads=16),
            text_config=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12),
        ),
        vae=_vae((128, 256, 512, 512), latent_channels=4, sample_size=256, layers=2),
        unet=_unet((320, 640, 1280, 1280), 2, 768, sample_size=32, latent_channels=4, head_dim=8, condition_dim=768),
        text_vae=dict(
            latent_dim=768, num_prefix_tokens=4, max_length=77, **_OPTIMUS,
            encoder_config=dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                                max_position_embeddings=512),
            decoder_config=dict(n_embd=768, n_layer=12, n_head=12),
        ),
        text_unet=dict(latent_dim=768, block_out_channels=[320, 640, 1280, 1280], num_tokens=4, layers_per_block=2,
                       cross_attention_dim=768, attention_heads=8, norm_num_groups=32, condition_embedding_dim=768),
        condition_report=dict(num_tokens=4, hidden_dim=1536),
        condition_frontal=dict(num_tokens=4, hidden_dim=768, low_resolution_embedding=True),
        condition_lateral=dict(num_tokens=4, hidden_dim=768, low_resolution_embedding=True),
        environment=dict(hidden_dim=512, num_tokens=4, dim_head=64),
        scheduler=SD_SCHEDULER,
    ),
}


def get_config(name: str) -> dict[str, Any]:
    """A deep copy of a named configuration."""
    if name not in CONFIGS:
        raise KeyError(f"unknown model configuration {name!r}; choose one of {', '.join(CONFIGS)}")
    return copy.deepcopy(CONFIGS[name])


def build_components(name_or_config: str | dict, tokenizer=None, vocab_size: int | None = None,
                     with_joint: bool = True) -> dict[str, Any]:
    """Freshly initialised components of a ``CoDiXRPipeline`` for a configuration.

    Args:
        name_or_config: "tiny", "small", "paper" or a configuration dict.
        tokenizer: the report tokenizer (gives vocab size and special ids); optional for the paper scale.
        vocab_size: overrides the vocabulary size when no tokenizer is given.
        with_joint: also build the stage-3 parts (environment encoders V and QKV layers).
    """
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel

    from codixr.models.text_unet import TextUNet
    from codixr.models.text_vae import OptimusTextVAE

    cfg = get_config(name_or_config) if isinstance(name_or_config, str) else copy.deepcopy(name_or_config)
    vocab = vocab_size or (len(tokenizer) if tokenizer is not None else cfg.get("vocab_size"))
    if vocab is None:
        raise ValueError("build_components needs a tokenizer or vocab_size for this configuration")
    special: dict[str, int] = {}
    if tokenizer is not None:
        special = dict(pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.cls_token_id,
                       eos_token_id=tokenizer.sep_token_id)
    elif vocab < 49406:  # our WordPiece layout (SPECIAL_TOKENS): [PAD]=0, [CLS]=2, [SEP]=3
        special = dict(pad_token_id=0, bos_token_id=2, eos_token_id=3)
    text_cfg = dict(cfg["prompt_encoder"]["text_config"], vocab_size=vocab, **special)
    prompt_encoder = build_prompt_encoder(cfg, text_cfg)
    vae = AutoencoderKL(**cfg["vae"])
    unet_frontal = UNet2DConditionModel(**cfg["unet"])
    unet_lateral = UNet2DConditionModel(**cfg["unet"])
    text_vae = OptimusTextVAE(vocab_size=vocab, **cfg["text_vae"], **special)
    text_unet = TextUNet(**cfg["text_unet"])
    components: dict[str, Any] = dict(
        prompt_encoder=prompt_encoder, vae=vae, unet_frontal=unet_frontal, unet_lateral=unet_lateral,
        text_vae=text_vae, text_unet=text_unet, scheduler=DDPMScheduler(**cfg["scheduler"]), tokenizer=tokenizer,
    )
    for flow in ("frontal", "lateral", "report"):
        if f"condition_{flow}" in cfg:
            components[f"condition_{flow}"] = build_condition_adapter(cfg, flow)
    if with_joint:
        components.update(build_joint_components(components, cfg))
    return components


def build_condition_adapter(cfg: dict[str, Any], flow: str):
    """The ``ConditionAdapter`` of one flow ("frontal", "lateral", "report"), sized to its denoiser's context."""
    from codixr.models.conditioning import ConditionAdapter

    denoiser = cfg["text_unet"] if flow == "report" else cfg["unet"]
    return ConditionAdapter(condition_dim=cfg["prompt_encoder"]["projection_dim"],
                            cross_attention_dim=denoiser["cross_attention_dim"], **cfg[f"condition_{flow}"])


def build_prompt_encoder(cfg: dict[str, Any], text_config: dict[str, Any]):
    """P_X/P_R (+ the AdaPatch head when the configuration switches it on with an ``adapatch`` entry)."""
    from codixr.models.adapatch import adapatch_config
    from codixr.models.prompt_encoder import PromptEncoder

    pe = cfg["prompt_encoder"]
    ada = adapatch_config(pe["vision_config"], pe["projection_dim"], **pe["adapatch"]) if pe.get("adapatch") else None
    return PromptEncoder(vision_config=pe["vision_config"], text_config=text_config,
                         projection_dim=pe["projection_dim"], adapatch_config=ada)


def build_joint_components(components: dict[str, Any], cfg: dict[str, Any]) -> dict[str, Any]:
    """The stage-3 parts for each flow: environment encoder V and QKV layers sized to its UNet."""
    from codixr.models.environment import CrossModalAttention, EnvironmentEncoder

    env = cfg["environment"]
    dim = cfg["prompt_encoder"]["projection_dim"]
    unet_cfg = components["unet_frontal"].config
    image_latent = (unet_cfg.in_channels, unet_cfg.sample_size, unet_cfg.sample_size)
    text_latent = (components["text_unet"].config.latent_dim,)
    out = {}
    for name, unet, shape in (("frontal", components["unet_frontal"], image_latent),
                              ("lateral", components["unet_lateral"], image_latent),
                              ("report", components["text_unet"], text_latent)):
        out[f"environment_{name}"] = EnvironmentEncoder(latent_shape=shape, hidden_dim=env["hidden_dim"],
                                                        projection_dim=dim, num_tokens=env["num_tokens"])
        out[f"cross_attention_{name}"] = CrossModalAttention.for_unet(unet, environment_dim=dim,
                                                                      dim_head=env["dim_head"])
    return out
