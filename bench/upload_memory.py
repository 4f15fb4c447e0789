"""Peak memory of the app when several large PNGs reach the preview endpoint at once (issue 14, defect 8).

    .venv/bin/python -m bench.upload_memory [--model assets/codixr-default] [--side 10000] [--uploads 4]
    .venv/bin/python -m bench.upload_memory --side 4999 --colour-mode RGB     # the largest, costliest accepted
    .venv/bin/python -m bench.upload_memory --repo /path/to/an/older/checkout     # the same load on other code

Starts ``app.py`` from ``--repo`` (default: this checkout) in a child process on a free 127.0.0.1 port, waits
for it to load the model, uploads ``--uploads`` all-black ``--side`` x ``--side`` 8-bit PNGs (about 97 KB each
at 10000 x 10000) and sends them to ``/preview_frontal`` at the same moment, one thread each. The app's
resident memory is read from /proc every 10 ms: printed are the RSS before, the peak during the burst, the
RSS a few seconds after, and the kernel's high-water mark (VmHWM). Loopback only; Linux only (/proc).
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path

from PIL import Image

from bench.load import wait_until_up  # one way of waiting for the app to answer

logger = logging.getLogger("bench.upload_memory")

REPO = Path(__file__).resolve().parents[1]
LIMIT_GB = 3.0  # what the issue asks: four parallel 100-MP uploads keep the app under 3 GB


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def memory_kb(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of ``pid`` in kB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])
    return out


def black_png(side: int, mode: str = "L") -> bytes:
    """An all-black PNG of side x side, 8-bit grey or RGB (deflate makes 100 MP of zeros about 97 KB)."""
    buffer = io.BytesIO()
    Image.new(mode, (side, side), 0).save(buffer, format="PNG", compress_level=9)
    return buffer.getvalue()


def upload(url: str, name: str, data: bytes) -> str:
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"{name}\"\r\n"
            "Content-Type: image/png\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    request = urllib.request.Request(url + "gradio_api/upload", data=body, method="POST",
                                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.load(response)[0]


def preview(url: str, server_path: str, results: list, index: int) -> None:
    """One /preview_frontal call through the REST call API; stores (seconds, outcome) at ``index``."""
    started = time.perf_counter()
    payload = json.dumps({"data": [{"path": server_path, "meta": {"_type": "gradio.FileData"}}]}).encode()
    request = urllib.request.Request(url + "gradio_api/call/preview_frontal", data=payload, method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as response:
        event_id = json.load(response)["event_id"]
    outcome = "no result"
    with urllib.request.urlopen(url + f"gradio_api/call/preview_frontal/{event_id}", timeout=600) as response:
        event = None
        for raw in response:
            line = raw.decode().strip()
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("data:") and event in ("complete", "error"):
                data = json.loads(line.split(":", 1)[1])
                if event == "complete" and data and data[0] is None:
                    outcome = "refused: " + str(data[1])[:90]
                else:
                    outcome = event if event == "error" else "read and shown"
                break
    results[index] = (time.perf_counter() - started, outcome)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--repo", type=Path, default=REPO, help="checkout whose app.py is served (default: this one)")
    parser.add_argument("--model", default=str(REPO / "assets" / "codixr-default"), help="model package")
    parser.add_argument("--side", type=int, default=10_000, help="side of each PNG in pixels")
    parser.add_argument("--uploads", type=int, default=4, help="PNGs sent at the same moment")
    parser.add_argument("--colour-mode", choices=("L", "RGB"), default="L",
                        help="grey (L), or a grey image saved as RGB: the costliest kind to read")
    parser.add_argument("--settle-s", type=float, default=5.0, help="how long to watch after the burst")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    data = black_png(args.side, args.colour_mode)
    logger.info("%d %s PNG(s) of %d x %d (%.1f MP), %.0f KB each, against %s", args.uploads, args.colour_mode,
                args.side, args.side, args.side**2 / 1e6, len(data) / 1024, args.repo)
    with tempfile.TemporaryDirectory(prefix="bench-upload-memory-") as folder:
        port, log = free_port(), Path(folder) / "app.log"
        env = {k: v for k, v in os.environ.items() if k not in ("GRADIO_TEMP_DIR", "GRADIO_SERVER_NAME")}
        env.update(GRADIO_SERVER_PORT=str(port), TMPDIR=folder, PYTHONPATH=str(args.repo), OMP_NUM_THREADS="1",
                   HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False")
        with log.open("w") as out:
            process = subprocess.Popen([sys.executable, "app.py", "--model", args.model], cwd=args.repo, env=env,
                                       stdout=out, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}/"
        try:
            wait_until_up(url, process, log)
            paths = [upload(url, f"large-{i}.png", data) for i in range(args.uploads)]
            time.sleep(1.0)
            before = memory_kb(process.pid)
            results: list = [None] * args.uploads
            threads = [threading.Thread(target=preview, args=(url, p, results, i)) for i, p in enumerate(paths)]
            peak = before["VmRSS"]
            started = time.perf_counter()
            for thread in threads:
                thread.start()
            while any(t.is_alive() for t in threads) or time.perf_counter() - started < 1.0:
                peak = max(peak, memory_kb(process.pid)["VmRSS"])
                time.sleep(0.01)
            burst_s = time.perf_counter() - started
            settle_end = time.perf_counter() + args.settle_s
            while time.perf_counter() < settle_end:
                peak = max(peak, memory_kb(process.pid)["VmRSS"])
                time.sleep(0.05)
            after = memory_kb(process.pid)
        finally:
            process.terminate()
            process.wait(timeout=60)
    for i, (seconds, outcome) in enumerate(results):
        logger.info("upload %d: %.2f s, %s", i, seconds, outcome)
    gb = 1024**2
    logger.info("app RSS before %.2f GB, peak during the burst %.2f GB (+%.2f GB), %.1f s later %.2f GB; VmHWM %.2f GB",
                before["VmRSS"] / gb, peak / gb, (peak - before["VmRSS"]) / gb, args.settle_s, after["VmRSS"] / gb,
                after["VmHWM"] / gb)
    logger.info("burst of %d previews took %.2f s; peak %s the %.0f GB the issue allows", args.uploads, burst_s,
                "under" if peak / gb < LIMIT_GB else "OVER", LIMIT_GB)


if __name__ == "__main__":
    main()
