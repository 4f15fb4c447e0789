"""Throughput of the app under concurrent users: one client alone, then several at once (issue 14, defect 6).

    .venv/bin/python -m bench.load [--model assets/codixr-default] [--clients 8] [--requests 3] [--steps 20]
    .venv/bin/python -m bench.load --repo /path/to/an/older/checkout      # the same load on other code

Starts ``app.py`` from ``--repo`` (default: this checkout) in a child process on a free 127.0.0.1 port with
``--model``, waits until it answers (the model is loaded by then), sends one warm-up request, then:

1. one client sends ``--single-requests`` report -> frontal requests, one after the other;
2. ``--clients`` clients (each its own gradio_client session) send ``--requests`` each, one after the other,
   all clients at the same time.

Every request generates a frontal view from an impression at ``--steps`` dpm++ steps (impressions and seeds
vary). Printed: per phase the requests, errors, wall time, throughput and p50/p95 latency, then the throughput
ratio (several clients over one) and the batch sizes the app logged; the JSON (``--json``) holds the same and
every latency. Loopback only, bounded: the app is stopped after the run or at ``--timeout-s``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

logger = logging.getLogger("bench.load")

REPO = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 600
TARGET_RATIO = 1.5  # the issue: throughput with 8 clients at least 1.5 x one client alone
IMPRESSIONS = ("Small left pleural effusion.", "No acute cardiopulmonary abnormality.",
               "Cardiomegaly with mild interstitial edema.", "Right lower lobe consolidation, likely pneumonia.",
               "Moderate right pneumothorax.", "Mild bibasilar atelectasis.")
GROUP_LINE = re.compile(r"ran a group of (\d+) in")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_app(repo: Path, model: str, port: int, log: Path, extra: list[str]) -> subprocess.Popen:
    env = {**os.environ, "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port),
           "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONUNBUFFERED": "1"}
    with log.open("wb") as out:
        return subprocess.Popen([sys.executable, "app.py", "--model", model, "--host", "127.0.0.1", "--port",
                                 str(port), *extra], cwd=repo, env=env, stdout=out, stderr=subprocess.STDOUT)


def wait_until_up(url: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the app exited while starting:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url + "config", timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"the app did not answer within {START_TIMEOUT_S} s")


def client(url: str):
    from gradio_client import Client

    return Client(url, verbose=False, analytics_enabled=False, download_files=False)


def one_request(api, index: int, steps: int) -> tuple[float, str | None]:
    """(seconds, error or None) of one report -> frontal request."""
    started = time.perf_counter()
    try:
        out = api.predict(None, None, IMPRESSIONS[index % len(IMPRESSIONS)], [], ["frontal"], steps, 2.0, index,
                          "dpm++", "truncate", api_name="/generate")
        error = None if out[0] and str(out[3]).startswith("Generated") else f"no frontal: {str(out[3])[:120]}"
    except Exception as exc:  # noqa: BLE001 - every failure is counted, with its message
        error = f"{type(exc).__name__}: {str(exc)[:160]}"
    return time.perf_counter() - started, error


def run_phase(url: str, clients: int, requests: int, steps: int, first_index: int,
              apis: list | None = None) -> dict[str, Any]:
    """``clients`` sessions at once, each sending ``requests`` requests one after the other."""
    apis = apis or [client(url) for _ in range(clients)]  # connected before the clock starts
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors: list[str] = []
    start = threading.Barrier(clients + 1)

    def work(c: int) -> None:
        start.wait()
        for r in range(requests):
            seconds, error = one_request(apis[c], first_index + c * requests + r, steps)
            latencies[c].append(seconds)
            if error:
                errors.append(error)

    threads = [threading.Thread(target=work, args=(c,), daemon=True) for c in range(clients)]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - began
    flat = sorted(s for per_client in latencies for s in per_client)
    done = len(flat) - len(errors)
    return {"clients": clients, "requests": len(flat), "errors": len(errors), "error_messages": errors[:10],
            "wall_s": wall, "throughput_per_s": done / wall, "p50_s": statistics.median(flat),
            "p95_s": flat[min(len(flat) - 1, round(0.95 * (len(flat) - 1)))], "latencies_s": flat}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--repo", type=Path, default=REPO, help="checkout whose app.py is served (default: this one)")
    parser.add_argument("--model", default=os.environ.get("CODIXR_MODEL") or str(REPO / "assets" / "codixr-default"),
                        help="model package (default: $CODIXR_MODEL or the bundled assets/codixr-default)")
    parser.add_argument("--clients", type=int, default=8, help="clients at once in the second phase")
    parser.add_argument("--requests", type=int, default=3, help="requests per client in the second phase")
    parser.add_argument("--single-requests", type=int, default=6, help="requests of the one client alone")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--timeout-s", type=float, default=1800, help="stop the app and give up after this long")
    parser.add_argument("--json", type=Path, default=REPO / "test-artifacts" / "bench-load.json")
    parser.add_argument("--app-log", type=Path, help="keep the app's log here (it names no patient data)")
    parser.add_argument("app_args", nargs="*", help="more arguments for app.py, after --")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    from bench.pipeline import machine

    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    with tempfile.TemporaryDirectory(prefix="codixr-bench-load-") as folder:
        log = Path(folder) / "app.log"
        process = start_app(args.repo, args.model, port, log, args.app_args)
        watchdog = threading.Timer(args.timeout_s, process.kill)
        watchdog.start()
        try:
            wait_until_up(url, process, log)
            load_before = os.getloadavg()
            logger.info("app up on %s with %s; warming up", url, args.model)
            alone = client(url)  # the warm-up is the lone client's: no other session is about when it runs
            warm = one_request(alone, 999, args.steps)
            if warm[1]:
                raise SystemExit(f"the warm-up request failed: {warm[1]}\n{log.read_text()[-3000:]}")
            groups_before = len(GROUP_LINE.findall(log.read_text()))
            single = run_phase(url, 1, args.single_requests, args.steps, 0, apis=[alone])
            many = run_phase(url, args.clients, args.requests, args.steps, 1000)
            groups = [int(n) for n in GROUP_LINE.findall(log.read_text())[groups_before:]]
        finally:
            watchdog.cancel()
            process.terminate()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
            if args.app_log:
                args.app_log.write_bytes(log.read_bytes())
    ratio = many["throughput_per_s"] / single["throughput_per_s"] if single["throughput_per_s"] else 0.0
    report = {"model": args.model, "repo": str(args.repo), "steps": args.steps, "request": "report -> frontal",
              "app_args": args.app_args, "phases": [single, many], "throughput_ratio": ratio,
              "target_ratio": TARGET_RATIO, "meets_target": ratio >= TARGET_RATIO and not many["errors"]
              and not single["errors"], "batch_sizes": dict(sorted(Counter(groups).items())),
              "machine": machine(load_before)}
    print(f"bench.load: {args.model}, report -> frontal, {args.steps} steps, {os.cpu_count()} CPU(s), "
          f"load average {load_before[0]:.2f} -> {report['machine']['load_average_after'][0]:.2f}")
    print(f"{'clients':>7} {'requests':>8} {'errors':>6} {'wall s':>7} {'req/s':>6} {'p50 s':>6} {'p95 s':>6}")
    for phase in (single, many):
        print(f"{phase['clients']:>7} {phase['requests']:>8} {phase['errors']:>6} {phase['wall_s']:>7.1f} "
              f"{phase['throughput_per_s']:>6.3f} {phase['p50_s']:>6.1f} {phase['p95_s']:>6.1f}")
    print(f"throughput ratio {args.clients} clients / 1 client: {ratio:.2f} (target >= {TARGET_RATIO:g}); "
          f"batch sizes (size: count) {report['batch_sizes'] or 'none logged'}")
    for message in (single["error_messages"] + many["error_messages"])[:5]:
        print(f"error: {message}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    logger.info("wrote %s", args.json)
    return report


if __name__ == "__main__":
    sys.exit(0 if not any(p["errors"] for p in main()["phases"]) else 1)
