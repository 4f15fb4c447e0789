"""Contrastive losses of CoDi-XR.

``info_nce`` is Eq. 1 of the paper, made symmetric as in Sec. III.A:
CL_AB = L_{A,B} + L_{B,A}, each term the mean over the batch of
-log( exp(h_A^i . h_B^i / tau) / sum_j exp(h_A^i . h_B^j / tau) ).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def info_nce(h_a: torch.Tensor, h_b: torch.Tensor, logit_scale: torch.Tensor | float,
             targets: torch.Tensor | None = None) -> torch.Tensor:
    """Symmetric InfoNCE, CL_AB = L_{A,B} + L_{B,A}.

    Args:
        h_a, h_b: (batch, dim) embeddings of paired samples (row i of ``h_a`` pairs with row i of ``h_b``).
            They are L2-normalised here, so cosine similarity is used as in CLIP.
        logit_scale: 1 / tau. A tensor (learnable, already exponentiated) or a float.
        targets: optional (batch, batch) 0/1 matrix of which pairs are positives, for batches where
            several rows share one prompt (e.g. the same label set): each row's target is then the uniform
            distribution over its positives instead of the diagonal alone (a supervised-contrastive variant).

    Returns:
        A scalar: the sum of the two directional cross-entropies, each averaged over the batch.
    """
    if h_a.shape != h_b.shape or h_a.ndim != 2:
        raise ValueError(f"info_nce expects two (batch, dim) tensors of equal shape, got {tuple(h_a.shape)} and {tuple(h_b.shape)}")
    h_a = F.normalize(h_a, dim=-1)
    h_b = F.normalize(h_b, dim=-1)
    logits = logit_scale * h_a @ h_b.t()
    if targets is None:
        target = torch.arange(h_a.shape[0], device=h_a.device)
        return F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)
    targets = targets.to(logits.dtype)
    return (F.cross_entropy(logits, targets / targets.sum(1, keepdim=True))
            + F.cross_entropy(logits.t(), targets.t() / targets.t().sum(1, keepdim=True)))
