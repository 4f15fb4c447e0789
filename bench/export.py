"""Synthetic export throughput (studies/s) on this machine, at batch size 1 and at the best of a few batch sizes.

    .venv/bin/python -m bench.export [--model PATH] [--batch-sizes 1,2,4,8] [--batches 2] [--threads 1] [--json out.json]

A study is one label-conditioned sample with all three outputs (frontal + lateral + report) at 20 steps, written
as PNG + report text by ``codixr.generate.export_dataset`` into a temporary folder (``--findings`` adds a
findings reader per image; default none, to time generation). For each batch size, one batch is generated to
warm up, then ``--batches`` batches are timed. The model is loaded as in ``bench.pipeline`` (the random
``small`` architecture when no model package exists yet, which it says).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from bench.pipeline import load_pipeline, machine
from codixr.generate import ExportConfig, export_dataset

logger = logging.getLogger("bench.export")

SPEC = "Pleural Effusion=0.3,Pneumothorax=0.1"


def studies_per_second(pipe: Any, batch_size: int, batches: int, steps: int, findings: str,
                       folder: Path) -> dict[str, Any]:
    """Throughput of one export of ``batches`` batches of ``batch_size`` studies (after a warm-up batch)."""
    pipe(labels=[["Pleural Effusion"]] * batch_size, outputs=["frontal", "lateral", "report"], num_inference_steps=steps)
    config = ExportConfig(out=folder / f"batch-{batch_size}", n=batch_size * batches, from_labels=SPEC,
                          outputs="frontal,lateral,report", batch_size=batch_size, steps=steps, findings=findings)
    start = time.perf_counter()
    result = export_dataset(config, pipe, rank=0, world_size=1, progress=False)
    total = time.perf_counter() - start
    return {"batch_size": batch_size, "studies": result.written, "loop_s": result.seconds,
            "studies_per_s": result.samples_per_second, "s_per_study": result.seconds / result.written,
            "with_merge_and_summary_s": total}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model package (default: $CODIXR_MODEL or assets/codixr-default)")
    parser.add_argument("--batch-sizes", default="1,2,4,8", help="comma-separated (default 1,2,4,8)")
    parser.add_argument("--batches", type=int, default=2, help="timed batches per batch size")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--findings", default="none", help="findings reader per image (default none)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--json", type=Path, help="write the results as JSON here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("codixr").setLevel(logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)

    pipe, description = load_pipeline(args.model)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as folder:
        rows = [studies_per_second(pipe, int(b), args.batches, args.steps, args.findings, Path(folder))
                for b in args.batch_sizes.split(",")]
    best = max(rows, key=lambda r: r["studies_per_s"])
    report = {"model": description, "steps": args.steps, "findings": args.findings, "batches": args.batches,
              "machine": machine(load_before),
              "results": rows, "batch_1": next((r for r in rows if r["batch_size"] == 1), None), "best": best}
    logger.info("Synthetic export throughput (labels -> F+L+R, %d steps, findings %s), %s", args.steps,
                args.findings, description)
    logger.info("%d CPU(s), %d torch thread(s), load average %.2f -> %.2f", os.cpu_count(), torch.get_num_threads(),
                load_before[0], report["machine"]["load_average_after"][0])
    logger.info("%6s %8s %11s %11s", "batch", "studies", "studies/s", "s/study")
    for r in rows:
        logger.info("%6d %8d %11.3f %11.2f%s", r["batch_size"], r["studies"], r["studies_per_s"], r["s_per_study"],
                    "  <- best" if r is best else "")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        logger.info("wrote %s", args.json)
    return report


if __name__ == "__main__":
    main()
