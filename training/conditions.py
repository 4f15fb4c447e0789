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


# ---------------------------------------------------------------------------------------------- G_R's bridge
# An image negative for lung opacity is taken as negative for the findings that are one (RSNA's target is
# "lung opacity suggestive of pneumonia").
OPACITY_FAMILY = ("Lung Opacity", "Pneumonia", "Consolidation")


def positive_set(labels: dict[str, float | None]) -> frozenset[str]:
    """The pathologies a label dict (CheXpert convention) marks positive."""
    from codixr.modality import PATHOLOGIES

    return frozenset(name for name in PATHOLOGIES if labels.get(name) == 1)


def impression_matches(image_labels: dict[str, float | None], impression_positives: frozenset[str],
                       impression_normal: bool) -> bool:
    """Whether a real impression may stand for a real image, judged by their labels alone (G_R's bridge).

    * image with findings S: the impression asserts at least one finding and only findings in S;
    * image labelled normal (No Finding): the impression reads as normal;
    * image with no finding but not labelled normal (e.g. an RSNA negative): the impression asserts nothing the
      image is known to be negative for (negative for lung opacity = negative for the whole opacity family).
    """
    from codixr.modality import NO_FINDING, PATHOLOGIES

    findings = positive_set(image_labels)
    if findings:
        return bool(impression_positives) and impression_positives <= findings
    if image_labels.get(NO_FINDING) == 1:
        return impression_normal and not impression_positives
    negatives = {name for name in PATHOLOGIES if image_labels.get(name) == 0}
    if negatives & set(OPACITY_FAMILY):
        negatives |= set(OPACITY_FAMILY)
    return not (impression_positives & negatives)


class ReportConditionSampler:
    """The conditions G_R trains on, each row paired with a real impression's latent.

    Three kinds, drawn per row with ``weights``:

    * ``text``: P_R of the impression itself (the paper's G_R condition);
    * ``labels``: the label encoder on a random non-empty subset of the findings the project labeler reads in the
      impression (No Finding for normal ones), so that a single-label request asks for impressions naming it.
      The label comes first, uniformly over the labels some impression names, then an impression naming it, and
      the subset always keeps that label: rare findings (Consolidation, Pneumothorax, Enlarged
      Cardiomediastinum have 13-15 training impressions each) are asked for as often as common ones;
    * ``image``: P_X of a real training radiograph paired with a random real impression whose labels match the
      image's (``impression_matches``): the route from X-rays to impressions when no image has its own report.
      Draws go to groups of images first (``image_groups``: with a finding or not, optionally by source), each
      group with its share (``group_weights``; equal by default: most bridged images have no finding, and
      equal groups pair opacity on a radiograph with opacity impressions as often as a clear film with clear
      ones). Giving the groups without a finding more weight raises the evidence an image needs before G_R
      asserts a finding (fewer false findings on clear films, at some cost in sensitivity).
    """

    def __init__(self, text: torch.Tensor, impression_labels: list[frozenset[str]], impression_normal: np.ndarray,
                 image_embeddings: torch.Tensor | None, image_matches: list[np.ndarray] | None, prompt_encoder,
                 weights: dict[str, float], image_groups: np.ndarray | None = None,
                 group_weights: dict[int, float] | None = None):
        from codixr.modality import CONDITION_LABELS, NO_FINDING

        self.text, self.prompt_encoder = text, prompt_encoder
        self.label_sets = [sorted(s) if s else ([NO_FINDING] if n else []) for s, n in
                           zip(impression_labels, impression_normal)]
        self.label_index = {name: i for i, name in enumerate(CONDITION_LABELS)}
        # label -> the impressions naming it (the labels kind picks a label first)
        naming = {name: np.array([i for i, names in enumerate(self.label_sets) if name in names])
                  for name in CONDITION_LABELS}
        self.naming = {name: rows for name, rows in naming.items() if len(rows)}
        self.named_labels = list(self.naming)  # in CONDITION_LABELS order
        self.images, self.matches = image_embeddings, image_matches
        # image kind: a group first (uniformly), then an image of it
        groups = np.zeros(0 if image_embeddings is None else len(image_embeddings), dtype=int) \
            if image_groups is None else np.asarray(image_groups)
        self.image_groups = [np.flatnonzero(groups == g) for g in np.unique(groups)]
        # a group's share of the image draws (``group_weights`` by group id; uniform over groups by default)
        shares = torch.tensor([float((group_weights or {}).get(int(g), 1.0)) for g in np.unique(groups)])
        self.group_probs = shares / shares.sum() if len(shares) else shares
        kinds = {"text": True, "labels": bool(self.naming),
                 "image": image_embeddings is not None and len(image_embeddings) > 0}
        self.kinds = [k for k in ("text", "labels", "image") if kinds[k] and weights.get(k, 0) > 0]
        total = sum(weights[k] for k in self.kinds)
        self.probs = torch.tensor([weights[k] / total for k in self.kinds])

    def draw(self, batch_size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
        """(impression indices (B,), conditions (B, d), kinds) for one batch."""
        kinds = torch.multinomial(self.probs, batch_size, replacement=True, generator=generator).tolist()
        rows, conds, names = [], [], []
        multi_hot = []
        for k in kinds:
            kind = self.kinds[k]
            if kind == "text":
                i = int(torch.randint(len(self.text), (1,), generator=generator))
                rows.append(i)
                conds.append(self.text[i])
            elif kind == "labels":
                label = self.named_labels[int(torch.randint(len(self.named_labels), (1,), generator=generator))]
                pool = self.naming[label]
                i = int(pool[int(torch.randint(len(pool), (1,), generator=generator))])
                names_i = self.label_sets[i]
                keep = torch.rand(len(names_i), generator=generator) < 0.5
                keep[names_i.index(label)] = True
                hot = torch.zeros(len(self.label_index))
                for name, flag in zip(names_i, keep.tolist()):
                    if flag:
                        hot[self.label_index[name]] = 1.0
                rows.append(i)
                conds.append(None)
                multi_hot.append((len(conds) - 1, hot))
            else:
                group = self.image_groups[int(torch.multinomial(self.group_probs, 1, generator=generator))]
                j = int(group[int(torch.randint(len(group), (1,), generator=generator))])
                match = self.matches[j]
                rows.append(int(match[int(torch.randint(len(match), (1,), generator=generator))]))
                conds.append(self.images[j])
            names.append(kind)
        if multi_hot:
            with torch.no_grad():
                emb = self.prompt_encoder.encode_labels(torch.stack([h for _, h in multi_hot])).pooled
            for (pos, _), e in zip(multi_hot, emb):
                conds[pos] = e
        return torch.as_tensor(rows), torch.stack(conds), names
