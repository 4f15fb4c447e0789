"""The app's settings: command-line arguments over environment variables over defaults.

| setting           | argument              | environment variable          | default                               |
|-------------------|-----------------------|-------------------------------|---------------------------------------|
| model package     | ``--model``           | ``CODIXR_MODEL``              | bundled ``assets/codixr-default``     |
| host              | ``--host``            | ``GRADIO_SERVER_NAME``        | ``127.0.0.1``                         |
| port              | ``--port``            | ``GRADIO_SERVER_PORT``        | ``7860``                              |
| device            | ``--device``          | ``CODIXR_DEVICE``             | ``cuda`` when available, else ``cpu`` |
| generations at once | ``--concurrency``   | ``CODIXR_APP_CONCURRENCY``    | ``1`` (batches run one at a time)     |
| requests per batch | ``--max-batch``      | ``CODIXR_APP_MAX_BATCH``      | ``8``                                 |
| batching window   | ``--batch-window-ms`` | ``CODIXR_APP_BATCH_WINDOW_MS`` | ``200`` (ms; waited only while others use the app) |
| waiting requests  | ``--queue-size``      | ``CODIXR_APP_QUEUE_SIZE``     | ``16`` (generations waiting or running) |
| requests per user | ``--session-cap``     | ``CODIXR_APP_SESSION_CAP``    | ``2`` (one session's generations waiting or running) |
| reader study: real images | ``--reader-real-dir`` | ``CODIXR_READER_REAL_DIR`` | none (the tab says how to set it) |
| reader study: database | ``--reader-db``      | ``CODIXR_READER_DB``          | see ``default_reader_db``   |
| reader study: reader codes | ``--reader-codes`` | ``CODIXR_READER_CODES=1`` | off (no reader field at all)          |
| reader study: images per class | ``--reader-images`` | ``CODIXR_READER_IMAGES`` | ``10``                        |
| reader study: operator secret | ``--operator-secret`` | ``CODIXR_OPERATOR_SECRET`` | none: summary and export off |
| one-click examples | ``--examples-dir``   | ``CODIXR_EXAMPLES``           | ``assets/examples``                   |
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

from codixr.errors import InputError

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_EXAMPLES_DIR = REPO_ROOT / "assets" / "examples"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860
MIN_OPERATOR_SECRET = 12


def default_reader_db(environ: Mapping[str, str] | None = None) -> Path:
    """``$XDG_DATA_HOME/codixr/reader-study.sqlite`` (``~/.local/share`` when XDG_DATA_HOME is unset)."""
    environ = os.environ if environ is None else environ
    base = Path(environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return base / "codixr" / "reader-study.sqlite"


@dataclass(frozen=True)
class AppConfig:
    """Everything the app needs to know at start-up (see the module docstring for where each comes from)."""

    model: str | None = None
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    device: str | None = None
    concurrency: int = 1
    queue_size: int = 16
    max_batch: int = 8
    batch_window_ms: int = 200
    session_cap: int = 2
    max_file_size_mb: int = 200
    reader_real_dir: Path | None = None
    reader_db: Path | None = None
    reader_codes: bool = False
    reader_images: int = 10
    reader_steps: int = 20
    operator_secret: str | None = field(default=None, repr=False)  # the reader study's summary and export
    examples_dir: Path = DEFAULT_EXAMPLES_DIR

    def __post_init__(self) -> None:
        if self.operator_secret is not None and len(self.operator_secret) < MIN_OPERATOR_SECRET:
            raise InputError(f"The operator secret must be at least {MIN_OPERATOR_SECRET} characters long (e.g. "
                             "`python -c \"import secrets; print(secrets.token_urlsafe(24))\"`).")
        if not 1 <= self.port <= 65535:
            raise InputError(f"The port must be between 1 and 65535, not {self.port}.")
        if self.concurrency < 1 or self.queue_size < 1 or self.reader_images < 1 or self.reader_steps < 1:
            raise InputError("concurrency, queue size, reader images and reader steps must each be at least 1.")
        if self.max_batch < 1 or self.session_cap < 1 or not 0 <= self.batch_window_ms <= 10_000:
            raise InputError("max batch and session cap must each be at least 1, and the batching window between 0 "
                             f"and 10000 ms (not {self.batch_window_ms}).")

    @property
    def reader_db_path(self) -> Path:
        return Path(self.reader_db) if self.reader_db else default_reader_db()

    @classmethod
    def from_args(cls, argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> "AppConfig":
        """Read the settings from command-line arguments (``argv``) and environment variables (``environ``)."""
        env = os.environ if environ is None else environ
        parser = argparse.ArgumentParser(description="CoDiXR Studio: any-to-any chest X-ray app.")
        parser.add_argument("--model", default=env.get("CODIXR_MODEL") or None,
                            help="model package folder or hub id (default: $CODIXR_MODEL or the bundled default)")
        parser.add_argument("--host", default=env.get("GRADIO_SERVER_NAME") or DEFAULT_HOST)
        parser.add_argument("--port", type=int, default=_int(env, "GRADIO_SERVER_PORT", DEFAULT_PORT))
        parser.add_argument("--device", default=env.get("CODIXR_DEVICE") or None, help="cpu, cuda, cuda:1, ...")
        parser.add_argument("--concurrency", type=int, default=_int(env, "CODIXR_APP_CONCURRENCY", 1),
                            help="generations that may run at once (others wait in the queue)")
        parser.add_argument("--queue-size", type=int, default=_int(env, "CODIXR_APP_QUEUE_SIZE", 16),
                            help="generations that may wait or run at once; more are refused with when to retry")
        parser.add_argument("--max-batch", type=int, default=_int(env, "CODIXR_APP_MAX_BATCH", 8),
                            help="requests of the same kind that go through the model together")
        parser.add_argument("--batch-window-ms", type=int, default=_int(env, "CODIXR_APP_BATCH_WINDOW_MS", 200),
                            help="how long the first request of a batch waits for other users' requests to join it")
        parser.add_argument("--session-cap", type=int, default=_int(env, "CODIXR_APP_SESSION_CAP", 2),
                            help="generations one session (browser tab or API client) may have waiting or running")
        parser.add_argument("--reader-real-dir", type=Path, default=_path(env, "CODIXR_READER_REAL_DIR"),
                            help="folder of real X-rays (DICOM/PNG/JPEG) for the blinded reader study")
        parser.add_argument("--reader-db", type=Path, default=_path(env, "CODIXR_READER_DB"),
                            help="SQLite file the reader study writes its answers to")
        parser.add_argument("--reader-codes", action="store_true",
                            default=env.get("CODIXR_READER_CODES", "") in ("1", "true", "True", "yes"),
                            help="ask readers for a pseudonymous reader code and store it with their answers")
        parser.add_argument("--reader-images", type=int, default=_int(env, "CODIXR_READER_IMAGES", 10),
                            help="real images per reading session (and as many synthetic ones)")
        parser.add_argument("--operator-secret", default=env.get("CODIXR_OPERATOR_SECRET") or None,
                            help="secret that unlocks the reader study's summary and CSV export (prefer the "
                                 "environment variable: an argument is visible to other users of the machine)")
        parser.add_argument("--examples-dir", type=Path,
                            default=_path(env, "CODIXR_EXAMPLES") or DEFAULT_EXAMPLES_DIR)
        args = parser.parse_args(argv)
        return cls(model=args.model, host=args.host, port=args.port, device=args.device,
                   concurrency=args.concurrency, queue_size=args.queue_size, max_batch=args.max_batch,
                   batch_window_ms=args.batch_window_ms, session_cap=args.session_cap,
                   reader_real_dir=args.reader_real_dir, reader_db=args.reader_db, reader_codes=args.reader_codes,
                   reader_images=args.reader_images, examples_dir=args.examples_dir,
                   operator_secret=args.operator_secret or None)


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    value = env.get(name)
    if not value:
        return default
    try:
        return int(value)
    except ValueError:
        raise InputError(f"{name} must be a whole number, not {value!r}.") from None


def _path(env: Mapping[str, str], name: str) -> Path | None:
    value = env.get(name)
    return Path(value).expanduser() if value else None
