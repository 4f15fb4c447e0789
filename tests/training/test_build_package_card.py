"""The model card's speed section renders what ``bench.pipeline --json`` measured."""

from __future__ import annotations

from training.build_package import speed_table

BENCH = {
    "model": "x", "steps": 20, "guidance_scale": 2.0, "sampler": "dpm++", "joint": True, "repeats": 3, "target_s": 3.0,
    "machine": {"cpus": 2, "torch_threads": 2, "processor": "x86_64", "python": "3.11", "torch": "2.x",
                "load_average_before": [0.5, 0.4, 0.3], "load_average_after": [0.9, 0.5, 0.3]},
    "results": [{"request": "labels -> F+L+R", "median_s": 2.345, "min_s": 2.2, "max_s": 2.9, "runs_s": [2.2, 2.345, 2.9],
                 "within_target": True},
                {"request": "R -> F+L", "median_s": 3.5, "min_s": 3.4, "max_s": 3.6, "runs_s": [3.4, 3.5, 3.6],
                 "within_target": False}],
}


def test_speed_table_lists_every_request_with_its_measured_times():
    lines = speed_table(BENCH)
    text = "\n".join(lines)
    assert "| labels -> F+L+R | 2.35 | 2.20 | 2.90 | yes |" in lines
    assert "| R -> F+L | 3.50 | 3.40 | 3.60 | no |" in lines
    assert "2 CPU core(s)" in text and "20 dpm++ steps" in text and "joint cross-modal generation on" in text
