"""`python app.py` as a user runs it: served on 127.0.0.1 at GRADIO_SERVER_PORT, up even without a model package,
saying so on the page; SIGTERM stops it cleanly and removes its temp folder."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from tests.app.fixtures import free_port

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 120


def _wait_for(url: str, process: subprocess.Popen, log: Path) -> dict:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"app.py exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url + "config", timeout=2) as response:
                return json.load(response)
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"app.py did not answer within {START_TIMEOUT_S} s:\n{log.read_text()[-3000:]}")


def test_app_py_serves_without_a_model_and_says_so(tmp_path):
    port, temp, log = free_port(), tmp_path / "tmp", tmp_path / "app.log"
    temp.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("GRADIO_SERVER_NAME", "CODIXR_MODEL", "GRADIO_TEMP_DIR")}
    env.update(GRADIO_SERVER_PORT=str(port), CODIXR_MODEL=str(tmp_path / "no-such-package"), TMPDIR=str(temp),
               PYTHONPATH=str(REPO))
    with log.open("w") as out:
        process = subprocess.Popen([sys.executable, "app.py"], cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        config = _wait_for(url, process, log)
        texts = [c.get("props", {}).get("value") for c in config["components"]]
        status = next(t for t in texts if isinstance(t, str) and t.startswith("**Model:**"))
        assert "not loaded" in status and "no-such-package was not found" in status
        client = Client(url, analytics_enabled=False, verbose=False, download_files=str(tmp_path / "downloads"))
        with pytest.raises(AppError, match="was not found"):
            client.predict(None, None, "", ["Edema"], ["frontal"], 2, 2.0, 0, "dpm++", "truncate", api_name="/generate")
        assert [p.name for p in temp.glob("codixr-app-*")], "the app made no private temp folder"
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    output = log.read_text()
    assert process.returncode == 0, output[-3000:]
    assert "Traceback" not in output
    assert not list(temp.glob("codixr-app-*")), "the temp folder was left behind"
