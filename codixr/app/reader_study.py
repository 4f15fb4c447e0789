"""A blinded reader study: real and synthetic X-rays one at a time, in random order, rated for realism (1-10)
and guessed real or synthetic; answers in SQLite; a summary (accuracy, mean realism per class) and CSV export.

What is stored, per answer: a random session id, the reader code only when the operator turned reader codes on,
the item's position, whether it was real or synthetic, the reader's guess and rating, the view, the seconds
spent, the time, the model package name, and an item reference: for a real image the first 16 hex digits of
the SHA-256 of its file (never its name or path), for a synthetic one its seed and condition label.
Nothing about the patients in the operator's folder is stored or logged.

Real and synthetic images are shown the same way: preprocessed as in the paper to the model's image size, as
8-bit grayscale. All synthetic images of a session are generated before the first one is shown, so that the
time an image takes to appear does not give it away.
"""

from __future__ import annotations

import csv
import hashlib
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

from codixr.errors import InputError
from codixr.io import XRayReadError, read_xray
from codixr.modality import CONDITION_LABELS

logger = logging.getLogger(__name__)

CLASSES = ("real", "synthetic")
IMAGE_SUFFIXES = (".dcm", ".dicom", ".png", ".jpg", ".jpeg")
MAX_SCAN = 10_000  # files looked at in the operator's folder

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
            writer.writerows(self.answers())
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
                              self.model, round(time.monotonic() - self.shown_at, 2), (reader or "").strip() or None)
        store.record(answer)
        self.position += 1
        self.shown_at = time.monotonic()
        return answer


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
    images drawn (frontal where a real image's view is unknown), each from a fresh random seed.
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
                                    np.asarray(getattr(out, source.view).convert("L"))))
        if progress is not None:
            progress(i + 1, total)
    items = real + synthetic
    rng.shuffle(items)
    logger.info("reader session started: %d items (%d unreadable files skipped)", len(items), unreadable)
    return ReaderSession(uuid.uuid4().hex, items, model, skipped=unreadable)


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)
