"""Zero-shot findings from the model's own aligned encoders."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from codixr.findings import classify
from codixr.findings.zero_shot import zero_shot_scores
from codixr.modality import PATHOLOGIES
from codixr.models.objectives import contrastive_loss
from codixr.testing import tiny_pipeline


def _images():
    yy, xx = np.mgrid[0:64, 0:64] / 63.0
    effusion = np.clip(0.3 + 0.6 * (yy > 0.6), 0, 1).astype(np.float32)  # bright lower third
    clear = np.clip(0.2 + 0.5 * np.sin(6 * xx) ** 2, 0, 1).astype(np.float32)
    return effusion, clear


@pytest.fixture(scope="module")
def trained_pipe():
    """The tiny pipeline after a short contrastive fit: image A <-> "pleural effusion", image B <-> "no pleural effusion"."""
    pipe = tiny_pipeline(seed=0)
    pe = pipe.prompt_encoder.train()
    effusion, clear = _images()
    images = torch.from_numpy(np.stack([effusion, clear]))[:, None]
    enc = pipe.tokenizer(["pleural effusion.", "no pleural effusion."], padding=True, return_tensors="pt")
    opt = torch.optim.AdamW(pe.parameters(), lr=3e-3)
    torch.manual_seed(0)
    for _ in range(40):
        loss = contrastive_loss(pe, images, enc["input_ids"], enc["attention_mask"])
        opt.zero_grad()
        loss.backward()
        opt.step()
    pe.eval()
    return pipe


def test_scores_cover_every_pathology_and_are_probabilities(trained_pipe):
    scores = zero_shot_scores(trained_pipe, _images()[0])
    assert list(scores) == list(PATHOLOGIES)
    assert all(0.0 <= p <= 1.0 for p in scores.values())


def test_zero_shot_is_deterministic(trained_pipe):
    image = _images()[0]
    assert zero_shot_scores(trained_pipe, image) == zero_shot_scores(trained_pipe, image)


def test_matching_report_ranks_above_the_mismatched_one(trained_pipe):
    effusion, clear = _images()
    assert zero_shot_scores(trained_pipe, effusion)["Pleural Effusion"] > zero_shot_scores(trained_pipe, clear)["Pleural Effusion"]
    h = trained_pipe.encode_images([effusion, clear])
    r = trained_pipe.encode_reports(["pleural effusion.", "no pleural effusion."])
    sim = h @ r.T
    assert sim[0, 0] > sim[0, 1] and sim[1, 1] > sim[1, 0]


def test_classify_zero_shot_source(trained_pipe):
    findings = classify(_images()[0], pipe=trained_pipe, source="zero-shot")
    assert findings.available and set(findings.scores) == set(PATHOLOGIES)
    assert "zero-shot" in findings.source
