"""Latency of one request for all other modalities from one input, at 20 sampler steps on this machine.

    .venv/bin/python -m bench.pipeline [--model PATH] [--repeats 3] [--threads 1] [--flow-workers 1] [--json out.json]

Three requests, each generating every modality that is not its input (the issue's target is <= 3 s each):
labels -> frontal + lateral + report, frontal -> lateral + report, report -> frontal + lateral; and the report
flow alone (labels -> report, F -> report), which is what the report adds to a request. Each is run once to
warm up, then ``--repeats`` times; the table gives the median, min and max wall time.

The model is ``--model``, else ``$CODIXR_MODEL`` or the bundled ``assets/codixr-default``. When no package
exists yet, the benchmark builds the ``small`` architecture (the bundled default's size) with random weights
and a WordPiece tokenizer trained on the IU impressions, and says so: generation speed does not depend on
training. Results depend on the load of the machine; the JSON records the load average before and after.
``--flow-workers 1`` runs the flows of a request one after the other, each on all torch threads (the pipeline's
default runs them side by side, ``CoDiXRPipeline.flow_workers``), for comparing the two on one machine.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

logger = logging.getLogger("bench.pipeline")

TARGET_SECONDS = 3.0
FRONTAL_SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "xrv-samples" / "00000001_000.png"
REPORT = "Small left pleural effusion with adjacent atelectasis."
LABELS = ["Pleural Effusion"]


def small_random_pipeline(seed: int = 0) -> Any:
    """The ``small`` architecture with random weights, a tokenizer trained on the IU impressions, on the CPU."""
    from codixr.data import load_iu_xray
    from codixr.models.configs import build_components
    from codixr.models.tokenizer import train_report_tokenizer
    from codixr.pipeline import CoDiXRPipeline

    impressions = [s.impression for s in load_iu_xray() if s.impression]
    tokenizer = train_report_tokenizer(impressions, vocab_size=4000)
    torch.manual_seed(seed)
    components = build_components("small", tokenizer=tokenizer)
    for module in components.values():
        if isinstance(module, torch.nn.Module):
            module.eval()
    return CoDiXRPipeline(**components)


def load_pipeline(model: str | None) -> tuple[Any, str]:
    """(pipeline, description): the model package, or the random ``small`` architecture when there is none."""
    from codixr.pipeline import CoDiXRPipeline, resolve_model_path

    path = resolve_model_path(model)
    if model or Path(path).expanduser().is_dir():
        pipe = CoDiXRPipeline.from_pretrained(path)
        description = f"model package {path}"
    else:
        logger.warning("No model package at %s: benchmarking the `small` architecture with RANDOM weights "
                       "(same size and speed as a trained small package; outputs are noise).", path)
        pipe = small_random_pipeline()
        description = ("small architecture, randomly initialised (no model package found; speed does not depend "
                       "on training)")
    pipe.set_progress_bar_config(disable=True)
    params = sum(p.numel() for m in pipe.components.values() if isinstance(m, torch.nn.Module) for p in m.parameters())
    return pipe, f"{description}; {params / 1e6:.1f} M parameters, {pipe.image_size}-px images"


def frontal_input(size: int) -> Any:
    """A real frontal radiograph when the shared samples are present, else a smooth synthetic image."""
    if FRONTAL_SAMPLE.is_file():
        return str(FRONTAL_SAMPLE)
    y, x = np.mgrid[0:size, 0:size] / size
    return (0.5 + 0.3 * np.sin(6 * x) * np.cos(4 * y)).astype(np.float32)


def requests(pipe: Any) -> list[tuple[str, dict[str, Any]]]:
    """(name, pipeline arguments) of the benchmarked requests."""
    return [
        ("labels -> F+L+R", {"labels": LABELS, "outputs": ["frontal", "lateral", "report"]}),
        ("F -> L+R", {"frontal": frontal_input(pipe.image_size), "outputs": ["lateral", "report"]}),
        ("R -> F+L", {"report": REPORT, "outputs": ["frontal", "lateral"]}),
        ("labels -> R", {"labels": LABELS, "outputs": ["report"]}),
        ("F -> R", {"frontal": frontal_input(pipe.image_size), "outputs": ["report"]}),
    ]


def machine(load_before: tuple[float, float, float]) -> dict[str, Any]:
    """What a benchmark's JSON records about the machine, with the load average before and after the run."""
    return {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "processor": platform.processor() or platform.machine(), "python": platform.python_version(),
            "torch": torch.__version__, "load_average_before": load_before, "load_average_after": os.getloadavg()}


def time_request(pipe: Any, kwargs: dict[str, Any], repeats: int, steps: int, guidance: float | None,
                 sampler: str) -> list[float]:
    """Wall times (s) of ``repeats`` calls after one warm-up call."""
    times = []
    for i in range(repeats + 1):
        start = time.perf_counter()
        pipe(**kwargs, num_inference_steps=steps, guidance_scale=guidance, scheduler=sampler, seed=i)
        if i:
            times.append(time.perf_counter() - start)
    return times


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model package (default: $CODIXR_MODEL or assets/codixr-default)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per request after the warm-up")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--guidance", type=float, default=None,
                        help="guidance scale for every output (default: the package's validated scale per output)")
    parser.add_argument("--sampler", default="dpm++")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--flow-workers", type=int,
                        help="threads that run a request's flows side by side (default: the pipeline's, one per "
                             "torch thread; 1: one flow after the other)")
    parser.add_argument("--json", type=Path, help="write the results as JSON here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)

    from codixr.modality import Modality

    pipe, description = load_pipeline(args.model)
    if args.flow_workers:
        pipe.flow_workers = args.flow_workers
    load_before = os.getloadavg()
    results = []
    for name, kwargs in requests(pipe):
        times = time_request(pipe, kwargs, args.repeats, args.steps, args.guidance, args.sampler)
        results.append({"request": name, "median_s": statistics.median(times), "min_s": min(times),
                        "max_s": max(times), "runs_s": times, "within_target": statistics.median(times) <= TARGET_SECONDS})
    report = {
        "model": description, "steps": args.steps, "sampler": args.sampler,
        "guidance_scale": args.guidance if args.guidance is not None else
        {m.value: pipe.default_guidance_scale(m) for m in Modality},
        "joint": pipe.has_joint_generation, "flow_workers": pipe.flow_workers or "default", "repeats": args.repeats,
        "target_s": TARGET_SECONDS,
        "machine": machine(load_before),
        "results": results,
    }
    logger.info("CoDiXRPipeline latency, %s", description)
    logger.info("%d steps %s, guidance %s, %d CPU(s), %d torch thread(s), flow workers %s, load average %.2f -> %.2f",
                args.steps, args.sampler, "package default" if args.guidance is None else f"{args.guidance:g}",
                os.cpu_count(), torch.get_num_threads(), pipe.flow_workers or "default", load_before[0],
                report["machine"]["load_average_after"][0])
    logger.info("%-16s %9s %9s %9s  %s", "request", "median s", "min s", "max s", f"<= {TARGET_SECONDS:g} s")
    for r in results:
        logger.info("%-16s %9.2f %9.2f %9.2f  %s", r["request"], r["median_s"], r["min_s"], r["max_s"],
                    "yes" if r["within_target"] else "no")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        logger.info("wrote %s", args.json)
    return report


if __name__ == "__main__":
    main()
