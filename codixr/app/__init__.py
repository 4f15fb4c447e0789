"""CoDiXR Studio: the clinician-facing Gradio app over the CoDiXR pipeline.

    python app.py                                  # http://127.0.0.1:7860, bundled default model
    python app.py --model path/to/package --port 7861 --reader-real-dir /data/real-cxr

    from codixr.app import AppConfig, launch
    studio = launch(AppConfig(model="pkg", port=7861), block=False)   # returns at once; studio.close() stops it

Run-time rules kept here: no analytics or other network calls (Hugging Face libraries are put offline, gradio's
telemetry, run history, monitoring and MCP server are off); uploads and outputs live in a private temp folder
removed at exit (and, after a crash, at the next start); an uploaded file is deleted by the request that reads
it and never served back; nothing about patients is logged. The model loads once, lazily, and a start-up
self-test puts a status line on the page instead of failing on the first click.
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import sys
import threading
from dataclasses import dataclass
from typing import Any, Sequence

from starlette.middleware import Middleware

from codixr.app.config import AppConfig
from codixr.app.runtime import ModelService, SelfTest, TempStore, UploadGuard, self_test

logger = logging.getLogger(__name__)

__all__ = ["AppConfig", "ModelService", "SelfTest", "Studio", "TempStore", "launch", "main", "self_test"]

_OFFLINE = {"GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1",
            "DO_NOT_TRACK": "1"}


@dataclass
class Studio:
    """A running app: its Blocks, settings, model service, temp folder, self-test and local URL."""

    demo: Any
    config: AppConfig
    service: ModelService
    temp: TempStore
    status: SelfTest

    @property
    def url(self) -> str:
        return f"http://{self.config.host}:{self.config.port}/"

    def close(self) -> None:
        """Stop the server and the model's batching queue, and remove the temp folder."""
        self.demo.close()
        self.service.batcher.close()
        self.temp.cleanup()


def launch(config: AppConfig | None = None, *, block: bool = True, quiet: bool = False) -> Studio:
    """Start the app: self-test, build, queue and serve it on ``config.host:config.port``.

    ``block=True`` serves until interrupted (then cleans up); ``block=False`` returns the running ``Studio``.
    """
    config = config or AppConfig.from_args([])
    for name, value in _OFFLINE.items():
        os.environ[name] = value if name == "GRADIO_ANALYTICS_ENABLED" else os.environ.get(name, value)
    temp = TempStore()
    atexit.register(temp.cleanup)
    os.environ["GRADIO_TEMP_DIR"] = str(temp.gradio_dir)  # gradio reads it when components are made
    from codixr.app.ui import CSS, build_app, theme

    service = ModelService.from_config(config)
    status = self_test(service)
    logger.info("self-test: model %s, device %s", "loaded" if status.model_ok else "NOT loaded", status.device)
    demo = build_app(config, service, temp, status)
    demo.queue(default_concurrency_limit=config.concurrency, max_size=config.queue_size)
    studio = Studio(demo, config, service, temp, status)
    demo.launch(server_name=config.host, server_port=config.port, share=False, prevent_thread_lock=True,
                quiet=quiet, max_file_size=f"{config.max_file_size_mb}mb", enable_monitoring=False,
                run_history=False, mcp_server=False, ssr_mode=False, footer_links=["api", "settings"],
                theme=theme(), css=CSS,
                app_kwargs={"middleware": [Middleware(UploadGuard, blocks=demo, upload_dir=temp.gradio_dir)]})
    logger.info("CoDiXR Studio is serving on %s", studio.url)
    if block:
        try:
            demo.block_thread()
        finally:
            studio.close()
    return studio


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``python app.py``: settings from arguments and environment, then serve until stopped."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # request lines name file paths
    if threading.current_thread() is threading.main_thread():  # SIGTERM (e.g. from a process manager) cleans up too
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    launch(AppConfig.from_args(argv))
