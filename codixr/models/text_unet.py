"""The report diffusion UNet of G_R: fully-connected residual blocks over text latents.

Following Versatile Diffusion's flat UNet (paper Sec. III.B): the text latent vector (768-d at
the paper's scale) is expanded into a ``block_out_channels[0]``-by-``num_tokens`` hidden feature
(320-by-4 in the paper), then processed by FCResBlocks -- GroupNorm, SiLU, fully-connected
layers, timestep embedding and skip connections -- with cross-attention to the prompt condition
P(I) at every level, down and back up with UNet skips (one skip per down block, mirrored on the way up).

Its cross-attention modules are diffusers ``Attention`` layers, so the cross-modal QKV layers of
stage 3 (``CrossModalAttention``) attach to it exactly as they do to the image UNets.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.attention_processor import Attention
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils import BaseOutput


@dataclass
class TextUNetOutput(BaseOutput):
    sample: torch.Tensor


class FCResBlock(nn.Module):
    """Fully-connected residual block on a (batch, channels, tokens) hidden feature."""

    def __init__(self, in_channels: int, out_channels: int, num_tokens: int, temb_channels: int, groups: int,
                 dropout: float = 0.0):
        super().__init__()
        self.num_tokens = num_tokens
        self.norm1 = nn.GroupNorm(groups, in_channels)
        self.fc1 = nn.Linear(in_channels * num_tokens, out_channels * num_tokens)
        self.time_proj = nn.Linear(temb_channels, out_channels * num_tokens)
        self.norm2 = nn.GroupNorm(groups, out_channels)
        self.dropout = nn.Dropout(dropout)
        self.fc2 = nn.Linear(out_channels * num_tokens, out_channels * num_tokens)
        self.skip = (nn.Linear(in_channels * num_tokens, out_channels * num_tokens)
                     if in_channels != out_channels else nn.Identity())
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        h = self.fc1(self.act(self.norm1(x)).reshape(b, -1))
        h = h + self.time_proj(self.act(temb))
        h = h.view(b, -1, self.num_tokens)
        h = self.fc2(self.dropout(self.act(self.norm2(h))).reshape(b, -1))
        return (self.skip(x.reshape(b, -1)) + h).view(b, -1, self.num_tokens)


class CrossAttentionBlock(nn.Module):
    """Pre-norm cross-attention from the hidden tokens to the condition tokens, with a residual."""

    def __init__(self, channels: int, cross_attention_dim: int, heads: int, groups: int):
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels)
        self.attn2 = Attention(query_dim=channels, cross_attention_dim=cross_attention_dim, heads=heads,
                               dim_head=max(channels // heads, 1), out_bias=True)

    def forward(self, x: torch.Tensor, context: torch.Tensor, cross_attention_kwargs: dict | None) -> torch.Tensor:
        h = self.norm(x).transpose(1, 2)  # (B, tokens, C)
        h = self.attn2(h, encoder_hidden_states=context, **(cross_attention_kwargs or {}))
        return x + h.transpose(1, 2)


class TextUNet(ModelMixin, ConfigMixin):
    """epsilon-prediction network for report latents, conditioned by cross-attention on P(I).

    Args:
        latent_dim: size of the text latent (``OptimusTextVAE.latent_dim``).
        block_out_channels: channels per level (paper: 320, 640, 1280, 1280).
        num_tokens: the second dimension of the hidden feature (paper: 4).
        layers_per_block: FCResBlocks per level on the way down.
        cross_attention_dim: width of the condition tokens (the shared space).
        attention_heads: heads of each cross-attention.
        norm_num_groups: GroupNorm groups.
        condition_embedding_dim: when set, ``forward`` takes ``class_labels`` (B, condition_embedding_dim), the
            pooled condition, and adds its projection to the timestep embedding (as diffusers'
            ``class_embed_type="projection"`` does for image UNets; see ``codixr.models.conditioning``).
    """

    @register_to_config
    def __init__(
        self,
        latent_dim: int = 128,
        block_out_channels: tuple[int, ...] = (64, 128),
        num_tokens: int = 4,
        layers_per_block: int = 1,
        cross_attention_dim: int = 256,
        attention_heads: int = 4,
        norm_num_groups: int = 8,
        dropout: float = 0.0,
        condition_embedding_dim: int | None = None,
    ):
        super().__init__()
        ch0 = block_out_channels[0]
        temb_dim = ch0 * 4
        self.time_proj = Timesteps(ch0, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embedding = TimestepEmbedding(ch0, temb_dim)
        self.condition_embedding = (TimestepEmbedding(condition_embedding_dim, temb_dim)
                                    if condition_embedding_dim else None)
        self.conv_in = nn.Linear(latent_dim, ch0 * num_tokens)

        def res(cin: int, cout: int) -> FCResBlock:
            return FCResBlock(cin, cout, num_tokens, temb_dim, norm_num_groups, dropout)

        def attn(c: int) -> CrossAttentionBlock:
            return CrossAttentionBlock(c, cross_attention_dim, attention_heads, norm_num_groups)

        self.down_resnets = nn.ModuleList()
        self.down_attentions = nn.ModuleList()
        skip_channels: list[int] = []
        cin = ch0
        for cout in block_out_channels:
            for _ in range(layers_per_block):
                self.down_resnets.append(res(cin, cout))
                self.down_attentions.append(attn(cout))
                skip_channels.append(cout)
                cin = cout
        self.mid_resnet1 = res(cin, cin)
        self.mid_attention = attn(cin)
        self.mid_resnet2 = res(cin, cin)
        self.up_resnets = nn.ModuleList()
        self.up_attentions = nn.ModuleList()
        for cout in reversed(block_out_channels):
            for _ in range(layers_per_block):
                self.up_resnets.append(res(cin + skip_channels.pop(), cout))
                self.up_attentions.append(attn(cout))
                cin = cout
        self.norm_out = nn.GroupNorm(norm_num_groups, cin)
        self.conv_out = nn.Linear(cin * num_tokens, latent_dim)
        self.act = nn.SiLU()

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float | int,
        encoder_hidden_states: torch.Tensor,
        cross_attention_kwargs: dict | None = None,
        return_dict: bool = True,
        class_labels: torch.Tensor | None = None,
    ) -> TextUNetOutput | tuple[torch.Tensor]:
        """sample (B, latent_dim), timestep, condition tokens (B, S, cross_attention_dim) -> epsilon (B, latent_dim).

        ``class_labels``: the pooled condition (B, condition_embedding_dim), required when the UNet has a
        condition embedding.
        """
        b = sample.shape[0]
        t = torch.as_tensor(timestep, device=sample.device)
        if t.ndim == 0:
            t = t[None]
        t = t.expand(b)
        temb = self.time_embedding(self.time_proj(t).to(sample.dtype))
        if self.condition_embedding is not None:
            if class_labels is None:
                raise ValueError("This TextUNet adds the pooled condition to its time embedding: pass class_labels.")
            temb = temb + self.condition_embedding(class_labels.to(temb.dtype))
        h = self.conv_in(sample).view(b, -1, self.config.num_tokens)
        skips = []
        for resnet, attention in zip(self.down_resnets, self.down_attentions):
            h = attention(resnet(h, temb), encoder_hidden_states, cross_attention_kwargs)
            skips.append(h)
        h = self.mid_resnet2(self.mid_attention(self.mid_resnet1(h, temb), encoder_hidden_states,
                                                cross_attention_kwargs), temb)
        for resnet, attention in zip(self.up_resnets, self.up_attentions):
            h = attention(resnet(torch.cat([h, skips.pop()], dim=1), temb), encoder_hidden_states,
                          cross_attention_kwargs)
        out = self.conv_out(self.act(self.norm_out(h)).reshape(b, -1))
        if not return_dict:
            return (out,)
        return TextUNetOutput(sample=out)
