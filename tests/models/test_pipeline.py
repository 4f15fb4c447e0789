"""The any-to-any contract of CoDiXRPipeline on a seeded tiny model."""

from __future__ import annotations

import itertools
import logging

import numpy as np
import PIL.Image
import pytest

from codixr import Modality
from codixr.errors import (
    InputError,
    EmptyInputError,
    OverlappingModalitiesError,
    ReportTooLongError,
    UnknownLabelError,
    UnknownModalityError,
)
from codixr.pipeline import CoDiXRPipeline
from codixr.testing import tiny_pipeline

REPORT = "Small left pleural effusion with adjacent atelectasis."


@pytest.fixture(scope="module")
def pipe():
    return tiny_pipeline(seed=0)


@pytest.fixture(scope="module")
def xray():
    rng = np.random.default_rng(0)
    return rng.random((72, 64), dtype=np.float32)  # not square: the pipeline pads it


def _subsets(items):
    return [c for r in range(1, len(items) + 1) for c in itertools.combinations(items, r)]


INPUT_SUBSETS = _subsets(list(Modality))


def _inputs(subset, xray):
    value = {Modality.FRONTAL: xray, Modality.LATERAL: xray, Modality.REPORT: REPORT}
    return {m.value: value[m] for m in subset}


def _check(out, wanted, size):
    for m in Modality:
        got = getattr(out, m.value)
        if m not in wanted:
            assert got is None
        elif m is Modality.REPORT:
            assert isinstance(got, str)
        else:
            assert isinstance(got, PIL.Image.Image) and got.mode == "L" and got.size == (size, size)


@pytest.mark.parametrize("given", INPUT_SUBSETS, ids=lambda s: "+".join(m.letter for m in s))
def test_every_input_subset_to_every_output_subset(pipe, xray, given):
    free = [m for m in Modality if m not in given]
    if not free:  # all three given: nothing left to generate
        with pytest.raises(OverlappingModalitiesError):
            pipe(**_inputs(given, xray), outputs=("frontal",), num_inference_steps=2)
        return
    for wanted in _subsets(free):
        out = pipe(**_inputs(given, xray), outputs=wanted, num_inference_steps=2)
        _check(out, wanted, pipe.image_size)
        assert out.joint == (len(wanted) > 1)


def test_labels_alone_condition_every_output(pipe):
    for wanted in _subsets(list(Modality)):
        out = pipe(labels=["Pleural Effusion", "cardiomegaly"], outputs=wanted, num_inference_steps=2)
        _check(out, wanted, pipe.image_size)


@pytest.mark.parametrize("scheduler", ["dpm++", "ddim", "ddpm"])
def test_seed_is_bit_identical_and_matters(pipe, scheduler):
    kw = dict(labels=["Edema"], outputs="frontal,report", num_inference_steps=3, scheduler=scheduler)
    a, b, c = pipe(seed=7, **kw), pipe(seed=7, **kw), pipe(seed=8, **kw)
    assert np.array_equal(np.asarray(a.frontal), np.asarray(b.frontal)) and a.report == b.report
    assert not np.array_equal(np.asarray(a.frontal), np.asarray(c.frontal))


def test_save_load_round_trip_is_identical(pipe, tmp_path):
    pipe.save_pretrained(tmp_path / "pkg")
    loaded = CoDiXRPipeline.from_pretrained(tmp_path / "pkg")
    loaded.set_progress_bar_config(disable=True)
    assert (tmp_path / "pkg" / "model_index.json").is_file()
    assert not list((tmp_path / "pkg").rglob("*.bin")) and list((tmp_path / "pkg").rglob("*.safetensors"))
    kw = dict(report=REPORT, outputs=("frontal", "lateral"), num_inference_steps=3, seed=3)
    a, b = pipe(**kw), loaded(**kw)
    assert np.array_equal(np.asarray(a.frontal), np.asarray(b.frontal))
    assert np.array_equal(np.asarray(a.lateral), np.asarray(b.lateral))
    kw = dict(frontal=np.full((64, 64), 0.5, np.float32), outputs="report", num_inference_steps=3, seed=3)
    assert pipe(**kw).report == loaded(**kw).report


def test_batch_of_studies(pipe, xray):
    out = pipe(report=[REPORT, "No acute cardiopulmonary process."], outputs=("lateral", "frontal"),
               num_inference_steps=2)
    assert len(out.frontal) == 2 and len(out.lateral) == 2
    single = pipe(report=REPORT, outputs=("lateral", "frontal"), num_inference_steps=2)
    # the first study of the batch starts from the same noise as the single call; batched matrix products
    # may round differently in the last bits
    assert np.abs(np.asarray(single.frontal, dtype=int) - np.asarray(out.frontal[0], dtype=int)).max() <= 2


def test_per_study_seeds_in_a_batch_match_single_calls(pipe):
    reports = [REPORT, "No acute cardiopulmonary process."]
    batch = pipe(report=reports, outputs="frontal", num_inference_steps=2, seed=[11, 12])
    for report, seed, image in zip(reports, (11, 12), batch.frontal):
        alone = pipe(report=report, outputs="frontal", num_inference_steps=2, seed=seed).frontal
        assert np.abs(np.asarray(alone, dtype=int) - np.asarray(image, dtype=int)).max() <= 2  # as above
    with pytest.raises(InputError, match="one seed per study"):
        pipe(report=reports, outputs="frontal", num_inference_steps=2, seed=[1])


def test_progress_callback_sees_every_step(pipe):
    seen = []
    pipe(report=REPORT, outputs="F", num_inference_steps=4, callback=lambda i, n: seen.append((i, n)))
    assert seen == [(1, 4), (2, 4), (3, 4), (4, 4)]


def test_typed_errors(pipe, xray):
    with pytest.raises(EmptyInputError):
        pipe(outputs="frontal")
    with pytest.raises(OverlappingModalitiesError):
        pipe(frontal=xray, outputs=("frontal", "report"))
    with pytest.raises(UnknownModalityError):
        pipe(report=REPORT, outputs=("ct",))
    with pytest.raises(UnknownLabelError):
        pipe(labels=["broken arm"], outputs="frontal")


def test_long_report_is_truncated_with_a_warning_or_refused(pipe, caplog):
    long_report = " ".join(["Small left pleural effusion with adjacent atelectasis."] * 20)
    with caplog.at_level(logging.WARNING):
        out = pipe(report=long_report, outputs="frontal", num_inference_steps=2)
    assert out.warnings and "77-token" in out.warnings[0]
    with pytest.raises(ReportTooLongError):
        pipe(report=long_report, outputs="frontal", num_inference_steps=2, on_long_report="error")


def test_joint_generation_needs_stage3_parts():
    plain = tiny_pipeline(seed=0, with_joint=False)
    assert not plain.has_joint_generation
    out = plain(report=REPORT, outputs="F,L", num_inference_steps=2)
    assert out.joint is False and out.frontal is not None
    with pytest.raises(Exception, match="cross-modal"):
        plain(report=REPORT, outputs="F,L", num_inference_steps=2, joint=True)
