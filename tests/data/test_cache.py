"""The training image cache: build, open, look up, skip when up to date, resume after an interruption."""

from __future__ import annotations

import json

import numpy as np
import pytest

from codixr.data import ImageCache, ImageCacheError, ImageRef, Study, build_image_cache
from codixr.data import cache as cache_module
from codixr.io import read_xray
from tests.data.fixtures import write_dicom, write_png

SIZE = 32


@pytest.fixture
def studies(tmp_path):
    """Three studies: two with frontal+lateral PNGs (and a DICOM), one with a corrupt lateral file."""
    rng = np.random.default_rng(0)
    out = []
    for i in range(3):
        study = Study(study_id=f"s{i}", patient_id=f"p{i}", source="test")
        frontal, lateral = tmp_path / "img" / f"{i}_f.png", tmp_path / "img" / f"{i}_l.dcm"
        write_png(frontal, np.full((SIZE, SIZE), 51 * (i + 1)))  # uniform: expected value 51*(i+1)/255
        if i == 2:
            lateral.write_bytes(b"DICM but not really a DICOM file")
        else:
            write_dicom(lateral, "LL", rng.integers(0, 256, (SIZE, SIZE)))
        study.add_image(ImageRef(path=str(frontal), view="frontal"))
        study.add_image(ImageRef(path=str(lateral), view="lateral"))
        out.append(study)
    return out


def test_round_trip(studies, tmp_path):
    cache = build_image_cache(studies, tmp_path / "cache", size=SIZE)
    assert len(cache) == 5 and len(cache.failed) == 1 and "Error" in cache.failed[0]["error"]
    for i, study in enumerate(studies):
        (f,) = cache.indices(study.study_id, "frontal")
        image = cache.get(f)
        assert image.dtype == np.float32 and image.shape == (SIZE, SIZE)
        np.testing.assert_allclose(image, 51 * (i + 1) / 255, atol=1 / 65535)
    (l0,) = cache.indices("s0", "lateral")
    np.testing.assert_allclose(cache[l0], read_xray(studies[0].lateral[0].path, size=SIZE).image, atol=0.5 / 65535 + 1e-7)
    assert cache.indices("s2", "lateral") == [] and sorted(cache.indices("s1")) == sorted(cache.indices("s1", "frontal") + cache.indices("s1", "lateral"))
    assert cache.entry(l0)["study_id"] == "s0"
    reopened = ImageCache(tmp_path / "cache")
    assert len(reopened) == 5 and np.array_equal(reopened.get(l0), cache.get(l0))


def test_uint8_and_views(studies, tmp_path):
    cache = build_image_cache(studies, tmp_path / "c8", size=SIZE, views=("frontal",), dtype="uint8")
    assert len(cache) == 3 and cache.array.dtype == np.uint8
    np.testing.assert_allclose(cache.get(0), 51 / 255, atol=0.5 / 255)


def test_rerun_skips_and_mismatch_is_refused(studies, tmp_path, monkeypatch):
    out = tmp_path / "cache"
    first = build_image_cache(studies, out, size=SIZE)
    monkeypatch.setattr(cache_module, "_read_one", lambda job: pytest.fail("an up-to-date cache was rebuilt"))
    again = build_image_cache(studies, out, size=SIZE)
    assert again.fingerprint == first.fingerprint and len(again) == len(first)
    monkeypatch.undo()
    with pytest.raises(ImageCacheError, match="overwrite=True"):
        build_image_cache(studies, out, size=SIZE * 2)
    assert build_image_cache(studies, out, size=SIZE * 2, overwrite=True).size == SIZE * 2


def test_interrupted_build_resumes(studies, tmp_path, monkeypatch):
    out = tmp_path / "cache"
    real, calls = cache_module._read_one, []

    def interrupted(job):
        if len(calls) == 4:
            raise KeyboardInterrupt
        calls.append(job)
        return real(job)

    monkeypatch.setattr(cache_module, "_read_one", interrupted)
    with pytest.raises(KeyboardInterrupt):
        build_image_cache(studies, out, size=SIZE, save_every=2)
    assert not (out / "index.json").exists()
    assert json.loads((out / "progress.json").read_text())["done"] == 4
    with pytest.raises(ImageCacheError, match="interrupted"):
        ImageCache(out)
    monkeypatch.setattr(cache_module, "_read_one", lambda job: (calls.append(job), real(job))[1])
    resumed = build_image_cache(studies, out, size=SIZE, save_every=2)
    assert len(calls) == 6  # 4 before the interruption + the 2 remaining, none read twice
    fresh = build_image_cache(studies, tmp_path / "fresh", size=SIZE)
    assert np.array_equal(np.asarray(resumed.array), np.asarray(fresh.array))
    assert not (out / "progress.json").exists()


def test_parallel_build_matches(studies, tmp_path):
    serial = build_image_cache(studies, tmp_path / "a", size=SIZE)
    parallel = build_image_cache(studies, tmp_path / "b", size=SIZE, num_workers=2)
    assert np.array_equal(np.asarray(serial.array), np.asarray(parallel.array))


def test_missing_cache_is_a_clear_error(tmp_path):
    with pytest.raises(ImageCacheError, match="build_image_cache"):
        ImageCache(tmp_path)


def test_builds_side_by_side_read_each_image_once(studies, tmp_path, monkeypatch):
    """Two stages started together (one process per core) used to race on progress.json; now the second waits."""
    import threading
    import time

    reads, real_read = [], cache_module._read_one

    def slow_read(job):
        reads.append(job[0])
        time.sleep(0.02)
        return real_read(job)

    monkeypatch.setattr(cache_module, "_read_one", slow_read)
    out, results, errors = tmp_path / "shared-cache", [], []

    def build():
        try:
            results.append(build_image_cache(studies, out, size=SIZE, save_every=2))
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=build) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 2
    assert len(reads) == len(set(reads)) == 6  # 3 frontals + 3 laterals, each read by one builder only
    assert results[0].fingerprint == results[1].fingerprint and len(results[1]) == 5
