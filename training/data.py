"""Training data for every stage, from ``codixr.data`` and the paper's preprocessing (``codixr.io``).

What is real and available here (``../shared/data/README.md``):

* images: RSNA Pneumonia (1,350 frontal), COVID-19 collection (frontal + the only lateral views, with
  clinical notes), NIH ChestX-ray14 at 64 px (frontal; G_F trains on it flagged low resolution, see
  ``training.image_conditions``);
* report impressions: IU/OpenI (3,921, with human MeSH labels), inside the torchxrayvision wheel.

When a MIMIC-CXR folder is given (``data.mimic_root`` in the YAML or ``$CODIXR_MIMIC``), its triplets are
used instead, as in the paper. Images are decoded once into a memory-mapped cache (``runs/cache``).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from codixr.data import ImageCache, StudyDataset, build_image_cache, load_iu_xray, load_mimic_cxr, load_public_cxr
from codixr.modality import CONDITION_LABELS

logger = logging.getLogger("training.data")

GENERATION_SOURCES = ("covid-cxr", "rsna-pneumonia", "mimic-cxr")  # sources whose images are fine enough to generate


def labels_multi_hot(labels: dict[str, float | None]) -> np.ndarray:
    """CheXpert-convention labels -> multi-hot over CONDITION_LABELS (positive = 1; uncertain, negative, unknown = 0)."""
    return np.array([1.0 if labels.get(name) == 1 else 0.0 for name in CONDITION_LABELS], dtype=np.float32)


def augment_radiographs(images: torch.Tensor, generator: torch.Generator, max_degrees: float = 5.0,
                         max_shift: float = 0.05, scale: tuple[float, float] = (0.93, 1.07),
                         contrast: float = 0.1) -> torch.Tensor:
    """Small, anatomy-preserving variations of (B, 1, S, S) radiographs in [0, 1] for views with very few images
    (the ~40 training laterals): a rotation of at most ``max_degrees``, a shift of at most ``max_shift`` of the side,
    a zoom within ``scale`` (outside the image is the zero padding of the paper's preprocessing) and a gamma-like
    contrast change of at most ``contrast``. No flips: a mirrored radiograph is a different anatomy (situs)."""
    import torch.nn.functional as F

    b = images.shape[0]
    uniform = lambda lo, hi: lo + (hi - lo) * torch.rand(b, generator=generator)  # noqa: E731
    angle = torch.deg2rad(uniform(-max_degrees, max_degrees))
    zoom = uniform(*scale)
    tx, ty = uniform(-max_shift, max_shift) * 2, uniform(-max_shift, max_shift) * 2
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    out = F.grid_sample(images.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    gamma = torch.exp(uniform(-contrast, contrast)).view(b, 1, 1, 1)
    return out.clamp(0, 1) ** gamma


@dataclass
class ImageItem:
    """One cached image with what a stage may condition on."""

    row: int  # position in the ImageCache
    study_id: str
    view: str
    source: str
    split: str
    labels: np.ndarray  # multi-hot over CONDITION_LABELS
    has_labels: bool
    text: str | None  # report text paired with the image (covid clinical notes or a MIMIC impression)


class TrainingData:
    """Studies, the image cache and the report corpus of one training configuration."""

    def __init__(self, config: dict[str, Any], run_dir: Path, data_dir: str | None = None, limit: int | None = None):
        data_cfg = config.get("data", {})
        self.size = int(data_cfg.get("image_size", 256))
        mimic_root = data_cfg.get("mimic_root") or os.environ.get("CODIXR_MIMIC")
        if mimic_root:
            studies = load_mimic_cxr(mimic_root)
        else:
            studies = load_public_cxr(data_dir or data_cfg.get("data_dir"))
        if limit:
            by_source: dict[str, list] = {}
            for s in studies:
                by_source.setdefault(s.source, []).append(s)
            # studies with both views first, so that a small limit still covers every view and stage
            studies = StudyDataset([s for group in by_source.values()
                                    for s in sorted(group, key=lambda s: not s.has_both_views)[:limit]],
                                   name=studies.name)
        self.studies = studies
        cache_dir = run_dir.parent / "cache" / f"{run_dir.name}-images-{self.size}" if limit else \
            Path(data_cfg.get("cache_dir") or run_dir.parent / "cache") / f"images-{self.size}"
        from accelerate import PartialState

        with PartialState().main_process_first():  # several processes: one decodes, the others then open it
            self.cache: ImageCache = build_image_cache(studies, cache_dir, size=self.size, views=("frontal", "lateral"))
        by_id = {s.study_id: s for s in studies}
        self.items: list[ImageItem] = []
        for i, entry in enumerate(self.cache.entries):
            study = by_id[entry["study_id"]]
            has_labels = any(v is not None for v in study.labels.values())
            self.items.append(ImageItem(row=i, study_id=study.study_id, view=entry["view"], source=study.source,
                                        split=study.split, labels=labels_multi_hot(study.labels),
                                        has_labels=has_labels, text=study.text))
        iu = load_iu_xray(validate_fraction=float(data_cfg.get("iu_validate_fraction", 0.1)))
        if limit:
            iu = iu[: limit * 4]
        self.reports = [s for s in iu if s.impression]
        logger.info("training data: %d cached images (%d studies), %d report impressions",
                    len(self.cache), len(studies), len(self.reports))

    # ------------------------------------------------------------------ selections
    def image_items(self, split: str = "train", views: tuple[str, ...] = ("frontal", "lateral"),
                    sources: tuple[str, ...] | None = None) -> list[ImageItem]:
        return [it for it in self.items if it.split == split and it.view in views
                and (sources is None or it.source in sources)]

    def report_items(self, split: str = "train") -> list:
        return [s for s in self.reports if s.split == split]

    def images(self, items: list[ImageItem], indices) -> torch.Tensor:
        """(B, 1, S, S) float images in [0, 1]."""
        return torch.from_numpy(np.stack([self.cache.get(items[i].row) for i in indices]))[:, None]

    def paired_views(self, split: str = "train") -> list[tuple[ImageItem, ImageItem]]:
        """(frontal, lateral) image pairs of the same study (one pair per study)."""
        by_study: dict[str, dict[str, ImageItem]] = {}
        for it in self.items:
            if it.split == split and it.source in GENERATION_SOURCES:
                by_study.setdefault(it.study_id, {}).setdefault(it.view, it)
        return [(v["frontal"], v["lateral"]) for v in by_study.values() if "frontal" in v and "lateral" in v]

    def corpus(self, split: str = "train") -> list[str]:
        """Every report text of a split: IU impressions and the texts paired with images."""
        texts = [s.impression for s in self.report_items(split)]
        seen = set()
        for it in self.items:
            if it.split == split and it.text and it.study_id not in seen:
                seen.add(it.study_id)
                texts.append(it.text)
        return texts
