"""Fixtures for the synthetic-export tests: a saved tiny model package, one CPU thread per test module."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A seeded tiny CoDiXR model package (random weights, 64-px images) saved with save_pretrained."""
    from codixr.testing import tiny_pipeline

    folder = tmp_path_factory.mktemp("tiny-model")
    tiny_pipeline().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread: the machine is shared, and thread oversubscription slows tiny models badly."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
