"""The conditions G_F and G_L train on: real content for every training radiograph (issue 13).

Each step draws, per training image, one condition kind among those the image has (``weights`` per kind):

* ``image``: P_X of the image itself (the paper's route for X-ray inputs: any view, through the shared space);
* ``labels``: the label encoder on a random non-empty subset of the image's label set, so that a single-label
  request asks for images that show it. Label sets are what the data says: RSNA positives are Lung Opacity +
  Pneumonia (``target``); NIH ChestX-ray14's 14 labels as ``codixr.data.public.NIH_LABELS`` maps them (No Finding
  included); COVID collection diagnoses as ``COVID_FINDING_LABELS`` maps them. RSNA negatives have no label set:
  the RSNA files here hold only ``target`` (the challenge's ``stage_2_detailed_class_info.csv`` with "Normal" vs
  "No Lung Opacity / Not Normal" is not in the torchxrayvision wheel), so "no opacity" cannot be read as "No
  Finding" and those images train on the other kinds only;
* ``impression``: P_R of a real IU impression whose labeler labels match the image's labels
  (``training.conditions.impression_matches``, the same bridge as G_R's): this is what makes a typed impression
  steer the image;
* ``notes``: P_R of the text really paired with the image (the COVID collection's clinical notes).

Low resolution: NIH ChestX-ray14 exists here only at 64 px (cached upsampled to the training size). Its images
are included because they carry the pathologies RSNA lacks (cardiomegaly, effusion, atelectasis, ...), and each of
their rows is flagged ``low_resolution``: the flow's ``ConditionAdapter`` adds its learned low-resolution vector
to those rows' condition (and null condition), so that the blur is explained by the flag rather than learned as
part of the finding. The flag is set for training rows of ``LOW_RESOLUTION_SOURCES`` only and never in sampling.

Nothing is invented: every image, label set, impression and note is real; pairs of images and impressions are
formed by their labels alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

LOW_RESOLUTION_SOURCES = ("nih-cxr14-64px",)  # stored at 64 px: flagged low resolution in training
KINDS = ("image", "labels", "impression", "notes")
DEFAULT_WEIGHTS = {"image": 0.3, "labels": 0.35, "impression": 0.3, "notes": 0.05}


@dataclass
class DrawnConditions:
    """One batch of image conditions: (B, d) conditions, the kind of each row (index into ``KINDS``), the
    low-resolution flag (B,) and, for ``impression`` rows, the impression drawn (-1 elsewhere)."""

    conditions: torch.Tensor
    kinds: torch.Tensor
    low_resolution: torch.Tensor
    impressions: torch.Tensor


class ImageConditionSampler:
    """Per-image candidate conditions of G_F/G_L, drawn per step (see the module docstring).

    Args:
        image_embeddings: (N, d) P_X of the training images.
        multi_hot: (N, L) label sets over ``CONDITION_LABELS`` (all zero: no label condition for that image).
        impression_embeddings: (M, d) P_R of the real impressions, or None.
        matches: per image, the indices of the impressions whose labels match its labels (may be empty).
        notes: (N, d) P_R of each image's paired text, with ``has_notes`` (N,) saying which exist; or None.
        low_resolution: (N,) bool, training images of a low-resolution source.
        prompt_encoder: the frozen stage-1 encoder (its label encoder embeds the drawn label subsets).
        weights: kind -> weight; kinds absent from the data or weighted 0 are never drawn.
    """

    def __init__(self, image_embeddings: torch.Tensor, multi_hot: np.ndarray, impression_embeddings: torch.Tensor | None,
                 matches: Sequence[np.ndarray] | None, prompt_encoder, low_resolution: np.ndarray,
                 notes: torch.Tensor | None = None, has_notes: np.ndarray | None = None,
                 weights: dict[str, float] | None = None):
        n = len(image_embeddings)
        weights = {**DEFAULT_WEIGHTS, **(weights or {})}
        self.prompt_encoder = prompt_encoder
        self.images = image_embeddings.float()
        self.multi_hot = torch.as_tensor(np.asarray(multi_hot, dtype=np.float32))
        self.impressions = None if impression_embeddings is None else impression_embeddings.float()
        matches = list(matches) if matches is not None and self.impressions is not None else [np.zeros(0, int)] * n
        self.counts = torch.as_tensor([len(m) for m in matches], dtype=torch.long)
        self.offsets = torch.cumsum(self.counts, 0) - self.counts
        self.flat = torch.as_tensor(np.concatenate([np.asarray(m, dtype=np.int64) for m in matches] or [[]]),
                                    dtype=torch.long)
        self.notes = None if notes is None else notes.float()
        has_notes = np.zeros(n, bool) if has_notes is None or notes is None else np.asarray(has_notes, bool)
        self.low_resolution = torch.as_tensor(np.asarray(low_resolution, bool))
        available = torch.stack([torch.ones(n, dtype=torch.bool), self.multi_hot.sum(1) > 0, self.counts > 0,
                                 torch.as_tensor(has_notes)], dim=1)
        self.weights = torch.tensor([float(weights.get(k, 0.0)) for k in KINDS])
        self.available = available & (self.weights > 0)
        self.available[:, 0] |= ~self.available.any(1)  # every image keeps at least its own P_X
        if len(self.low_resolution) != n or len(self.multi_hot) != n or len(self.counts) != n:
            raise ValueError("image conditions: every per-image input needs one row per training image")

    def __len__(self) -> int:
        return len(self.images)

    def kind_counts(self) -> dict[str, int]:
        """How many training images can draw each kind."""
        return {k: int(self.available[:, i].sum()) for i, k in enumerate(KINDS)}

    def _labels(self, rows: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Label-encoder embeddings of a random non-empty subset of each row's label set."""
        hot = self.multi_hot[rows]
        keep = (torch.rand(hot.shape, generator=generator) < 0.5) & (hot > 0)
        forced = torch.multinomial(hot, 1, generator=generator)[:, 0]
        keep[torch.arange(len(rows)), forced] = True
        with torch.no_grad():
            return self.prompt_encoder.encode_labels(keep.float()).pooled.float()

    def _impressions(self, rows: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """A random matching impression for each row (rows must have at least one)."""
        pick = (torch.rand(len(rows), generator=generator) * self.counts[rows]).long()
        return self.flat[self.offsets[rows] + torch.minimum(pick, self.counts[rows] - 1)]

    def draw(self, indices: Sequence[int], generator: torch.Generator | None = None) -> DrawnConditions:
        """One condition per training image in ``indices``, its kind drawn among those it has."""
        idx = torch.as_tensor(np.asarray(indices), dtype=torch.long)
        probs = self.available[idx].float() * self.weights
        kinds = torch.multinomial(probs, 1, generator=generator)[:, 0]
        return self._fill(idx, kinds, generator)

    def of_kind(self, indices: Sequence[int], kind: str, generator: torch.Generator | None = None
                ) -> tuple[DrawnConditions, torch.Tensor]:
        """Conditions of one kind for the rows that have it (for sample grids), and the (B,) mask of those rows."""
        idx = torch.as_tensor(np.asarray(indices), dtype=torch.long)
        k = KINDS.index(kind)
        have = self.available[idx, k] if kind != "image" else torch.ones(len(idx), dtype=torch.bool)
        return self._fill(idx[have], torch.full((int(have.sum()),), k), generator), have

    def _fill(self, idx: torch.Tensor, kinds: torch.Tensor, generator) -> DrawnConditions:
        cond = self.images[idx].clone()
        impressions = torch.full((len(idx),), -1, dtype=torch.long)
        sel = kinds == KINDS.index("labels")
        if sel.any():
            cond[sel] = self._labels(idx[sel], generator)
        sel = kinds == KINDS.index("impression")
        if sel.any():
            impressions[sel] = self._impressions(idx[sel], generator)
            cond[sel] = self.impressions[impressions[sel]]
        sel = kinds == KINDS.index("notes")
        if sel.any():
            cond[sel] = self.notes[idx[sel]]
        return DrawnConditions(cond, kinds, self.low_resolution[idx], impressions)


def impression_bridge(data, items, pe, tokenizer) -> tuple[torch.Tensor | None, list[np.ndarray], dict]:
    """P_R of the training IU impressions and, per item, the impressions whose labels match its labels.

    Uses the project labeler on each impression (as G_R does) and ``training.stage2_text.bridge_matches``.
    Returns (impression embeddings or None, matches per item (possibly empty), counts for DONE.json).
    """
    from codixr.metrics.labeler import label_report
    from codixr.modality import NO_FINDING
    from training.conditions import embed_texts, positive_set
    from training.stage2_text import bridge_matches

    texts = [s.impression for s in data.report_items("train")]
    empty = [np.zeros(0, np.int64) for _ in items]
    if not texts:
        return None, empty, {"train_impressions": 0}
    read = [label_report(t) for t in texts]
    positives = [positive_set(r) for r in read]
    normal = np.array([r.get(NO_FINDING) == 1 for r in read])
    kept, matches = bridge_matches(data, items, positives, normal)
    position = {id(it): k for k, it in enumerate(items)}
    per_item = list(empty)
    for it, m in zip(kept, matches):
        per_item[position[id(it)]] = np.asarray(m, dtype=np.int64)
    h_text, _ = embed_texts(pe, tokenizer, texts)
    info = {"train_impressions": len(texts), "images_with_matching_impressions": len(kept),
            "median_matches_per_image": float(np.median([len(m) for m in matches])) if matches else 0.0}
    return h_text, per_item, info


def build_image_sampler(data, items, pe, tokenizer, weights: dict[str, float] | None = None
                        ) -> tuple[ImageConditionSampler, dict]:
    """The ``ImageConditionSampler`` of training items, and what it holds (for DONE.json)."""
    from training.conditions import embed_images, embed_texts

    h_img = embed_images(pe, lambda idx: data.images(items, list(idx)), len(items))
    multi_hot = np.stack([it.labels for it in items])
    h_imp, matches, info = impression_bridge(data, items, pe, tokenizer)
    h_notes, has_notes = embed_texts(pe, tokenizer, [it.text for it in items])
    low = np.array([it.source in LOW_RESOLUTION_SOURCES for it in items])
    sampler = ImageConditionSampler(h_img, multi_hot, h_imp, matches, pe, low, h_notes, has_notes, weights)
    info.update({"images_by_kind": sampler.kind_counts(), "low_resolution_images": int(low.sum()),
                 "weights": dict(zip(KINDS, sampler.weights.tolist()))})
    return sampler, info
