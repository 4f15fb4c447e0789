"""Seeded tiny models for tests and examples (diffusers-style: build, don't download).

``tiny_pipeline()`` builds a randomly initialised ``CoDiXRPipeline`` at the ``tiny`` size with a
WordPiece tokenizer trained on ``FIXTURE_IMPRESSIONS`` -- generic radiology phrasing written for
tests, not patient data. Its outputs are noise-like; it exists to exercise every code path fast.
"""

from __future__ import annotations

import torch

# Generic impression phrasing (no patient data) to train the fixture tokenizer on.
FIXTURE_IMPRESSIONS: tuple[str, ...] = (
    "No acute cardiopulmonary process.",
    "No acute cardiopulmonary abnormality.",
    "Mild cardiomegaly without pulmonary edema.",
    "Small left pleural effusion with adjacent atelectasis.",
    "Right lower lobe consolidation concerning for pneumonia.",
    "Moderate right pneumothorax.",
    "No pleural effusion or pneumothorax.",
    "Stable enlarged cardiomediastinal silhouette.",
    "Bibasilar opacities likely atelectasis, cannot exclude pneumonia.",
    "Pulmonary nodule in the left upper lobe.",
    "Interval resolution of the right pleural effusion.",
    "Lungs are clear. Heart size is normal.",
    "Possible small left apical pneumothorax.",
    "Diffuse interstitial edema, worse than prior.",
    "Normal chest radiograph.",
)


def tiny_tokenizer():
    """A WordPiece tokenizer trained on ``FIXTURE_IMPRESSIONS`` (deterministic)."""
    from codixr.models.tokenizer import train_report_tokenizer

    return train_report_tokenizer(FIXTURE_IMPRESSIONS * 4, vocab_size=300, min_frequency=1)


def tiny_pipeline(seed: int = 0, with_joint: bool = True):
    """A seeded, randomly initialised tiny ``CoDiXRPipeline`` on the CPU, progress bar off."""
    from codixr.models.configs import build_components
    from codixr.pipeline import CoDiXRPipeline

    torch.manual_seed(seed)
    components = build_components("tiny", tokenizer=tiny_tokenizer(), with_joint=with_joint)
    pipe = CoDiXRPipeline(**components)
    for module in components.values():
        if isinstance(module, torch.nn.Module):
            module.eval()  # as after from_pretrained
    pipe.set_progress_bar_config(disable=True)
    return pipe.to("cpu")
