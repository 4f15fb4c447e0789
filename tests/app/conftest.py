"""Fixtures of the app tests: a tiny model package saved once, and the app served on a free loopback port.

The ``browser`` marker is registered here (tests that drive Debian's headless Chromium against the app).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.app.fixtures import OPERATOR_SECRET, free_port, write_real_folder

# Environment variables the launcher sets for its process; restored once the app is closed.
_LAUNCH_ENV = ("GRADIO_TEMP_DIR", "GRADIO_ANALYTICS_ENABLED", "HF_HUB_OFFLINE", "HF_HUB_DISABLE_TELEMETRY",
               "DO_NOT_TRACK")


def pytest_configure(config):
    config.addinivalue_line("markers", "browser: drives a real headless Chromium (Debian /usr/bin/chromium) "
                                       "against the app")


@pytest.fixture(scope="session")
def tiny_package(tmp_path_factory) -> Path:
    """A seeded random tiny CoDiXR model package (64-px images), saved once per test session."""
    from codixr.testing import tiny_pipeline

    path = tmp_path_factory.mktemp("tiny-package")
    tiny_pipeline(seed=0).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def studio(tiny_package, tmp_path_factory):
    """The app on the tiny package, served on a free 127.0.0.1 port, launched once for all the app tests.

    ``CODIXR_TEST_APP_MODEL=assets/codixr-default pytest tests/app/test_app_browser.py`` serves a real package
    instead (how the click-to-outputs time of the bundled model is measured); the default run never sets it.
    """
    from codixr.app import AppConfig, launch

    root = tmp_path_factory.mktemp("app")
    saved = {name: os.environ.get(name) for name in _LAUNCH_ENV}
    config = AppConfig(model=os.environ.get("CODIXR_TEST_APP_MODEL") or str(tiny_package), port=free_port(), reader_real_dir=write_real_folder(root / "real"),
                       reader_db=root / "reader.sqlite", reader_images=2, reader_steps=2,
                       examples_dir=root / "no-examples", operator_secret=OPERATOR_SECRET)
    running = launch(config, block=False, quiet=True)
    yield running
    running.close()
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(scope="session")
def client(studio, tmp_path_factory):
    """A gradio_client on the module's app (downloads into a temp folder, no telemetry)."""
    from gradio_client import Client

    return Client(studio.url, analytics_enabled=False, verbose=False,
                  download_files=str(tmp_path_factory.mktemp("client-downloads")))
