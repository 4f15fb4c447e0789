"""Augmented laterals (issue 13): small, reproducible variations that keep the anatomy's side."""

from __future__ import annotations

import torch

from training.data import augment_radiographs


def _radiograph():
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 64), torch.linspace(-1, 1, 64), indexing="ij")
    image = ((xx + 0.6) ** 2 + yy ** 2 < 0.15).float() * 0.8 + 0.1  # a bright disc on the left side
    return image[None, None].repeat(3, 1, 1, 1)


def test_variations_are_small_reproducible_and_never_mirrored():
    x = _radiograph()
    a = augment_radiographs(x, torch.Generator().manual_seed(1))
    b = augment_radiographs(x, torch.Generator().manual_seed(1))
    c = augment_radiographs(x, torch.Generator().manual_seed(2))
    assert a.shape == x.shape and torch.equal(a, b) and not torch.equal(a, c)
    assert a.min() >= 0 and a.max() <= 1
    assert not torch.allclose(a, x)  # each row varies
    mirrored = x.flip(-1)
    for row in range(3):  # still closer to the original than to its mirror image
        assert (a[row] - x[row]).abs().mean() < 0.5 * (a[row] - mirrored[row]).abs().mean()
