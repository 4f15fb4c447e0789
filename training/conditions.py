"""Conditions P(I) for the generation stages, precomputed once with the frozen stage-1 prompt encoder.

For every training sample the bank holds the shared-space embeddings of what is really paired with it:
the image itself (P_X; any view, which is what makes X-ray-conditioned generation work through the
shared space), its diagnosis labels (label encoder) and its report text (P_R). Each step draws one of the
available conditions per sample, then applies condition dropout (zeros) for classifier-free guidance.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from training.stage1_align import tokenize


class ConditionBank:
    """Per-sample candidate conditions: a (N, K, d) tensor and an (N, K) mask of which exist."""

    def __init__(self, embeddings: list[torch.Tensor | None], masks: list[np.ndarray | None], names: list[str]):
        present = [(e, m, n) for e, m, n in zip(embeddings, masks, names) if e is not None]
        self.names = [n for _, _, n in present]
        self.embeddings = torch.stack([e for e, _, _ in present], dim=1)
        self.mask = torch.from_numpy(np.stack([m for _, m, _ in present], axis=1)).bool()
        if not self.mask.any(1).all():
            raise ValueError("some samples have no condition at all")

    def __len__(self) -> int:
        return self.embeddings.shape[0]

    def sample(self, indices: Sequence[int], generator: torch.Generator, dropout: float = 0.0) -> torch.Tensor:
        """(B, 1, d) conditions: one available kind per sample, dropped to zeros with probability ``dropout``."""
        idx = torch.as_tensor(np.asarray(indices), dtype=torch.long)
        weights = self.mask[idx].float()
        choice = torch.multinomial(weights, 1, generator=generator)[:, 0]
        cond = self.embeddings[idx, choice]
        if dropout > 0:
            keep = (torch.rand(len(idx), generator=generator) >= dropout).float()[:, None]
            cond = cond * keep
        return cond[:, None]


@torch.no_grad()
def embed_images(prompt_encoder, images_fn, n: int, batch: int = 32) -> torch.Tensor:
    """P_X pooled embeddings of ``n`` images, ``images_fn(indices) -> (B,1,S,S)``."""
    out = [prompt_encoder.encode_image(images_fn(range(i, min(i + batch, n)))).pooled for i in range(0, n, batch)]
    return torch.cat(out)


@torch.no_grad()
def embed_texts(prompt_encoder, tokenizer, texts: Sequence[str | None], batch: int = 64) -> tuple[torch.Tensor, np.ndarray]:
    """P_R pooled embeddings (zeros where the text is None) and the mask of which exist."""
    mask = np.array([bool(t) for t in texts])
    out = torch.zeros(len(texts), prompt_encoder.projection_dim)
    idx = np.flatnonzero(mask)
    for i in range(0, len(idx), batch):
        rows = idx[i:i + batch]
        enc = tokenize(tokenizer, [texts[j] for j in rows])
        out[rows] = prompt_encoder.encode_text(enc["input_ids"], enc["attention_mask"]).pooled
    return out, mask


@torch.no_grad()
def embed_labels(prompt_encoder, multi_hot: np.ndarray, has_labels: np.ndarray) -> torch.Tensor:
    """Label-encoder embeddings (zeros where a sample has no labels)."""
    out = prompt_encoder.encode_labels(torch.from_numpy(multi_hot)).pooled
    return out * torch.from_numpy(has_labels.astype(np.float32))[:, None]
