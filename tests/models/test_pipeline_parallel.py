"""The flows of one request run side by side (``run_flows``) and give what they give one after the other."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

import codixr.pipeline as pipeline_module
from codixr.pipeline import run_flows
from codixr.testing import tiny_pipeline

REPORT = "Small left pleural effusion with adjacent atelectasis."
REQUESTS = {
    "labels->F+L+R": dict(labels=["Pleural Effusion"], outputs=("frontal", "lateral", "report")),
    "R->F+L": dict(report=REPORT, outputs=("frontal", "lateral")),
    "F->L+R": dict(frontal=np.full((64, 64), 0.5, np.float32), outputs=("lateral", "report")),
}


@pytest.fixture(scope="module")
def pipe():
    return tiny_pipeline(seed=0)


def _run(pipe, monkeypatch, workers: int, kwargs: dict, scheduler: str):
    """(final latents per flow, output) of one call on one intra-op thread with ``workers`` flow workers."""
    captured = {}
    denoise = pipeline_module.denoise_latents

    def recording(*args, **kw):
        captured.update(denoise(*args, **kw))
        return captured

    monkeypatch.setattr(pipeline_module, "denoise_latents", recording)
    monkeypatch.setattr(pipe, "flow_workers", workers)
    out = pipe(**kwargs, num_inference_steps=3, seed=5, scheduler=scheduler)
    return dict(captured), out


@pytest.mark.parametrize("scheduler", ["dpm++", "ddpm"])
@pytest.mark.parametrize("request_name", list(REQUESTS))
def test_flows_side_by_side_equal_flows_in_turn(pipe, monkeypatch, request_name, scheduler):
    # Two workers of one intra-op thread each (the share of two threads) run every kernel as the sequential run
    # on one thread does, and the prompts are encoded on one thread in both, so the results are bit-identical
    # (DDPM also draws noise inside the step, from each flow's own generator).
    kwargs = REQUESTS[request_name]
    serial_latents, serial = _run(pipe, monkeypatch, 1, kwargs, scheduler)
    parallel_latents, parallel = _run(pipe, monkeypatch, 2, kwargs, scheduler)
    assert serial.joint and parallel.joint
    assert serial_latents.keys() == parallel_latents.keys()
    for m in serial_latents:
        assert torch.equal(serial_latents[m], parallel_latents[m]), m
    for name in ("frontal", "lateral"):
        if getattr(serial, name) is not None:
            assert np.array_equal(np.asarray(getattr(serial, name)), np.asarray(getattr(parallel, name)))
    assert serial.report == parallel.report


def test_run_flows_keeps_order_grad_mode_and_thread_count():
    torch.set_num_threads(2)
    seen = []

    def task(i):
        seen.append((threading.current_thread().name, torch.get_num_threads(), torch.is_grad_enabled()))
        return i

    with torch.no_grad():
        assert run_flows([lambda i=i: task(i) for i in range(3)]) == [0, 1, 2]
    assert all(name.startswith("codixr-flow") and n == 1 and not grad for name, n, grad in seen)
    assert torch.get_num_threads() == 2
    started_later = []  # a thread started afterwards begins with the caller's count, not the workers' share
    thread = threading.Thread(target=lambda: started_later.append(torch.get_num_threads()))
    thread.start()
    thread.join()
    assert started_later == [2]
    assert run_flows([lambda: 1, lambda: 2], workers=1) == [1, 2]


def test_run_flows_raises_a_task_error_after_every_task_finished():
    torch.set_num_threads(2)
    finished = []

    def fail():
        raise ValueError("flow failed")

    def slow():
        torch.ones(256, 256) @ torch.ones(256, 256)
        finished.append(True)

    with pytest.raises(ValueError, match="flow failed"):
        run_flows([fail, slow])
    assert finished == [True]
