"""Textual codebook, keypatch matching and overlays (AdaMatch keypatches and keywords)."""

from __future__ import annotations

import json
import random

import numpy as np
import PIL.Image
import pytest
import torch

from codixr.errors import InputError
from codixr.findings.codebook import (
    CATEGORIES,
    DEFAULT_CODEBOOK_PATH,
    Codebook,
    CodebookError,
    build_codebook,
    extract_entities,
    load_codebook,
)
from codixr.findings.keypatch import ADAPTIVE_METHOD, FIXED_METHOD, keypatches, report_units
from codixr.findings.overlay import PALETTE, draw_keypatches
from codixr.models.adapatch import AdaPatch, adapatch_config
from codixr.models.configs import get_config
from codixr.testing import tiny_pipeline

SENTENCES = (
    "Small left pleural effusion with adjacent atelectasis.",
    "Left pleural effusions. No pneumothorax.",
    "No pleural effusion or pneumothorax. Heart size is normal.",
    "Opacity in the left lower lobe, concerning for pneumonia.",
    "Patchy opacities in the left lower lobe.",
    "Mild cardiomegaly. Blunting of the costophrenic angles.",
)


@pytest.fixture(scope="module")
def codebook() -> Codebook:
    return build_codebook(SENTENCES, top=40, min_count=1, source="test sentences", licence="test")


@pytest.fixture(scope="module")
def pipe():
    """The tiny pipeline with its P_X AdaPatch head removed: keypatches must fall back to the fixed patches."""
    pipe = tiny_pipeline()
    pipe.prompt_encoder.adapatch = None
    return pipe


@pytest.fixture()
def adaptive_pipe(pipe):
    """The tiny pipeline with an AdaPatch head attached to P_X for the test (removed afterwards)."""
    cfg = get_config("tiny")["prompt_encoder"]
    torch.manual_seed(0)
    head = AdaPatch(**adapatch_config(cfg["vision_config"], cfg["projection_dim"]))
    with torch.no_grad():  # shift and resize the patches so that the arrows and boxes are not the fixed grid
        head.f1.bias.fill_(0.1), head.f2.bias.fill_(-0.05), head.f3.bias.fill_(0.4)
        head.f1.weight.normal_(0, 0.05)
    pipe.prompt_encoder.adapatch = head.eval()
    yield pipe
    pipe.prompt_encoder.adapatch = None


def image(width: int = 90, height: int = 60, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((height, width)).astype(np.float32)


# ---------------------------------------------------------------------------------- codebook
def test_entity_rules_give_documented_entities():
    assert extract_entities("Opacity in the left lower lobe.") == [
        ("opacity", "sign"), ("left", "descriptor"), ("left lower lobe", "anatomy"), ("lower", "descriptor"),
        ("lower lobe", "anatomy"), ("lobe", "anatomy")]
    found = set(extract_entities("No focal consolidation. Calcified lingular granuloma. Low lung volumes."))
    assert ("consolidation", "disorder") in found and ("focal", "descriptor") in found
    assert ("calcified lingular granuloma", "disorder") in found and ("lingular", "anatomy") in found
    assert ("calcified lingular", "anatomy") not in found  # adjectives head no n-gram
    assert ("low lung volumes", "sign") in found and ("low lung", "anatomy") not in found  # "lung" modifies "volumes"
    assert all(word not in {e for e, _ in found} for word in ("no", "focal consolidation."))


def test_codebook_build_is_deterministic_and_counts_reports(codebook):
    again = build_codebook(SENTENCES, top=40, min_count=1, source="test sentences", licence="test")
    shuffled = list(SENTENCES)
    random.Random(3).shuffle(shuffled)
    assert codebook.to_dict() == again.to_dict()
    assert codebook.entries == build_codebook(shuffled, top=40, min_count=1).entries
    by_text = {e.text: e for e in codebook}
    # "pleural effusion(s)" is one entry (plural-insensitive), counted once per report: 3 reports.
    assert by_text["pleural effusion"].count == 3 and by_text["pleural effusion"].category == "disorder"
    assert by_text["left"].count == 4 and by_text["left"].category == "descriptor"
    assert by_text["left lower lobe"].category == "anatomy"
    assert by_text["blunting"].category == "sign"
    assert "effusion" not in by_text  # never seen outside "pleural effusion": dropped
    counts = [e.count for e in codebook]
    assert counts == sorted(counts, reverse=True)
    assert {e.category for e in codebook} <= set(CATEGORIES)
    top4 = build_codebook(SENTENCES, top=4, min_count=1)
    assert len(top4) == 4 and sorted(e.category for e in top4) == sorted(CATEGORIES)  # one per group


def test_codebook_round_trips_through_json(codebook, tmp_path):
    path = codebook.save(tmp_path / "codebook.json")
    data = json.loads(path.read_text())
    assert data["licence"] == "test" and data["source"] == "test sentences" and data["num_reports"] == len(SENTENCES)
    assert load_codebook(path).entries == codebook.entries
    with pytest.raises(CodebookError, match="build_codebook"):
        load_codebook(tmp_path / "missing.json")


def test_bundled_codebook_is_the_script_output(tmp_path):
    from training.build_codebook import main

    book = load_codebook(DEFAULT_CODEBOOK_PATH)
    assert len(book) == 200 and {e.category for e in book} == set(CATEGORIES)
    data = json.loads(DEFAULT_CODEBOOK_PATH.read_text())
    assert "CC BY-NC-ND" in data["licence"] and "IU X-ray" in data["source"] and data["split"] == "train"
    out = main(["--out", str(tmp_path / "codebook.json")])
    assert out.read_bytes() == DEFAULT_CODEBOOK_PATH.read_bytes()


def test_report_units_prefer_codebook_phrases(codebook):
    text = "Small left pleural effusions, no pneumothorax. Right pleural effusion."
    units = report_units(text, codebook)
    assert [(text[u.start:u.end], u.label) for u in units] == [
        ("Small", "small"), ("left pleural effusions", "left pleural effusion"), ("pneumothorax", "pneumothorax"),
        ("Right", "right"), ("pleural effusion", "pleural effusion")]  # longest codebook match first
    assert [u.label for u in report_units(text)] == [
        "small", "left", "pleural", "effusions", "pneumothorax", "right", "pleural", "effusion"]


# ---------------------------------------------------------------------------------- overlays
@pytest.mark.parametrize("size", [(300, 200), (128, 257), (64, 64)])
def test_overlay_has_the_input_size_and_draws_in_keyword_colours(size):
    width, height = size
    base = PIL.Image.new("L", size, 40)
    boxes = [dict(box=(10, 10, 50, 40), centre=(20, 20), keyword="effusion", score=0.5),
             dict(box=(width - 30, height - 30, width + 10, height + 10), centre=(width - 5, height - 5),
                  keyword="lobe", score=0.2)]
    out = draw_keypatches(base, boxes)
    assert out.size == size and out.mode == "RGB"
    colors = {tuple(c) for c in np.asarray(out).reshape(-1, 3)}
    assert tuple(int(PALETTE[0][i:i + 2], 16) for i in (1, 3, 5)) in colors
    assert draw_keypatches(np.zeros((height, width)), []).size == size


# ---------------------------------------------------------------------------------- keypatches
def _check_boxes(result, width, height):
    for b in result.boxes:
        x0, y0, x1, y1 = b["box"]
        assert 0 <= x0 <= x1 <= width and 0 <= y0 <= y1 <= height
        assert 0 <= b["centre"][0] <= width and 0 <= b["centre"][1] <= height
        assert b["color"] == result.colors[b["keyword"]]


def test_image_alone_uses_fixed_patches_without_an_adapatch_head(pipe, codebook):
    img = image(90, 60)
    result = keypatches(pipe, img, codebook=codebook, top_k=3)
    assert result.method == FIXED_METHOD
    assert result.overlay.size == (90, 60) and result.highlights is None
    assert len(result.boxes) == 3 and len(result.keywords) == 3 and len(result.patch_keywords) == 16
    assert all(len(p) == 3 for p in result.patch_keywords)
    scores = [s for _, s in result.keywords]
    assert scores == sorted(scores, reverse=True) and all(-1 <= s <= 1 for s in scores)
    assert {k for k, _ in result.keywords} <= set(codebook.texts)
    _check_boxes(result, 90, 60)
    # Fixed patches: a 4x4 grid over the centred 90x90 square (15 px of padding above): boxes 22.5 px wide.
    for b in result.boxes:
        assert b["box"][2] - b["box"][0] == pytest.approx(22.5)
        assert b["centre"] == pytest.approx(((b["box"][0] + b["box"][2]) / 2, b["centre"][1]))
    again = keypatches(pipe, img, codebook=codebook, top_k=3)
    assert again.keywords == result.keywords and again.boxes == result.boxes
    assert np.array_equal(np.asarray(again.overlay), np.asarray(result.overlay))


def test_adaptive_patches_for_image_and_report(adaptive_pipe, codebook):
    picture = PIL.Image.fromarray((image(120, 200) * 255).astype(np.uint8))
    result = keypatches(adaptive_pipe, picture, codebook=codebook)
    assert result.method == ADAPTIVE_METHOD and result.overlay.size == (120, 200)
    assert len(result.boxes) == 5
    _check_boxes(result, 120, 200)
    assert any(b["box"][2] - b["box"][0] > 40 for b in result.boxes)  # resized patches, not the 50 px grid cells

    report = "  Small left pleural effusions with adjacent atelectasis. Heart size is normal."
    with_report = keypatches(adaptive_pipe, picture, report=report, codebook=codebook, top_k=None)
    assert "".join(span for span, _ in with_report.highlights) == report
    labelled = {label for _, label in with_report.highlights if label}
    assert {"left pleural effusion", "adjacent atelectasis", "small", "heart size"} <= labelled
    assert labelled == set(with_report.colors) == {k for k, _ in with_report.keywords}
    assert ("left pleural effusions", "left pleural effusion") in with_report.highlights
    _check_boxes(with_report, 120, 200)
    top2 = keypatches(adaptive_pipe, picture, report=report, codebook=codebook, top_k=2)
    assert len({b["keyword"] for b in top2.boxes}) == 2
    assert [k for k, _ in top2.keywords] == [k for k, _ in with_report.keywords]  # every word ranked, 2 shown
    assert sum(1 for _, label in top2.highlights if label) == 2


def test_keypatch_inputs_are_checked(pipe, codebook):
    with pytest.raises(InputError, match="non-empty"):
        keypatches(pipe, image(), report="   ", codebook=codebook)
    with pytest.raises(InputError, match="top_k"):
        keypatches(pipe, image(), codebook=codebook, top_k=0)
    with pytest.raises(InputError, match="X-ray"):
        keypatches(pipe, {"not": "an image"}, codebook=codebook)
    only_stop_words = keypatches(pipe, image(), report="No, and the.", codebook=codebook)
    assert only_stop_words.boxes == [] and only_stop_words.warnings
    assert only_stop_words.highlights == [("No, and the.", None)]
