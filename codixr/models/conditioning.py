"""How a flow reads its condition: the composed shared-space embedding P(I) -> what its denoiser attends to.

CoDi-XR conditions every LDM on the prompt-encoder embedding of the inputs (Sec. III.A-B). Fed as one pooled
cross-attention token with a zero vector as the "no condition" of classifier-free guidance, as the first
bundled model did, a small UNet learns to ignore it (its noise prediction with and without the condition
differed by 1-7 %). A ``ConditionAdapter`` gives a flow three things instead:

* several cross-attention tokens made from the condition by an MLP (``num_tokens`` x ``cross_attention_dim``);
* the condition itself as ``class_labels``, which the denoiser adds to its timestep embedding (diffusers'
  ``class_embed_type="projection"`` in ``UNet2DConditionModel``; ``condition_embedding_dim`` in ``TextUNet``),
  so that every block, at every noise level, is modulated by it;
* a learned null condition, which replaces dropped conditions in training (condition dropout) and forms the
  unconditional half of classifier-free guidance in sampling, and the guidance scale chosen on validation.

``condition_flow`` is the one function that turns a condition into a flow's inputs, for training and sampling
alike; flows without an adapter (packages made before it existed) get the old single token and zero null.

An image flow may also train on images that are coarser than what it should produce (NIH ChestX-ray14 at 64 px,
upsampled). With ``low_resolution_embedding`` its adapter holds a learned vector that is added to the condition
(and to the null condition) of exactly those training rows, so that the blur is explained by the flag and not
learned as part of the finding; sampling never sets it. Adapters without the flag load and behave as before.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin


@dataclass
class Conditioning:
    """What one flow's denoiser reads: cross-attention tokens (B, S, D) and, optionally, ``class_labels`` (B, d)."""

    tokens: torch.Tensor
    class_labels: torch.Tensor | None = None

    def kwargs(self) -> dict:
        """Keyword arguments of a denoiser call: ``encoder_hidden_states`` and, when present, ``class_labels``."""
        out = {"encoder_hidden_states": self.tokens}
        if self.class_labels is not None:
            out["class_labels"] = self.class_labels
        return out

    def __len__(self) -> int:
        return self.tokens.shape[0]


class ConditionAdapter(ModelMixin, ConfigMixin):
    """The condition of one flow (G_F, G_L or G_R): tokens, time-embedding input and a learned null condition.

    Args:
        condition_dim: width of the shared space (the prompt encoders' projection dimension).
        cross_attention_dim: width of the denoiser's cross-attention context.
        num_tokens: how many context tokens the condition becomes.
        hidden_dim: width of the MLP that makes them.
        guidance_scale: the classifier-free guidance scale chosen on validation (the pipeline's default).
        add_to_time_embedding: whether the denoiser also receives the condition as ``class_labels``.
        low_resolution_embedding: whether the adapter holds the learned "this training image is low resolution"
            vector (training only; see the module docstring).
    """

    @register_to_config
    def __init__(self, condition_dim: int = 256, cross_attention_dim: int = 256, num_tokens: int = 4,
                 hidden_dim: int = 512, guidance_scale: float = 2.0, add_to_time_embedding: bool = True,
                 low_resolution_embedding: bool = False):
        super().__init__()
        self.null_condition = nn.Parameter(torch.zeros(condition_dim))
        self.to_tokens = nn.Sequential(nn.Linear(condition_dim, hidden_dim), nn.SiLU(),
                                       nn.Linear(hidden_dim, num_tokens * cross_attention_dim))
        self.norm = nn.LayerNorm(cross_attention_dim)
        self.low_resolution = nn.Parameter(torch.zeros(condition_dim)) if low_resolution_embedding else None

    def forward(self, condition: torch.Tensor, drop: torch.Tensor | None = None,
                low_resolution: torch.Tensor | None = None) -> Conditioning:
        """(B, d) conditions -> ``Conditioning``; rows where ``drop`` is True get the learned null condition.

        ``low_resolution`` (B,) bool marks training rows whose target image is low resolution: they get the
        learned low-resolution vector added (after dropout, so the null condition learns it too). Sampling leaves
        it None. Ignored by adapters made without ``low_resolution_embedding``.
        """
        condition = condition.to(self.dtype)
        if condition.ndim == 3:  # (B, 1, d), the pooled-token layout of the first bundled model
            condition = condition[:, 0]
        if drop is not None:
            condition = torch.where(drop[:, None].to(condition.device), self.null_condition.expand_as(condition),
                                    condition)
        if low_resolution is not None and self.low_resolution is not None:
            condition = condition + low_resolution.to(condition.device, self.dtype)[:, None] * self.low_resolution
        b = condition.shape[0]
        tokens = self.norm(self.to_tokens(condition).view(b, self.config.num_tokens, -1))
        return Conditioning(tokens, condition if self.config.add_to_time_embedding else None)

    def null(self, batch_size: int) -> Conditioning:
        """The unconditional input of classifier-free guidance, for ``batch_size`` rows."""
        return self(self.null_condition.expand(batch_size, -1))

    @torch.no_grad()
    def init_as_single_token(self) -> bool:
        """Start as the single-token convention of a flow trained without an adapter: every token ~ the condition.

        For continuing a UNet that read P(I) as one cross-attention token with zeros as its null. The MLP becomes
        the identity repeated over the tokens: exactly with ``hidden_dim >= 2 * condition_dim`` (SiLU(u) - SiLU(-u)
        = u), else with ``hidden_dim >= condition_dim`` through SiLU's near-linear range (2/e * SiLU(e * u) =
        u + e * u^2 / 2 + ..., e = 0.05: about 1e-4 for the ~1/sqrt(d) entries of a unit-norm condition). The
        LayerNorm gain 1/sqrt(d) undoes the normalisation of a unit-norm condition (up to its mean, ~1/d per
        element). The null condition (zeros) then gives zero tokens, as before. Returns False (and changes
        nothing) when the sizes do not allow it.
        """
        d, tokens, hidden = self.config.condition_dim, self.config.num_tokens, self.config.hidden_dim
        if hidden < d or self.config.cross_attention_dim != d:
            return False
        first, second = self.to_tokens[0], self.to_tokens[2]
        eye = torch.eye(d)
        for layer in (first, second):
            layer.weight.zero_()
            layer.bias.zero_()
        if hidden >= 2 * d:
            first.weight[:2 * d] = torch.cat([eye, -eye])
            second.weight[:, :2 * d] = torch.cat([eye, -eye], dim=1).repeat(tokens, 1)
        else:
            e = 0.05
            first.weight[:d] = e * eye
            second.weight[:, :d] = (2 / e) * eye.repeat(tokens, 1)
        self.norm.weight.fill_(d ** -0.5)
        self.norm.bias.zero_()
        self.null_condition.zero_()
        return True


def drop_mask(batch_size: int, probability: float, generator: torch.Generator | None = None,
              device: torch.device | str = "cpu") -> torch.Tensor | None:
    """Condition dropout for classifier-free guidance: which rows of a batch train the null condition."""
    if probability <= 0:
        return None
    return (torch.rand(batch_size, generator=generator) < probability).to(device)


def condition_flow(adapter: ConditionAdapter | None, condition: torch.Tensor, guidance: bool = False,
                   drop: torch.Tensor | None = None, low_resolution: torch.Tensor | None = None) -> Conditioning:
    """A flow's denoiser inputs from (B, d) or (B, 1, d) composed conditions.

    With ``guidance`` the unconditional half comes first (``2B`` rows), as ``denoise_latents`` expects. Without
    an adapter: the condition as one token and zeros as the null (the first bundled model's convention).
    ``low_resolution`` flags training rows with a low-resolution target (see ``ConditionAdapter.forward``).
    """
    if adapter is None:
        cond = condition if condition.ndim == 3 else condition[:, None]
        if drop is not None:
            cond = cond * (~drop.to(cond.device)).to(cond.dtype).view(-1, 1, 1)
        return Conditioning(torch.cat([torch.zeros_like(cond), cond]) if guidance else cond)
    cond = adapter(condition, drop, low_resolution)
    if not guidance:
        return cond
    null = adapter.null(len(cond))
    labels = None if cond.class_labels is None else torch.cat([null.class_labels, cond.class_labels])
    return Conditioning(torch.cat([null.tokens, cond.tokens]), labels)
