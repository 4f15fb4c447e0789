"""A blinded reader study: real and synthetic X-rays one at a time, in random order, rated for realism (1-10)
and guessed real or synthetic; answers in SQLite; a summary (accuracy, mean realism per class) and CSV export.

What is stored, per answer: a random session id, the reader code only when the operator turned reader codes on,
the item's position, whether it was real or synthetic, the reader's guess and rating, the view, the seconds
spent, the time, the model package name, and an item reference: for a real image the first 16 hex digits of
the SHA-256 of its file (never its name or path), for a synthetic one its seed and condition label.
Nothing about the patients in the operator's folder is stored or logged.

Blinding. Nothing the browser or an API caller can see tells a real image from a synthetic one:

* both classes go through the same pipeline: decoded by :func:`codixr.io.read_xray` (a synthetic image is
  encoded as PNG and read back like a real file) to the model's image size, as 8-bit grey, then, each time it
  is shown, the same mild dither (a random -1/0/+1 grey level per pixel, invisible) and the same PNG settings
  (stored, not compressed: the file size depends only on the image size, never on its content);
* each image is served under a fresh random file name, and the dither makes its bytes, and so the URL gradio
  derives from them, new every time: a real image shown in two sessions never comes back at the same address;
* all synthetic images of a session are generated before the first one is shown, so that the time an image
  takes to appear does not give it away;
* the summary and the CSV export (which hold the true class of every answer) are for the operator only:
  they need the secret the operator set at launch (``--operator-secret`` / ``CODIXR_OPERATOR_SECRET``),
  compared on the server with :func:`hmac.compare_digest`; with no secret set they are turned off.

A reader who sees the same real image twice, in two sessions, can still recognise it: give the study a folder
with many more real images than a session shows.

The CSV export cannot run in a spreadsheet: a cell that starts with ``=``, ``+``, ``-``, ``@``, a tab or a
carriage return gets a leading ``'`` (OWASP, CSV injection).
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import logging
import random
import secrets
import sqlite3
import time
import uuid
from contextlib import closing
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image

from codixr.errors import InputError
from codixr.io import XRayReadError, read_xray
from codixr.modality import CONDITION_LABELS

logger = logging.getLogger(__name__)

CLASSES = ("real", "synthetic")
IMAGE_SUFFIXES = (".dcm", ".dicom", ".png", ".jpg", ".jpeg")
MAX_SCAN = 10_000  # files looked at in the operator's folder
MAX_READER_CODE = 64  # characters
OPERATOR_SECRET_ENV = "CODIXR_OPERATOR_SECRET"
#: PNG settings of every image shown: stored (zlib level 0), no metadata, so its size is a function of its shape.
PRESENTATION_PNG = {"format": "PNG", "compress_level": 0}
#: Cell starts that a spreadsheet reads as a formula (OWASP CSV injection).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS answers (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id TEXT NOT NULL,
    reader TEXT,
    item_index INTEGER NOT NULL,
    truth TEXT NOT NULL CHECK (truth IN ('real', 'synthetic')),
    guess TEXT NOT NULL CHECK (guess IN ('real', 'synthetic')),
    realism INTEGER NOT NULL CHECK (realism BETWEEN 1 AND 10),
    view TEXT NOT NULL,
    item_ref TEXT NOT NULL,
    model TEXT NOT NULL,
    seconds REAL,
    answered_at TEXT NOT NULL
)
"""
COLUMNS = ("id", "session_id", "reader", "item_index", "truth", "guess", "realism", "view", "item_ref", "model",
           "seconds", "answered_at")


class ReaderStudyError(InputError):
    """The reader study cannot start or take an answer (no folder configured, no readable image, bad answer)."""


class OperatorOnlyError(ReaderStudyError):
    """The summary or export was asked for without the operator secret (or with none set at launch)."""


def check_operator(given: str | None, secret: str | None) -> None:
    """Let the call through only with the operator secret; raises `OperatorOnlyError` otherwise.

    With no secret set at launch the summary and export are off, whatever is given.
    """
    if not secret:
        raise OperatorOnlyError(f"The reader-study summary and export are turned off: the operator turns them on by "
                                f"starting the app with --operator-secret SECRET (or {OPERATOR_SECRET_ENV}), then "
                                f"types the secret here.")
    if not given or not hmac.compare_digest(given.encode("utf-8"), secret.encode("utf-8")):
        logger.warning("reader-study summary or export refused: no or wrong operator secret")
        raise OperatorOnlyError("The summary and export are for the study's operator: type the operator secret "
                                "set at launch.")


def csv_safe(value: Any) -> Any:
    """A CSV cell that a spreadsheet shows as text: a string starting like a formula gets a leading ``'``."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def clean_reader_code(code: str | None) -> str | None:
    """The reader code as stored: stripped, None when empty; refused when too long or with control characters."""
    code = (code or "").strip()
    if not code:
        return None
    if len(code) > MAX_READER_CODE or any(not ch.isprintable() for ch in code):
        raise ReaderStudyError(f"A reader code is a short pseudonym such as R1: at most {MAX_READER_CODE} printable "
                               "characters.")
    return code


@dataclass(frozen=True)
class ReaderAnswer:
    """One reader's answer on one item."""

    session_id: str
    item_index: int
    truth: str
    guess: str
    realism: int
    view: str
    item_ref: str
    model: str
    seconds: float | None = None
    reader: str | None = None

    def __post_init__(self) -> None:
        if self.truth not in CLASSES or self.guess not in CLASSES:
            raise ReaderStudyError("Choose whether the image is real or synthetic before going on.")
        if isinstance(self.realism, bool) or not isinstance(self.realism, int) or not 1 <= self.realism <= 10:
            raise ReaderStudyError(f"Realism is rated from 1 to 10, not {self.realism!r}.")


@dataclass(frozen=True)
class ReaderStudySummary:
    """Accuracy of the real/synthetic guesses and mean realism per class."""

    n_answers: int
    n_sessions: int
    accuracy: float | None
    per_class: dict[str, dict[str, float | int | None]]

    def rows(self) -> list[list[Any]]:
        """Per-class rows: class, answers, guessed right (fraction), mean realism, sd realism."""
        return [[c, s["n"], _round(s["accuracy"]), _round(s["mean_realism"]), _round(s["sd_realism"])]
                for c, s in self.per_class.items()]

    def markdown(self) -> str:
        if not self.n_answers:
            return "No answers recorded yet."
        return (f"**{self.n_answers} answers** from {self.n_sessions} session(s). Real/synthetic guessed right: "
                f"**{self.accuracy:.1%}** (50% is chance). Mean realism: real "
                f"{_fmt(self.per_class['real']['mean_realism'])}, synthetic "
                f"{_fmt(self.per_class['synthetic']['mean_realism'])} (1-10).")


def _round(value: float | None) -> float | None:
    return None if value is None else round(float(value), 3)


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


class ReaderStudyStore:
    """The SQLite file the answers go to (created with its folder on first write)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(self.path, timeout=30)
        connection.execute(_SCHEMA)
        return connection

    def record(self, answer: ReaderAnswer) -> None:
        """Store one answer."""
        with closing(self._connect()) as db, db:
            db.execute(
                "INSERT INTO answers (session_id, reader, item_index, truth, guess, realism, view, item_ref, model, "
                "seconds, answered_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (answer.session_id, answer.reader, answer.item_index, answer.truth, answer.guess, answer.realism,
                 answer.view, answer.item_ref, answer.model, answer.seconds,
                 datetime.now(timezone.utc).isoformat(timespec="seconds")))

    def answers(self) -> list[dict[str, Any]]:
        """Every stored answer, oldest first."""
        if not self.path.exists():
            return []
        with closing(self._connect()) as db:
            db.row_factory = sqlite3.Row
            return [dict(row) for row in db.execute(f"SELECT {', '.join(COLUMNS)} FROM answers ORDER BY id")]

    def summary(self) -> ReaderStudySummary:
        """Accuracy overall and per class, and mean (and sd) realism per class."""
        answers = self.answers()
        per_class: dict[str, dict[str, float | int | None]] = {}
        for c in CLASSES:
            rows = [a for a in answers if a["truth"] == c]
            scores = np.array([a["realism"] for a in rows], dtype=float)
            per_class[c] = {
                "n": len(rows),
                "accuracy": float(np.mean([a["guess"] == c for a in rows])) if rows else None,
                "mean_realism": float(scores.mean()) if rows else None,
                "sd_realism": float(scores.std(ddof=1)) if len(rows) > 1 else None,
            }
        accuracy = float(np.mean([a["guess"] == a["truth"] for a in answers])) if answers else None
        return ReaderStudySummary(len(answers), len({a["session_id"] for a in answers}), accuracy, per_class)

    def export_csv(self, path: str | Path) -> Path:
        """Write every answer to ``path`` as CSV (one row per answer, the columns of the table)."""
        path = Path(path)
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows({k: csv_safe(v) for k, v in row.items()} for row in self.answers())
        return path


# --------------------------------------------------------------------------------------------- sessions
@dataclass
class ReaderItem:
    """One image to rate; ``truth`` is never shown to the reader."""

    truth: str
    view: str
    ref: str
    image: np.ndarray  # uint8, the model's image size


@dataclass
class ReaderSession:
    """A reader's pass through a shuffled list of items."""

    session_id: str
    items: list[ReaderItem]
    model: str
    position: int = 0
    shown_at: float = field(default_factory=time.monotonic)
    skipped: int = 0
    folder: Path | None = None  # where the images shown are written (a private temp folder)
    shown_file: Path | None = None  # the PNG of the image on screen (deleted when the next one is shown)

    @property
    def done(self) -> bool:
        return self.position >= len(self.items)

    @property
    def current(self) -> ReaderItem | None:
        return None if self.done else self.items[self.position]

    def answer(self, store: ReaderStudyStore, realism: int, guess: str, reader: str | None = None) -> ReaderAnswer:
        """Record the answer on the current item and move to the next one."""
        item = self.current
        if item is None:
            raise ReaderStudyError("This session is finished: start a new one to read more images.")
        realism = int(realism) if isinstance(realism, (int, float)) and float(realism).is_integer() else realism
        answer = ReaderAnswer(self.session_id, self.position, item.truth, guess, realism, item.view, item.ref,
                              self.model, round(time.monotonic() - self.shown_at, 2), clean_reader_code(reader))
        store.record(answer)
        self.position += 1
        self.shown_at = time.monotonic()
        return answer

    def present(self, folder: str | Path | None = None) -> Path | None:
        """Write the current item as the PNG to show (see :func:`presentation_png`) into ``folder`` (default: the
        session's); None once the session is done. The previous item's file is deleted (gradio has its own copy).
        """
        if self.shown_file is not None:
            self.shown_file.unlink(missing_ok=True)
            self.shown_file = None
        item = self.current
        if item is None:
            return None
        folder = folder or self.folder
        if folder is None:
            raise ValueError("ReaderSession.present needs a folder to write the image into.")
        self.shown_file = presentation_png(item.image, folder)
        return self.shown_file


def presentation_png(image: np.ndarray, folder: str | Path, rng: np.random.Generator | None = None) -> Path:
    """``image`` (uint8) as the PNG a reader is shown, the same way for both classes: a fresh -1/0/+1 grey-level
    dither, stored PNG (`PRESENTATION_PNG`), a random file name. Its size in bytes depends only on its shape."""
    rng = rng or np.random.default_rng(secrets.randbits(128))
    dithered = np.clip(image.astype(np.int16) + rng.integers(-1, 2, size=image.shape), 0, 255).astype(np.uint8)
    path = Path(folder) / f"{secrets.token_hex(16)}.png"
    Image.fromarray(dithered, mode="L").save(path, **PRESENTATION_PNG)
    return path


def find_real_images(folder: str | Path) -> list[Path]:
    """X-ray files (DICOM/PNG/JPEG by extension) under ``folder``, sorted; raises when there is no such folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ReaderStudyError("The folder of real images set by the operator does not exist or is not a folder; "
                               "check CODIXR_READER_REAL_DIR / --reader-real-dir.")
    found = []
    for path in sorted(folder.rglob("*")):
        if path.is_file() and (path.suffix.lower() in IMAGE_SUFFIXES or path.suffix == ""):
            found.append(path)
            if len(found) >= MAX_SCAN:
                break
    return found


def start_session(real_dir: str | Path | None, pipe, *, n_images: int, model: str, steps: int = 20,
                  rng: random.Random | None = None,
                  progress: Callable[[int, int], None] | None = None) -> ReaderSession:
    """Pick up to ``n_images`` readable real images at random, generate as many synthetic ones, and shuffle.

    Synthetic images are conditioned on one label drawn from the condition labels, in the views of the real
    images drawn (frontal where a real image's view is unknown), each from a fresh random seed. Both classes are
    decoded by ``read_xray`` to the model's image size (see the module docstring).
    """
    if real_dir is None:
        raise ReaderStudyError("The operator has not set a folder of real images for the reader study: start the app "
                               "with --reader-real-dir FOLDER (or set CODIXR_READER_REAL_DIR).")
    rng = rng or random.Random(secrets.randbits(64))
    candidates = find_real_images(real_dir)
    rng.shuffle(candidates)
    size = pipe.image_size
    real: list[ReaderItem] = []
    unreadable = 0
    for path in candidates:
        if len(real) >= n_images:
            break
        try:
            data = path.read_bytes()
            xray = read_xray(data, size=size)
        except (XRayReadError, OSError):
            unreadable += 1
            continue
        view = xray.view if xray.view in ("frontal", "lateral") else "frontal"
        real.append(ReaderItem("real", view, hashlib.sha256(data).hexdigest()[:16], _to_uint8(xray.image)))
    if not real:
        raise ReaderStudyError(f"No readable X-ray (DICOM, PNG or JPEG) was found in the operator's folder of real "
                               f"images ({len(candidates)} file(s) looked at).")
    synthetic: list[ReaderItem] = []
    total = len(real)
    for i, source in enumerate(real):
        label, seed = rng.choice(CONDITION_LABELS), rng.randrange(2**31)
        out = pipe(labels=[label], outputs=(source.view,), num_inference_steps=steps, seed=seed)
        synthetic.append(ReaderItem("synthetic", source.view, f"seed={seed};label={label}",
                                    _decoded_like_a_real_file(getattr(out, source.view), size)))
        if progress is not None:
            progress(i + 1, total)
    items = real + synthetic
    rng.shuffle(items)
    logger.info("reader session started: %d items (%d unreadable files skipped)", len(items), unreadable)
    return ReaderSession(uuid.uuid4().hex, items, model, skipped=unreadable)


def _decoded_like_a_real_file(image: Image.Image, size: int) -> np.ndarray:
    """A generated image through the real images' path: 8-bit PNG bytes, then ``read_xray`` at ``size``."""
    buffer = io.BytesIO()
    image.convert("L").save(buffer, format="PNG")
    return _to_uint8(read_xray(buffer.getvalue(), size=size).image)


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)
