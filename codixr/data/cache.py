"""A preprocessed image cache for training: every image is read once through :func:`codixr.io.read_xray`
and stored in one memory-mapped ``.npy`` array, so epochs do not decode DICOMs again.

Folder layout (wherever the caller puts it; keep it out of git)::

    OUT/images.npy      (N, size, size) uint16 (default) or uint8: round(image * 65535) or round(image * 255)
    OUT/index.json      format, size, dtype, fingerprint, and one entry per row: study_id, view, image_id, ok
    OUT/progress.json   only while a build is running or was interrupted (a rerun resumes from it)
    OUT/.lock           held while a process builds or checks the cache: a second process (two training stages
                        started side by side) waits for the first and then reuses what it built

uint16 keeps the [0, 1] images to within 1/131070 (finer than any 12- or 16-bit source needs);
uint8 halves the size at a 1/510 error. The fingerprint is a hash of the format version, size, dtype
and the ordered list of (study, view, path): a rerun with the same inputs returns the existing cache.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from codixr.data.errors import ImageCacheError
from codixr.data.records import Study
from codixr.errors import InputError

logger = logging.getLogger(__name__)

CACHE_VERSION = 1
ARRAY_FILE, INDEX_FILE, PROGRESS_FILE, LOCK_FILE = "images.npy", "index.json", "progress.json", ".lock"
SCALES = {"uint16": 65535, "uint8": 255}


def cache_items(studies: Iterable[Study], views: Iterable[str] = ("frontal", "lateral")) -> list[dict[str, str]]:
    """The images to cache, in row order: one dict (study_id, view, image_id, path) per image."""
    views = tuple(views)
    return [
        {"study_id": s.study_id, "view": view, "image_id": ref.image_id or "", "path": ref.path}
        for s in studies for view in views for ref in s.images_of(view)
    ]


def cache_fingerprint(items: list[dict[str, str]], size: int, dtype: str) -> str:
    """A hash of what the cache holds: format version, size, dtype and the ordered sources."""
    payload = json.dumps([CACHE_VERSION, size, dtype, [(i["study_id"], i["view"], i["path"]) for i in items]])
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def _read_one(job: tuple[str, str, int, str]) -> tuple[np.ndarray | None, str | None]:
    """Read and quantise one image; returns (pixels, None) or (None, error message)."""
    from codixr.io import XRayReadError, read_xray

    path, view, size, dtype = job
    try:
        image = read_xray(path, size=size, view=view if view in ("frontal", "lateral") else None).image
    except XRayReadError as exc:
        return None, f"{type(exc).__name__}: {exc}"
    return np.rint(np.clip(image, 0.0, 1.0) * SCALES[dtype]).astype(dtype), None


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload), encoding="utf-8")
    os.replace(tmp, path)


@contextlib.contextmanager
def _build_lock(out: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``out/.lock`` (POSIX ``flock``; where it does not exist, no lock)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: builds side by side are not guarded
        yield
        return
    out.mkdir(parents=True, exist_ok=True)
    with open(out / LOCK_FILE, "a+b") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            logger.info("Another process is building the image cache in %s; waiting for it.", out)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def build_image_cache(
    studies: Iterable[Study],
    out_dir: str | os.PathLike,
    size: int = 256,
    views: Iterable[str] = ("frontal", "lateral"),
    *,
    dtype: str = "uint16",
    num_workers: int = 0,
    overwrite: bool = False,
    save_every: int = 256,
) -> "ImageCache":
    """Read every image of ``studies`` (the given ``views``) once and store it in ``out_dir``.

    Returns the existing cache untouched when ``out_dir`` already holds a complete one with the same
    fingerprint; resumes an interrupted build; raises ImageCacheError when ``out_dir`` holds a cache of
    other inputs (pass ``overwrite=True`` or another folder). Images that cannot be read are recorded in
    the index (``ok: false``, with the error) and left out of :class:`ImageCache`. ``num_workers > 0``
    reads in that many processes. Nothing about patients is logged.
    """
    # 1. Check inputs
    if dtype not in SCALES:
        raise InputError(f"Unsupported cache dtype {dtype!r}: use {' or '.join(SCALES)}.")
    items = cache_items(studies, views)
    if not items:
        raise InputError("No images to cache: the studies have no image of the requested views.")
    out = Path(out_dir)
    fingerprint = cache_fingerprint(items, size, dtype)
    with _build_lock(out):
        return _build_locked(items, out, fingerprint, size, dtype, num_workers, overwrite, save_every)


def _build_locked(items: list[dict[str, str]], out: Path, fingerprint: str, size: int, dtype: str,
                  num_workers: int, overwrite: bool, save_every: int) -> "ImageCache":
    # 2. Reuse or resume what is there
    start, failures = 0, {}
    index_path, progress_path, array_path = out / INDEX_FILE, out / PROGRESS_FILE, out / ARRAY_FILE
    state = next((json.loads(p.read_text()) for p in (index_path, progress_path) if p.is_file()), None)
    if state is not None and state.get("fingerprint") != fingerprint and not overwrite:
        raise ImageCacheError(
            f"{out} already holds an image cache of other images or another size/dtype. Use a new folder, "
            "delete that one, or pass overwrite=True."
        )
    if state is not None and state.get("fingerprint") == fingerprint and array_path.is_file():
        if index_path.is_file():
            logger.info("Image cache in %s is up to date (%d images); not rebuilding.", out, len(items))
            return ImageCache(out)
        start, failures = state["done"], {int(k): v for k, v in state["failures"].items()}
        logger.info("Resuming the image cache in %s at image %d of %d.", out, start, len(items))
    else:
        out.mkdir(parents=True, exist_ok=True)
        for path in (index_path, progress_path):
            path.unlink(missing_ok=True)
    mode = "r+" if start else "w+"
    array = np.lib.format.open_memmap(array_path, mode=mode, dtype=dtype, shape=(len(items), size, size))

    # 3. Read the images, saving progress as we go
    jobs = [(i["path"], i["view"], size, dtype) for i in items[start:]]
    began = time.monotonic()
    executor = concurrent.futures.ProcessPoolExecutor(num_workers) if num_workers > 0 else None
    results: Iterator = executor.map(_read_one, jobs, chunksize=8) if executor else map(_read_one, jobs)
    try:
        for row, (pixels, error) in enumerate(results, start=start):
            if error is None:
                array[row] = pixels
            else:
                array[row] = 0
                failures[row] = error
            if (row + 1) % save_every == 0:
                array.flush()
                _write_json(progress_path, {"fingerprint": fingerprint, "done": row + 1, "failures": failures})
    finally:
        if executor:
            executor.shutdown(cancel_futures=True)
    array.flush()
    del array

    # 4. Write the index (marks the cache complete)
    entries = [
        {"study_id": i["study_id"], "view": i["view"], "image_id": i["image_id"], "row": row, "ok": row not in failures,
         **({"error": failures[row]} if row in failures else {})}
        for row, i in enumerate(items)
    ]
    _write_json(index_path, {"version": CACHE_VERSION, "fingerprint": fingerprint, "size": size, "dtype": dtype,
                             "scale": SCALES[dtype], "entries": entries})
    progress_path.unlink(missing_ok=True)
    elapsed = time.monotonic() - began
    logger.info("Cached %d images in %s (%.1f s, %.1f images/s); %d could not be read (see index.json).",
                len(jobs), out, elapsed, len(jobs) / max(elapsed, 1e-9), len(failures))
    return ImageCache(out)


class ImageCache:
    """A built image cache, opened memory-mapped.

    ``len(cache)`` counts the images that were read; ``cache[i]`` / ``cache.get(i)`` is a float32
    ``size`` x ``size`` array in [0, 1]; ``cache.entry(i)`` its study_id/view/image_id;
    ``cache.indices(study_id, view)`` finds the images of a study.
    """

    def __init__(self, out_dir: str | os.PathLike) -> None:
        self.path = Path(out_dir)
        index_path = self.path / INDEX_FILE
        if not index_path.is_file():
            raise ImageCacheError(
                f"No complete image cache in {self.path} (index.json missing): build it with "
                "codixr.data.build_image_cache, or finish the interrupted build by running it again."
            )
        index = json.loads(index_path.read_text(encoding="utf-8"))
        if index.get("version") != CACHE_VERSION:
            raise ImageCacheError(f"The image cache in {self.path} has format {index.get('version')}, not {CACHE_VERSION}: rebuild it.")
        self.size: int = index["size"]
        self.dtype: str = index["dtype"]
        self.scale: float = float(index["scale"])
        self.fingerprint: str = index["fingerprint"]
        self.failed: list[dict[str, Any]] = [e for e in index["entries"] if not e["ok"]]
        self.entries: list[dict[str, Any]] = [e for e in index["entries"] if e["ok"]]
        self.array = np.load(self.path / ARRAY_FILE, mmap_mode="r")
        if self.array.shape[1:] != (self.size, self.size) or self.array.shape[0] != len(index["entries"]):
            raise ImageCacheError(f"images.npy in {self.path} does not match its index.json: rebuild the cache.")
        self._lookup: dict[tuple[str, str], list[int]] = collections.defaultdict(list)
        for i, entry in enumerate(self.entries):
            self._lookup[(entry["study_id"], entry["view"])].append(i)

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, i: int) -> np.ndarray:
        return self.get(i)

    def __repr__(self) -> str:
        return f"ImageCache({str(self.path)!r}, images={len(self)}, size={self.size}, dtype={self.dtype})"

    def get(self, i: int) -> np.ndarray:
        """Image ``i`` as a float32 ``size`` x ``size`` array in [0, 1]."""
        return np.asarray(self.array[self.entries[i]["row"]], dtype=np.float32) / np.float32(self.scale)

    def entry(self, i: int) -> dict[str, Any]:
        """study_id, view, image_id and row of image ``i``."""
        return self.entries[i]

    def indices(self, study_id: str, view: str | None = None) -> list[int]:
        """Positions (for :meth:`get`) of a study's images, of one view or of every cached view."""
        if view is not None:
            return list(self._lookup.get((study_id, view), []))
        return [i for (sid, _), rows in self._lookup.items() if sid == study_id for i in rows]
