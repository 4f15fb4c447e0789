"""The bundled default model package: loads offline with no argument, stays small, generates every combination."""

from __future__ import annotations

import itertools

import pytest

from codixr.modality import Modality
from codixr.pipeline import DEFAULT_MODEL_PATH, CoDiXRPipeline

VIEWS = (Modality.FRONTAL, Modality.LATERAL, Modality.REPORT)
COMBINATIONS = [(set(given), set(VIEWS) - set(given) - set(rest))
                for k in (1, 2) for given in itertools.combinations(VIEWS, k)
                for j in range(0, 3 - k) for rest in itertools.combinations(set(VIEWS) - set(given), j)]


@pytest.fixture(scope="module")
def pipe():
    pipe = CoDiXRPipeline.from_pretrained()  # no argument: the bundled package, no network (conftest blocks it)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def study(pipe):
    out = pipe(labels=["Pleural Effusion"], outputs=list(VIEWS), num_inference_steps=4, seed=0)
    return {Modality.FRONTAL: out.frontal, Modality.LATERAL: out.lateral, Modality.REPORT: out.report}


def test_package_is_the_bundled_default_and_fits_the_size_budget():
    files = [f for f in DEFAULT_MODEL_PATH.rglob("*") if f.is_file()]
    assert sum(f.stat().st_size for f in files) <= 60e6
    card = (DEFAULT_MODEL_PATH / "README.md").read_text()
    for section in ("## Training data and licences", "## Training", "## Speed", "## Evaluation", "## Limitations"):
        assert section in card


def test_default_model_has_joint_generation(pipe):
    assert pipe.has_joint_generation and pipe.image_size == 256


def test_study_from_labels_is_three_outputs(study):
    assert study[Modality.FRONTAL].size == study[Modality.LATERAL].size == (256, 256)
    assert isinstance(study[Modality.REPORT], str) and study[Modality.REPORT].strip()


@pytest.mark.parametrize("given,wanted", COMBINATIONS,
                         ids=["+".join(m.value for m in sorted(g, key=VIEWS.index)) + "->" +
                              "+".join(m.value for m in sorted(w, key=VIEWS.index)) for g, w in COMBINATIONS])
def test_every_combination_generates_from_the_default(pipe, study, given, wanted):
    inputs = {m.value if m is not Modality.REPORT else "report": study[m] for m in given}
    out = pipe(**inputs, outputs=sorted(wanted, key=VIEWS.index), num_inference_steps=4, seed=1)
    for m in wanted:
        value = getattr(out, m.value)
        if m is Modality.REPORT:
            assert isinstance(value, str) and value.strip()
        else:
            assert value.size == (256, 256) and value.getextrema()[1] > value.getextrema()[0]
    assert set(out.outputs) == {m.value for m in wanted}
