"""The blinded reader study: answers go to a temp SQLite database and are summarised and exported."""

from __future__ import annotations

import csv
import random
import sqlite3

import numpy as np
import pytest
from gradio_client.exceptions import AppError
from PIL import Image

from codixr.app.reader_study import (
    ReaderAnswer,
    ReaderStudyError,
    ReaderStudyStore,
    find_real_images,
    start_session,
)
from codixr.app.runtime import ModelService
from tests.app.fixtures import IDENTIFYING_VALUES, OPERATOR_SECRET, write_real_folder


def _answer(truth: str, guess: str, realism: int, session: str = "s1") -> ReaderAnswer:
    return ReaderAnswer(session, 0, truth, guess, realism, "frontal", "ref", "tiny")


def test_store_summarises_and_exports(tmp_path):
    store = ReaderStudyStore(tmp_path / "nested" / "reader.sqlite")
    assert store.summary().n_answers == 0 and store.summary().markdown() == "No answers recorded yet."
    for truth, guess, realism, session in [("real", "real", 8, "a"), ("real", "synthetic", 6, "a"),
                                           ("synthetic", "synthetic", 3, "b"), ("synthetic", "real", 7, "b"),
                                           ("synthetic", "synthetic", 2, "b")]:
        store.record(_answer(truth, guess, realism, session))
    summary = store.summary()
    assert (summary.n_answers, summary.n_sessions) == (5, 2)
    assert summary.accuracy == pytest.approx(3 / 5)
    assert summary.per_class["real"] == {"n": 2, "accuracy": 0.5, "mean_realism": 7.0,
                                         "sd_realism": pytest.approx(np.std([8, 6], ddof=1))}
    assert summary.per_class["synthetic"]["accuracy"] == pytest.approx(2 / 3)
    assert summary.per_class["synthetic"]["mean_realism"] == pytest.approx(4.0)
    assert summary.rows()[0][:3] == ["real", 2, 0.5]
    assert "**5 answers** from 2 session(s)" in summary.markdown() and "60.0%" in summary.markdown()

    rows = list(csv.DictReader(store.export_csv(tmp_path / "answers.csv").open()))
    assert len(rows) == 5 and rows[0]["truth"] == "real" and rows[0]["realism"] == "8" and rows[0]["reader"] == ""


@pytest.mark.parametrize(("guess", "realism"), [(None, 5), ("maybe", 5), ("real", 0), ("real", 11), ("real", 5.5)])
def test_invalid_answers_are_refused(guess, realism):
    with pytest.raises(ReaderStudyError):
        _answer("real", guess, realism)


def test_session_mixes_real_and_synthetic_and_stores_nothing_identifying(tiny_package, tmp_path):
    folder = write_real_folder(tmp_path / "real")
    assert [p.name for p in find_real_images(folder)] == ["a.dcm", "b.dcm", "c.png", "d.png"]
    pipe = ModelService(str(tiny_package)).pipeline()
    ticks = []
    session = start_session(folder, pipe, n_images=5, model="tiny", steps=2, rng=random.Random(0),
                            progress=lambda i, n: ticks.append((i, n)))
    assert session.skipped == 1  # d.png is damaged
    assert sorted(item.truth for item in session.items) == ["real"] * 3 + ["synthetic"] * 3
    assert ticks[-1] == (3, 3)
    assert {item.image.shape for item in session.items} == {(64, 64)}  # both classes shown the same way
    assert {item.image.dtype for item in session.items} == {np.dtype(np.uint8)}
    store = ReaderStudyStore(tmp_path / "reader.sqlite")
    for i in range(len(session.items)):
        session.answer(store, realism=i % 10 + 1, guess="real" if i % 2 else "synthetic", reader=" R7 ")
    assert session.done and session.current is None
    with pytest.raises(ReaderStudyError, match="finished"):
        session.answer(store, 5, "real")
    answers = store.answers()
    assert [a["item_index"] for a in answers] == list(range(6)) and {a["reader"] for a in answers} == {"R7"}
    assert {a["view"] for a in answers if a["truth"] == "real"} <= {"frontal", "lateral"}
    with sqlite3.connect(store.path) as db:
        dump = "\n".join(db.iterdump())
    for forbidden in (*IDENTIFYING_VALUES, "a.dcm", "c.png", str(folder)):
        assert forbidden not in dump


def test_session_needs_a_configured_folder_with_images(tiny_package, tmp_path):
    pipe = ModelService(str(tiny_package)).pipeline()
    with pytest.raises(ReaderStudyError, match="--reader-real-dir"):
        start_session(None, pipe, n_images=2, model="tiny")
    with pytest.raises(ReaderStudyError, match="does not exist"):
        start_session(tmp_path / "missing", pipe, n_images=2, model="tiny")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "x.txt").write_text("no image")
    with pytest.raises(ReaderStudyError, match="No readable X-ray"):
        start_session(tmp_path / "empty", pipe, n_images=2, model="tiny")


def test_reader_study_through_the_app(client, studio):
    before = {row[0]: row[1] for row in client.predict(OPERATOR_SECRET, api_name="/reader_summary")[1]["data"]}
    exported_before = len(list(csv.DictReader(open(client.predict(OPERATOR_SECRET, api_name="/reader_export")))))
    with pytest.raises(AppError, match="Start a reading session first"):
        client.predict(5, "real", "", api_name="/reader_answer")
    image, position, guess = client.predict(api_name="/reader_start")
    assert Image.open(image).size == (64, 64) and "Image **1 of 4**" in position and guess is None
    with pytest.raises(AppError, match="real or synthetic"):
        client.predict(5, None, "", api_name="/reader_answer")
    for i in range(4):
        image, position, _ = client.predict(7, "real", "", api_name="/reader_answer")
    assert image is None and "Session finished: 4 images read" in position
    text, table = client.predict(OPERATOR_SECRET, api_name="/reader_summary")
    assert "answers** from" in text and str(studio.config.reader_db_path.name) in text
    rows = {row[0]: row for row in table["data"]}
    assert rows["real"][1] - before["real"] == 2 and rows["synthetic"][1] - before["synthetic"] == 2
    if not before["real"]:  # the first session in this database: every image was guessed "real"
        assert "**4 answers** from 1 session(s)" in text and "50.0%" in text
        assert rows["real"][2] == 1.0 and rows["synthetic"][2] == 0.0
    exported = list(csv.DictReader(open(client.predict(OPERATOR_SECRET, api_name="/reader_export"))))
    assert len(exported) - exported_before == 4 and {row["realism"] for row in exported[-4:]} == {"7"}
    assert studio.config.reader_db_path.is_file()
