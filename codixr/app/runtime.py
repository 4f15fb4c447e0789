"""What the app holds for its whole life: the model (loaded once, lazily), a private temp folder, the self-test."""

from __future__ import annotations

import logging
import os
import shutil
import stat
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from codixr.app.batching import Batcher
from codixr.errors import ModelPackageError

logger = logging.getLogger(__name__)

# Modules defining the pipeline's own component classes (named in a package's model_index.json).


class ModelService:
    """The CoDiXR pipeline behind one function: loaded on first use, once, then shared by every request.

    A failed load is not cached: installing the package and clicking again loads it without a restart.
    Generations go through one :class:`~codixr.app.batching.Batcher`: requests that arrive together (within
    ``batch_window_s``) and ask for the same kind of generation run as one batch of at most ``max_batch``;
    at most ``queue_size`` wait or run, at most ``session_cap`` of them from one session.
    """

    def __init__(self, model: str | None = None, device: str | None = None, *, max_batch: int = 8,
                 batch_window_s: float = 0.2, queue_size: int = 16, session_cap: int = 2, workers: int = 1) -> None:
        self._model = model
        self._device = device
        self._pipe = None
        self._lock = threading.Lock()
        self.batcher = Batcher(self._run_group, max_batch=max_batch, window_s=batch_window_s,
                               queue_size=queue_size, session_cap=session_cap, workers=workers)

    @classmethod
    def from_config(cls, config) -> "ModelService":
        """The service an ``AppConfig`` describes (model, device, batching and queue limits)."""
        return cls(config.model, config.device, max_batch=config.max_batch,
                   batch_window_s=config.batch_window_ms / 1000, queue_size=config.queue_size,
                   session_cap=config.session_cap, workers=config.concurrency)

    def run_batched(self, key, job, *, session: str | None = None,
                    progress: Callable[[int, int], None] | None = None, poll_s: float = 0.2):
        """Queue ``job`` (a ``GenerationJob``) under ``key``, wait for its result, relay its denoising progress.

        Raises ``QueueFullError`` at once when the queue or the session's share of it is full. ``progress`` is
        called from the calling thread (the UI's progress bar must be updated from the request's own thread).
        """
        ticket = self.batcher.submit(key, job, session)
        while True:
            try:
                ticket.result(timeout=poll_s)
                done = True
            except TimeoutError:
                done = False
            except Exception:  # the job's own error: raised below, once its progress has been shown
                done = True
            while progress is not None and not ticket.updates.empty():
                progress(*ticket.updates.get())
            if done:
                return ticket.result()

    def _run_group(self, key, jobs, progress):
        from codixr.app.generation import run_group  # the generation module knows what a job is

        return run_group(self.pipeline(), key, jobs, progress)

    @property
    def model_path(self) -> str:
        """The package the pipeline loads: the given one, ``$CODIXR_MODEL``, else the bundled default."""
        from codixr.pipeline import resolve_model_path

        return resolve_model_path(self._model)

    @property
    def model_name(self) -> str:
        return Path(self.model_path).name or self.model_path

    @property
    def device(self) -> str:
        if self._device:
            return self._device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"

    @property
    def loaded(self) -> bool:
        return self._pipe is not None

    def pipeline(self):
        """The loaded ``CoDiXRPipeline``; raises ``ModelPackageError`` (with what to do) when it cannot load."""
        if self._pipe is not None:
            return self._pipe
        with self._lock:
            if self._pipe is None:
                self._pipe = self._load()
        return self._pipe

    def _load(self):
        from codixr.pipeline import DEFAULT_MODEL_PATH, CoDiXRPipeline

        path = self.model_path
        if Path(path) == DEFAULT_MODEL_PATH and not DEFAULT_MODEL_PATH.exists():
            raise ModelPackageError(
                f"The bundled default model ({DEFAULT_MODEL_PATH.relative_to(DEFAULT_MODEL_PATH.parents[1])}) is not "
                "there yet: it has not been trained and packaged. Start the app with --model PATH (or set "
                "CODIXR_MODEL) to a CoDiXR model package folder.")
        started = time.perf_counter()
        pipe = CoDiXRPipeline.from_pretrained(self._model)
        pipe = pipe.to(self.device)
        pipe.set_progress_bar_config(disable=True)  # the app shows its own progress bar
        if hasattr(pipe.vae, "enable_slicing"):  # a batch decodes image by image: the same pixels as alone, less memory
            pipe.vae.enable_slicing()
        logger.info("model package %s loaded on %s in %.1f s", self.model_name, self.device,
                    time.perf_counter() - started)
        return pipe


@dataclass(frozen=True)
class SelfTest:
    """What the start-up self-test found, for the status line."""

    model_ok: bool
    model: str
    classifier: str
    zero_shot: str
    keypatches: str
    device: str

    def markdown(self) -> str:
        """One status line (Markdown) for the top of the app."""
        model = self.model if self.model_ok else f"**{self.model}**"
        return (f"**Model:** {model} &nbsp;·&nbsp; **Classifier:** {self.classifier} &nbsp;·&nbsp; "
                f"**Zero-shot findings:** {self.zero_shot} &nbsp;·&nbsp; **Keypatch overlays:** {self.keypatches}"
                f" &nbsp;·&nbsp; **Device:** {self.device}")


def self_test(service: ModelService) -> SelfTest:
    """Load the model and check the optional parts, saying plainly what is missing instead of failing later."""
    try:
        pipe = service.pipeline()
        joint = "joint generation" if pipe.has_joint_generation else "no joint generation (outputs made one by one)"
        model_ok, model = True, f"`{service.model_name}` loaded ({pipe.image_size} px images, {joint})"
    except ModelPackageError as exc:
        model_ok, model = False, f"not loaded. {exc} Generation is off until a model package is available."
    from codixr.findings.classifier import ClassifierUnavailable, load_classifier

    try:
        classifier = f"{load_classifier('auto', service.device).source} installed"
    except ClassifierUnavailable:
        classifier = ("no classifier weights installed (torchxrayvision densenet121-res224-all or the one trained "
                      "here): image findings come from the model's zero-shot reading only, where available")
    zero_shot = keypatches = "available" if model_ok else "needs the model package"
    return SelfTest(model_ok, model, classifier, zero_shot, keypatches, service.device)


class TempStore:
    """A private (mode 0700) temp folder for this app process: uploads, unpacked studies, downloads.

    Made as ``<base>/codixr-app-<pid>-<random>`` with an ``owner`` file (PID and process start time), after the
    folders that earlier runs left behind in ``base`` are removed (:meth:`sweep`): a ``kill -9`` or a crash
    runs no exit handler, so the next start cleans up. Work folders older than ``max_age_s`` are removed
    whenever a new one is made; ``cleanup()`` (registered at exit by the launcher) removes everything.
    """

    PREFIX = "codixr-app-"
    OWNER_FILE = "owner"
    #: Folders of versions that did not name them by PID are removed once untouched for this long.
    LEGACY_MAX_AGE_S = 24 * 3600.0

    def __init__(self, root: str | os.PathLike | None = None, max_age_s: float = 3600.0,
                 base: str | os.PathLike | None = None) -> None:
        if root:
            self.root = Path(root)
            self.root.mkdir(parents=True, exist_ok=True)
        else:
            base = Path(base or tempfile.gettempdir())
            self.sweep(base)
            self.root = Path(tempfile.mkdtemp(prefix=f"{self.PREFIX}{os.getpid()}-", dir=base))
            self.write_owner(self.root)
        self.work = self.root / "work"
        self.work.mkdir(exist_ok=True)
        self.max_age_s = max_age_s

    @property
    def gradio_dir(self) -> Path:
        """Where gradio keeps uploads and outputs (set as GRADIO_TEMP_DIR by the launcher)."""
        return self.root / "gradio"

    def new_dir(self, kind: str) -> Path:
        """A fresh folder for one request's files (named by a random id, never by anything uploaded)."""
        self.prune()
        folder = self.work / f"{kind}-{uuid.uuid4().hex}"
        folder.mkdir()
        return folder

    def prune(self) -> None:
        """Remove work folders older than ``max_age_s``."""
        cutoff = time.time() - self.max_age_s
        for folder in self.work.iterdir():
            try:
                if folder.stat().st_mtime < cutoff:
                    shutil.rmtree(folder, ignore_errors=True)
            except FileNotFoundError:
                continue

    def cleanup(self) -> None:
        """Remove the whole temp folder."""
        shutil.rmtree(self.root, ignore_errors=True)

    # ----------------------------------------------------------------------------- what earlier runs left
    @classmethod
    def write_owner(cls, folder: Path, pid: int | None = None) -> None:
        """Record which process owns ``folder``: its PID and start time (so that a reused PID is told apart)."""
        pid = os.getpid() if pid is None else pid
        (Path(folder) / cls.OWNER_FILE).write_text(f"{pid} {_process_start(pid) or 0}\n")

    @classmethod
    def sweep(cls, base: str | os.PathLike) -> int:
        """Remove this user's ``codixr-app-*`` folders in ``base`` whose run is over; returns how many.

        A run is over when its PID is not alive, or is alive with another start time than the owner file
        records (the PID was reused, e.g. PID 1 again in a restarted container); folders of older versions
        (no PID in the name) go once untouched for ``LEGACY_MAX_AGE_S``.
        """
        removed = 0
        for folder in Path(base).glob(f"{cls.PREFIX}*"):
            try:
                info = folder.lstat()
                if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or not cls._run_is_over(folder):
                    continue
            except OSError:
                continue
            shutil.rmtree(folder, ignore_errors=True)
            removed += not folder.exists()
        if removed:
            logger.info("removed %d temp folder(s) left by earlier runs of the app", removed)
        return removed

    @classmethod
    def _run_is_over(cls, folder: Path) -> bool:
        pid_text = folder.name[len(cls.PREFIX):].split("-", 1)[0]
        if not pid_text.isdigit() or "-" not in folder.name[len(cls.PREFIX):]:
            newest = max([folder.lstat().st_mtime] + [p.lstat().st_mtime for p in folder.iterdir()])
            return newest < time.time() - cls.LEGACY_MAX_AGE_S
        pid = int(pid_text)
        if not _pid_alive(pid):
            return True
        try:
            recorded = int((folder / cls.OWNER_FILE).read_text().split()[1])
        except (OSError, IndexError, ValueError):
            return False  # alive, and no record to tell (yet): keep it
        started = _process_start(pid)
        return started is not None and recorded != started


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    except OSError:
        return False
    return True


def _process_start(pid: int) -> int | None:
    """When process ``pid`` started, in clock ticks after boot (Linux /proc); None where that is not known."""
    try:
        stat_line = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    try:  # the command name (field 2) may hold spaces and parentheses: count from the last ")"
        return int(stat_line.rsplit(")", 1)[1].split()[19])
    except (IndexError, ValueError):
        return None


class UploadGuard:
    """ASGI middleware: gradio's ``/file=`` route never serves a file a user uploaded (``Blocks.upload_file_set``).

    An upload is deleted by the request that reads it; this closes the time before (a queued request) and
    uploads that no request ever reads. Outputs (previews, downloads) are served as before.
    """

    def __init__(self, app, blocks, upload_dir: str | os.PathLike) -> None:
        self.app = app
        self.blocks = blocks
        self.upload_dir = os.path.abspath(upload_dir)  # as gradio names its uploads (GRADIO_TEMP_DIR)
        self._real_upload_dir = os.path.realpath(upload_dir)

    async def __call__(self, scope, receive, send) -> None:
        path = scope.get("path", "") if scope.get("type") == "http" else ""
        if "/file=" in path and self._uploaded(path.split("/file=", 1)[1]):
            from starlette.responses import PlainTextResponse

            await PlainTextResponse("File not found.", status_code=404)(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _uploaded(self, target: str) -> bool:
        """Whether ``target`` names an upload, however it is spelled (``..``, ``//``, symbolic links)."""
        uploaded = getattr(self.blocks, "upload_file_set", None) or ()
        try:
            real = os.path.realpath(target)
        except ValueError:  # e.g. a NUL byte: no file has that name
            return False
        if os.path.commonpath([real, self._real_upload_dir]) == self._real_upload_dir:
            spelled = os.path.join(self.upload_dir, os.path.relpath(real, self._real_upload_dir))
            if spelled in uploaded:
                return True
        return target in uploaded or real in uploaded
