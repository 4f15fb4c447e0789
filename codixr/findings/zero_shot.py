"""Zero-shot findings: the model's own reading of an X-ray through its aligned encoders.

For each of the ten pathologies the image embedding h_X = P_X(image) is compared with the report
embeddings of a positive and a negative prompt ("pleural effusion" / "no pleural effusion", averaged
over a few phrasings); the probability is the two-way softmax of the cosine similarities at the model's
learned temperature (CLIP-style zero-shot classification). It is always available, and it is the
model's own reading, not a validated classifier.
"""

from __future__ import annotations

import weakref
from typing import Any

import numpy as np
import torch

from codixr.modality import PATHOLOGIES

POSITIVE_TEMPLATES = ("{}.", "there is {}.", "findings consistent with {}.")
NEGATIVE_TEMPLATES = ("no {}.", "there is no {}.", "no evidence of {}.")

_prompt_cache: "weakref.WeakKeyDictionary[Any, torch.Tensor]" = weakref.WeakKeyDictionary()


@torch.no_grad()
def prompt_embeddings(pipe) -> torch.Tensor:
    """(len(PATHOLOGIES), 2, d): mean P_R embedding of the positive and negative prompts of each pathology."""
    if pipe in _prompt_cache:
        return _prompt_cache[pipe]
    rows = []
    for name in PATHOLOGIES:
        term = name.lower()
        pos = pipe.encode_reports([t.format(term) for t in POSITIVE_TEMPLATES]).mean(0)
        neg = pipe.encode_reports([t.format(term) for t in NEGATIVE_TEMPLATES]).mean(0)
        rows.append(torch.stack([pos, neg]))
    emb = torch.nn.functional.normalize(torch.stack(rows), dim=-1)
    _prompt_cache[pipe] = emb
    return emb


@torch.no_grad()
def zero_shot_scores(pipe, image: np.ndarray | Any) -> dict[str, float]:
    """Probability per pathology (PATHOLOGIES order) that the image matches the positive prompt."""
    h = pipe.encode_images([image])[0]  # (d,), L2-normalised
    prompts = prompt_embeddings(pipe)  # (P, 2, d)
    scale = pipe.prompt_encoder.logit_scale.exp().clamp(max=100.0)
    logits = scale * torch.einsum("d,pkd->pk", h, prompts)
    probs = logits.softmax(dim=-1)[:, 0].float().cpu().numpy()
    return {name: float(p) for name, p in zip(PATHOLOGIES, probs)}
