"""AdaPatch (AdaMatch Eq. 1-4) and the patch-word alignment loss (Eq. 5-9)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from codixr.errors import InputError
from codixr.models.adapatch import (
    AdaPatch,
    adamatch_loss,
    adapatch_config,
    content_word_mask,
    encode_adaptive_patches,
    patch_word_loss,
    patch_word_similarity,
)
from codixr.models.configs import get_config
from codixr.models.prompt_encoder import PromptEncoder
from codixr.testing import FIXTURE_IMPRESSIONS, tiny_tokenizer

TINY = get_config("tiny")["prompt_encoder"]


def tiny_adapatch(**overrides) -> AdaPatch:
    torch.manual_seed(0)
    return AdaPatch(**adapatch_config(TINY["vision_config"], TINY["projection_dim"], **overrides))


def assert_inside(boxes: torch.Tensor) -> None:
    assert torch.isfinite(boxes).all()
    assert (boxes >= 0).all() and (boxes <= 1).all()
    assert (boxes[..., 2] >= boxes[..., 0]).all() and (boxes[..., 3] >= boxes[..., 1]).all()


def test_config_matches_the_tiny_vit_and_rebuilds_the_module():
    head = tiny_adapatch()
    assert head.config["grid_size"] == 4 and head.config["hidden_size"] == 32 and head.config["projection_dim"] == 32
    json.dumps(head.config)  # plain values: it can live in PromptEncoder's config.json
    rebuilt = AdaPatch(**head.config)
    rebuilt.load_state_dict(head.state_dict())
    tokens, images = torch.randn(2, 16, 32), torch.rand(2, 1, 64, 64) * 2 - 1
    torch.testing.assert_close(rebuilt(tokens, images).embeddings, head(tokens, images).embeddings)


def test_adaptive_patches_start_as_the_fixed_patches():
    out = tiny_adapatch()(torch.randn(3, 16, 32), torch.rand(3, 1, 64, 64))
    assert out.embeddings.shape == (3, 16, 32) and out.boxes.shape == (3, 16, 4) and out.centres.shape == (3, 16, 2)
    cells = torch.arange(4) / 4
    x0 = cells.repeat(4)  # row-major: x varies fastest
    y0 = cells.repeat_interleave(4)
    expected = torch.stack([x0, y0, x0 + 0.25, y0 + 0.25], -1)
    torch.testing.assert_close(out.boxes[0], expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(out.centres[0], (expected[:, :2] + expected[:, 2:]) / 2)


@pytest.mark.parametrize("scale", [1.0, 1e2, 1e6])
def test_boxes_stay_inside_the_image_for_random_and_extreme_inputs(scale):
    head = tiny_adapatch()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for f in (head.f1, head.f2, head.f3, head.f4):
            f.weight.normal_(0, 3.0, generator=generator)
            f.bias.normal_(0, 3.0, generator=generator)
    tokens = torch.randn(8, 16, 32, generator=generator) * scale
    out = head(tokens, torch.rand(8, 1, 64, 64, generator=generator))
    assert_inside(out.boxes)
    assert torch.isfinite(out.embeddings).all()
    # Saturated offsets push centres past the border: they are clamped, so boxes still lie in the image.
    with torch.no_grad():
        head.f1.bias.fill_(50.0), head.f2.bias.fill_(-50.0), head.f3.bias.fill_(50.0), head.f4.bias.fill_(50.0)
        head.f1.weight.zero_(), head.f2.weight.zero_(), head.f3.weight.zero_(), head.f4.weight.zero_()
    boxes = head(tokens, torch.rand(8, 1, 64, 64)).boxes
    assert_inside(boxes)
    torch.testing.assert_close(boxes[0, 0], torch.tensor([0.5, 0.0, 1.0, 0.5]))  # centre (1, 0), size 1: clipped


@pytest.mark.parametrize("source", ["tokens", "pixels", "tokens+pixels"])
def test_every_feature_source_samples_and_the_pixels_one_needs_the_image(source):
    head = tiny_adapatch(feature_source=source)
    out = head(torch.randn(2, 16, 32), torch.rand(2, 1, 64, 64))
    assert out.embeddings.shape == (2, 16, 32)
    if "pixels" in source:
        with pytest.raises(InputError, match="samples the image"):
            head(torch.randn(2, 16, 32))
    with pytest.raises(InputError, match="4x4 grid"):
        head(torch.randn(2, 9, 32), torch.rand(2, 1, 64, 64))


def test_sampling_reads_the_content_inside_the_box():
    """A box over a bright quadrant samples brightness 1, one over the dark rest samples 0 (bilinear, in-box)."""
    head = tiny_adapatch(feature_source="pixels", num_samples=2)
    image = torch.zeros(1, 1, 64, 64)
    image[..., :32, 32:] = 1.0  # top-right quadrant
    boxes = torch.tensor([[[0.5, 0.0, 1.0, 0.5], [0.0, 0.5, 0.5, 1.0]]])
    points = head.sample_points(boxes)
    expected = torch.tensor([[0.625, 0.125], [0.875, 0.125], [0.625, 0.375], [0.875, 0.375]])
    torch.testing.assert_close(points[0, 0], expected)
    full = torch.nn.functional.pad(head.sample_points(boxes), (0, 0, 0, 0, 0, 14))  # 16 patches
    features = head.sample_features(full, torch.zeros(1, 16, 32), image)
    torch.testing.assert_close(features[0, 0], torch.ones(4))
    torch.testing.assert_close(features[0, 1], torch.zeros(4))


def _hand_example():
    # 2 images x 2 patches, 2 reports x 3 words (report 0's third word is padding), d = 2; raw dot products.
    patches = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[1.0, 1.0], [0.0, -1.0]]])
    words = torch.tensor([[[1.0, 0.0], [0.0, 2.0], [5.0, 5.0]], [[-1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    return patches, words, mask


def test_patch_word_similarity_matches_a_hand_computation():
    patches, words, mask = _hand_example()
    s_image, s_text = patch_word_similarity(patches, words, mask, normalize=False)
    # s^I[i,j] = mean over patches of the best (unpadded) word; s^T[i,j] = mean over unpadded words of the best patch.
    torch.testing.assert_close(s_image, torch.tensor([[1.5, 1.0], [1.0, 1.0]]))
    torch.testing.assert_close(s_text, torch.tensor([[1.5, 2 / 3], [1.5, 1.0]]))
    # The padded word (5, 5) would win everywhere if it were not masked.
    unmasked, _ = patch_word_similarity(patches, words, None, normalize=False)
    assert unmasked[0, 0] > s_image[0, 0]


def test_patch_word_loss_matches_eq_7_to_9_by_hand():
    patches, words, mask = _hand_example()
    scale = 2.0

    def nll(logits, target):
        return -math.log(math.exp(logits[target]) / sum(math.exp(v) for v in logits))

    s_i = [[1.5, 1.0], [1.0, 1.0]]
    s_t = [[1.5, 2 / 3], [1.5, 1.0]]
    b = 2
    l_i2t = [nll([scale * v for v in s_i[i]], i) / b for i in range(b)]  # image i against reports j
    l_t2i = [nll([scale * s_t[j][i] for j in range(b)], i) / b for i in range(b)]  # report i against images j
    expected = 0.5 * sum(l_i2t[i] + l_t2i[i] for i in range(b))
    got = patch_word_loss(patches, words, mask, scale, normalize=False)
    assert got.item() == pytest.approx(expected, rel=1e-6)
    # With unit vectors, normalising changes nothing.
    unit_p = torch.nn.functional.normalize(patches, dim=-1)
    unit_w = torch.nn.functional.normalize(words, dim=-1)
    assert patch_word_loss(unit_p, unit_w, mask, scale).item() == pytest.approx(
        patch_word_loss(unit_p, unit_w, mask, scale, normalize=False).item(), rel=1e-6)


def test_masks_exclude_padding_and_special_tokens_and_empty_reports_are_refused():
    ids = torch.tensor([[2, 10, 11, 3, 0], [2, 3, 0, 0, 0]])
    attention = (ids != 0).long()
    mask = content_word_mask(ids, attention, special_ids=(0, 2, 3))
    assert mask.tolist() == [[False, True, True, False, False], [False] * 5]
    with pytest.raises(InputError, match="no word tokens"):
        patch_word_similarity(torch.randn(2, 4, 8), torch.randn(2, 5, 8), mask)
    with pytest.raises(InputError, match="as many images as reports"):
        patch_word_loss(torch.randn(3, 4, 8), torch.randn(2, 5, 8), None, 1.0)


def test_one_batch_overfit_lowers_patch_word_loss_and_moves_the_boxes():
    tokenizer = tiny_tokenizer()
    torch.manual_seed(0)
    text_config = dict(TINY["text_config"], vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                       bos_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.sep_token_id)
    pe = PromptEncoder(vision_config=TINY["vision_config"], text_config=text_config,
                       projection_dim=TINY["projection_dim"])
    pe.adapatch = tiny_adapatch()
    pe.train()
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(4, 1, 64, 64, generator=generator)
    tokens = dict(tokenizer(list(FIXTURE_IMPRESSIONS[3:7]), padding=True, return_tensors="pt"))
    tokens.pop("token_type_ids", None)
    before = encode_adaptive_patches(pe, images).boxes.detach()
    optimizer = torch.optim.Adam(pe.parameters(), lr=3e-3)
    losses = []
    for step in range(25):
        loss = adamatch_loss(pe, images, **tokens)
        optimizer.zero_grad()
        loss.backward()
        if step == 0:  # the box heads f1..f4 learn through the bilinear sampling
            heads = (pe.adapatch.f1, pe.adapatch.f2, pe.adapatch.f3, pe.adapatch.f4)
            assert all(f.weight.grad.abs().sum() > 0 for f in heads)
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.2 * losses[0], losses
    after = encode_adaptive_patches(pe, images).boxes.detach()
    assert (after - before).abs().max() > 1e-3
    assert_inside(after)
