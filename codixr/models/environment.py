"""Cross-modal alignment (paper Sec. III.C, Fig. 2c): environment encoders V and QKV layers.

For joint generation each flow m gets two trainable parts:

* an **environment encoder V_m** that projects its noisy latent z_t into the shared space, as a
  few tokens (for the other flows to attend to) and a pooled vector (for the InfoNCE term CL);
* **cross-attention layers QKV_m**, one beside every cross-attention of its UNet, through which
  the UNet attends to the environment tokens V_{m'}(z_{m'}) of the other flows (Eq. 3-5).

The QKV layers live in their own component (``CrossModalAttention``) and are attached to a UNet
as diffusers attention processors, so the UNets themselves stay frozen and unchanged on disk.
The output projection of every QKV layer starts at zero: before stage 3 training, attaching them
does not change what a UNet generates.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.attention_processor import Attention, AttnProcessor2_0
from diffusers.models.modeling_utils import ModelMixin


class EnvironmentEncoder(ModelMixin, ConfigMixin):
    """V: projects a flow's latent z_t into the shared space.

    Args:
        latent_shape: shape of one latent without batch: (C, H, W) for an image flow, (D,) for the report flow.
        hidden_dim: width of the internal features.
        projection_dim: width of the shared space (the QKV layers' key/value input).
        num_tokens: tokens produced for the report flow (image flows make one token per 2x2 latent cell).
    """

    @register_to_config
    def __init__(self, latent_shape: tuple[int, ...] = (4, 16, 16), hidden_dim: int = 128, projection_dim: int = 256,
                 num_tokens: int = 4):
        super().__init__()
        self.is_image = len(latent_shape) == 3
        if self.is_image:
            c, h, w = latent_shape
            self.body = nn.Sequential(
                nn.Conv2d(c, hidden_dim, 3, padding=1), nn.SiLU(),
                nn.Conv2d(hidden_dim, hidden_dim, 3, stride=2, padding=1), nn.SiLU(),
            )
            n = ((h + 1) // 2) * ((w + 1) // 2)
        else:
            (d,) = latent_shape
            self.body = nn.Sequential(nn.Linear(d, hidden_dim * num_tokens), nn.SiLU())
            n = num_tokens
        self.position = nn.Parameter(torch.zeros(1, n, hidden_dim))
        self.norm = nn.LayerNorm(hidden_dim)
        self.to_tokens = nn.Linear(hidden_dim, projection_dim)
        self.to_pooled = nn.Linear(hidden_dim, projection_dim)

    def forward(self, latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """z_t -> (tokens (B, N, projection_dim), pooled (B, projection_dim) L2-normalised)."""
        b = latents.shape[0]
        h = self.body(latents)
        h = h.flatten(2).transpose(1, 2) if self.is_image else h.view(b, self.config.num_tokens, -1)
        h = self.norm(h + self.position)
        return self.to_tokens(h), F.normalize(self.to_pooled(h.mean(dim=1)), dim=-1)


class _QKV(nn.Module):
    """One cross-modal attention layer: queries from the UNet hidden state, keys/values from V tokens."""

    def __init__(self, query_dim: int, environment_dim: int, heads: int, dim_head: int):
        super().__init__()
        inner = heads * dim_head
        self.heads = heads
        self.to_q = nn.Linear(query_dim, inner, bias=False)
        self.to_k = nn.Linear(environment_dim, inner, bias=False)
        self.to_v = nn.Linear(environment_dim, inner, bias=False)
        self.to_out = nn.Linear(inner, query_dim)
        nn.init.zeros_(self.to_out.weight)
        nn.init.zeros_(self.to_out.bias)

    def forward(self, hidden: torch.Tensor, environment: torch.Tensor) -> torch.Tensor:
        b, n, _ = hidden.shape
        q = self.to_q(hidden).view(b, n, self.heads, -1).transpose(1, 2)
        k = self.to_k(environment).view(b, environment.shape[1], self.heads, -1).transpose(1, 2)
        v = self.to_v(environment).view(b, environment.shape[1], self.heads, -1).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, -1)
        return self.to_out(out)


class EnvironmentAttnProcessor:
    """Attention processor: the usual attention, plus (on cross-attentions) the cross-modal QKV term.

    Not an ``nn.Module`` on purpose: the QKV weights belong to ``CrossModalAttention``, so the
    UNet's own state dict and files are unchanged by attaching them.
    """

    def __init__(self, qkv: _QKV | None, base=None):
        self.qkv = qkv
        self.base = base or AttnProcessor2_0()

    def __call__(self, attn: Attention, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None,
                 environment: torch.Tensor | None = None) -> torch.Tensor:
        out = self.base(attn, hidden_states, encoder_hidden_states, attention_mask, temb)
        if self.qkv is None or environment is None:
            return out
        return out + self.qkv(hidden_states, environment.to(hidden_states.dtype))


def cross_attention_layers(unet: nn.Module) -> dict[str, Attention]:
    """Every cross-attention ``Attention`` module of a UNet, by a stable key (module path, dots -> '__')."""
    return {name.replace(".", "__"): module for name, module in unet.named_modules()
            if isinstance(module, Attention) and module.is_cross_attention}


class CrossModalAttention(ModelMixin, ConfigMixin):
    """QKV: one cross-modal attention layer per cross-attention of one flow's UNet.

    Build it with ``CrossModalAttention.for_unet(unet, environment_dim)``; attach it with ``attach(unet)``.

    Args:
        layers: {key: [query_dim, heads]} for every cross-attention of the UNet (see ``cross_attention_layers``).
        environment_dim: width of the environment tokens (the shared space).
        dim_head: width per head.
    """

    @register_to_config
    def __init__(self, layers: dict[str, list[int]] | None = None, environment_dim: int = 256, dim_head: int = 32):
        super().__init__()
        self.qkv_layers = nn.ModuleDict({
            key: _QKV(query_dim, environment_dim, heads, dim_head) for key, (query_dim, heads) in (layers or {}).items()
        })

    @classmethod
    def for_unet(cls, unet: nn.Module, environment_dim: int, dim_head: int = 32) -> "CrossModalAttention":
        layers = {key: [m.query_dim, max(m.query_dim // dim_head, 1)] for key, m in cross_attention_layers(unet).items()}
        return cls(layers=layers, environment_dim=environment_dim, dim_head=dim_head)

    def attach(self, unet: nn.Module) -> None:
        """Install processors on every attention of ``unet``: cross-attentions get their QKV layer.

        Self-attentions get the plain processor too, so that the ``environment`` keyword that
        reaches every attention through ``cross_attention_kwargs`` is accepted everywhere.
        """
        cross = cross_attention_layers(unet)
        missing = set(cross) - set(self.qkv_layers)
        if missing:
            raise ValueError(f"CrossModalAttention does not match this UNet: {len(missing)} cross-attention layers have no QKV")
        for name, module in unet.named_modules():
            if isinstance(module, Attention):
                key = name.replace(".", "__")
                module.set_processor(EnvironmentAttnProcessor(self.qkv_layers[key] if key in cross else None))


def detach_cross_modal_attention(unet: nn.Module) -> None:
    """Remove the QKV layers from a UNet (back to plain attention processors)."""
    for module in unet.modules():
        if isinstance(module, Attention):
            module.set_processor(EnvironmentAttnProcessor(None))
