"""Issue 14, defects 5 and 6: requests that arrive together are batched through the pipeline (each with the result
it would get alone), the queue is bounded per session and in all with a message that says when to retry, and an
output that is also an input is used as the input instead of failing the request."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from gradio_client import handle_file

from codixr.app.batching import Batcher, QueueFullError
from codixr.app.generation import BatchKey, GenerationRequest, generate
from codixr.app.runtime import ModelService
from codixr.errors import OverlappingModalitiesError
from tests.app.fixtures import write_png

IMPRESSIONS = ("Small left pleural effusion.", "No acute cardiopulmonary abnormality.",
               "Cardiomegaly with mild interstitial edema.")


# --------------------------------------------------------------------------------------------- the batcher alone
def _echo_batcher(log: list, **kwargs) -> Batcher:
    def run_group(key, items, progress):
        log.append((key, list(items)))
        progress(1, 1)
        return [ValueError(f"bad {item}") if item == "bad" else (key, item) for item in items]

    return Batcher(run_group, **kwargs)


def test_items_with_the_same_key_arriving_together_run_as_one_group():
    log: list = []
    batcher = _echo_batcher(log, max_batch=3, window_s=5.0)
    tickets = [batcher.submit("a", i) for i in range(3)]  # full at 3: runs without waiting for the window
    other = batcher.submit("b", "x")
    assert [t.result(timeout=5) for t in tickets] == [("a", 0), ("a", 1), ("a", 2)]
    assert other.result(timeout=10) == ("b", "x")  # alone, once its window is over
    assert log == [("a", [0, 1, 2]), ("b", ["x"])] and batcher.groups_run == [3, 1]
    assert all(t.progress == (1, 1) and t.batch_size == 3 for t in tickets)
    batcher.close()


def test_an_items_error_is_its_own():
    batcher = _echo_batcher([], max_batch=2, window_s=5.0)
    good, bad = batcher.submit("k", "good"), batcher.submit("k", "bad")
    assert good.result(timeout=5) == ("k", "good")
    with pytest.raises(ValueError, match="bad bad"):
        bad.result(timeout=5)
    batcher.close()


def test_one_user_alone_does_not_wait_for_company():
    log: list = []
    batcher = _echo_batcher(log, max_batch=8, window_s=1.0)
    started = time.monotonic()
    assert batcher.submit("k", "solo", session="solo").result(timeout=5) == ("k", "solo")
    assert time.monotonic() - started < 0.9  # nobody else about: no batching window
    started = time.monotonic()
    together = [batcher.submit("k", name, session=name) for name in ("a", "b")]  # "solo" was just here
    assert [t.result(timeout=5) for t in together] == [("k", "a"), ("k", "b")]
    assert time.monotonic() - started >= 0.9 and batcher.groups_run == [1, 2]
    batcher.close()


def test_each_result_goes_out_when_it_is_made_and_served_users_are_waited_for():
    release = threading.Event()
    release.set()

    def run_group(key, items, progress):  # a generator: each result as soon as it is made
        time.sleep(1.2)  # a group takes 1.2 s, so a group may wait 0.3 s for served users to come back
        yield items[0]
        for item in items[1:]:
            release.wait(10)
            yield item

    batcher = Batcher(run_group, max_batch=8, window_s=0.05, session_cap=2)
    first = batcher.submit("k", "a1", session="a")  # alone: runs at once
    time.sleep(0.2)
    second = batcher.submit("k", "b1", session="b")  # waits for the worker
    assert first.result(timeout=5) == "a1" and second.result(timeout=5) == "b1"
    # "b" comes back with nothing else queued, but "a" was just served: the group waits for "a" to come back
    release.clear()
    late_b = batcher.submit("k", "b2", session="b")
    time.sleep(0.1)  # "a" is still reading its result
    late_a = batcher.submit("k", "a2", session="a")
    assert late_b.result(timeout=5) == "b2" and not late_a.done()  # the first result did not wait for the second
    release.set()
    assert late_a.result(timeout=5) == "a2"
    assert batcher.groups_run == [1, 1, 2]
    batcher.close()


def test_one_session_cannot_fill_the_queue_and_a_full_queue_says_when_to_retry():
    release = threading.Event()

    def run_group(key, items, progress):
        release.wait(10)
        return items

    batcher = Batcher(run_group, max_batch=8, window_s=5.0, queue_size=3, session_cap=2)
    first = [batcher.submit("k", i, session="greedy") for i in range(2)]
    with pytest.raises(QueueFullError, match=r"You already have 2 generation\(s\) waiting or running \(at most 2 at "
                                             r"a time per user\)\. Try again when one has finished, in about \d+ s"):
        batcher.submit("k", 2, session="greedy")
    batcher.submit("k", 3, session="other")
    with pytest.raises(QueueFullError, match=r"The app is busy: 3 generations are already waiting or running.*"
                                             r"Try again in about \d+ s") as refused:
        batcher.submit("k", 4, session="third")
    assert refused.value.retry_after_s >= 5
    release.set()
    assert [t.result(timeout=10) for t in first] == [0, 1]
    assert batcher.submit("k", 5, session="greedy").result(timeout=10) == 5  # its share is free again
    batcher.close()


# --------------------------------------------------------------------------------------------- generation, batched
def _request(i: int, **kwargs) -> GenerationRequest:
    return GenerationRequest(impression=IMPRESSIONS[i], outputs=("frontal", "lateral"), steps=3, seed=10 + i,
                             **kwargs)


def test_concurrent_requests_are_batched_and_each_equals_its_result_alone(tiny_package, tmp_path):
    alone_service = ModelService(str(tiny_package), device="cpu", max_batch=1, batch_window_s=0)
    alone = [generate(alone_service, _request(i), workdir=tmp_path) for i in range(3)]
    assert alone_service.batcher.groups_run == [1, 1, 1]

    service = ModelService(str(tiny_package), device="cpu", max_batch=3, batch_window_s=30)  # runs once full
    service.pipeline()
    with ThreadPoolExecutor(3) as pool:
        batched = list(pool.map(lambda i: generate(service, _request(i), workdir=tmp_path / f"b{i}"), range(3)))
    assert service.batcher.groups_run == [3]  # one pipeline call for the three
    for one, together in zip(alone, batched):
        assert together.batch_size == 3 and one.batch_size == 1
        for view in ("frontal", "lateral"):  # the same noise: equal up to float rounding of batched CPU kernels
            difference = np.abs(np.asarray(one.images[view], int) - np.asarray(together.images[view], int))
            assert difference.max() <= 1 and (difference == 0).mean() > 0.99, view
        assert [item.name for item in one.items] == [item.name for item in together.items]
        assert sorted(p.name for p in together.downloads) == sorted(p.name for p in one.downloads)
    assert len({np.asarray(r.images["frontal"]).tobytes() for r in batched}) == 3  # each its own seed and report


def test_requests_of_different_kinds_are_not_batched_together(tiny_package, tmp_path):
    service = ModelService(str(tiny_package), device="cpu", max_batch=4, batch_window_s=0.5)
    requests = [_request(0), GenerationRequest(impression=IMPRESSIONS[1], outputs=("frontal", "lateral"), steps=2),
                _request(2)]
    assert BatchKey.of(requests[0].checked()) != BatchKey.of(requests[1].checked())
    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(lambda r: generate(service, r, workdir=tmp_path), requests))
    assert sorted(service.batcher.groups_run) == [1, 2] and [r.batch_size for r in results] == [2, 1, 2]


def test_a_long_impression_is_cut_or_refused_per_request_not_per_batch(tiny_package, tmp_path):
    service = ModelService(str(tiny_package), device="cpu", max_batch=2, batch_window_s=30)
    long = "Mild interstitial edema is seen. " * 12
    with ThreadPoolExecutor(2) as pool:
        cut, short = pool.map(lambda text: generate(service, GenerationRequest(impression=text, outputs=("frontal",),
                                                                               steps=2), workdir=tmp_path),
                              (long, IMPRESSIONS[0]))
    assert service.batcher.groups_run == [2]
    assert any("77-token limit" in w for w in cut.warnings) and not short.warnings
    from codixr.errors import ReportTooLongError

    with pytest.raises(ReportTooLongError):  # refused before it is queued: it can fail no batch
        generate(service, GenerationRequest(impression=long, outputs=("frontal",), steps=2, long_impression="error"),
                 workdir=tmp_path)


# --------------------------------------------------------------------------------------------- outputs that are inputs
def test_outputs_that_are_inputs_are_used_as_inputs_with_a_note(tiny_package, tmp_path):
    request, note = GenerationRequest(frontal="f.png", impression=" x ", outputs=("frontal", "lateral", "report"),
                                      ).resolved()
    assert request.outputs == ("lateral",) and note.startswith("The frontal and report are inputs")
    assert GenerationRequest(impression="x", outputs=("lateral",)).resolved() == (
        GenerationRequest(impression="x", outputs=("lateral",)), None)
    with pytest.raises(OverlappingModalitiesError, match="Nothing to generate: the report is an input"):
        GenerationRequest(impression="x", outputs=("report",)).resolved()
    result = generate(ModelService(str(tiny_package)), GenerationRequest(
        frontal=str(write_png(tmp_path / "f.png")), impression=IMPRESSIONS[0], outputs=("frontal", "lateral"),
        steps=2), workdir=tmp_path)
    assert set(result.images) == {"lateral"} and result.request.outputs == ("lateral",)
    assert result.notes[0] == "The frontal is an input, so it was used as given and not generated."


def test_the_api_resolves_overlaps_and_refuses_only_when_nothing_is_left(client, tmp_path):
    frontal = handle_file(str(write_png(tmp_path / "f.png")))
    out = client.predict(frontal, None, IMPRESSIONS[0], [], ["frontal", "lateral", "report"], 2, 2.0, 0, "dpm++",
                         "truncate", api_name="/generate")
    assert out[1] and "Generated **lateral** from frontal + report" in out[3]
    assert "The frontal and report are inputs, so they were used as given" in out[3]
    out = client.predict(None, None, IMPRESSIONS[0], [], ["report"], 2, 2.0, 0, "dpm++", "truncate",
                         api_name="/generate")
    assert out[3].startswith("**Nothing generated.** Nothing to generate: the report is an input")


def test_the_api_caps_one_clients_requests(client):
    jobs = [client.submit(None, None, IMPRESSIONS[0], [], ["frontal"], 20, 2.0, i, "dpm++", "truncate",
                          api_name="/generate") for i in range(3)]
    outcomes = []
    for job in jobs:
        try:
            outcomes.append(job.result(timeout=120)[3])
        except Exception as exc:  # noqa: BLE001 - the refusal reaches the client as an AppError
            outcomes.append(f"refused: {exc}")
    refused = [o for o in outcomes if o.startswith("refused")]
    assert len(refused) == 1 and "at most 2 at a time per user" in refused[0] and "Try again" in refused[0]
    assert sum(o.startswith("Generated") for o in outcomes) == 2
