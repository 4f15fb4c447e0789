"""The model card: its speed section renders what ``bench.pipeline --json`` measured; its plots fit the size budget."""

from __future__ import annotations

import numpy as np

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


def _plot(path, size):
    from PIL import Image

    rng = np.random.default_rng(0)
    smooth = np.add.outer(np.arange(size), np.arange(size)) % 256 + rng.integers(0, 8, (size, size))
    Image.fromarray(smooth.astype(np.uint8), "L").save(path)
    return path.stat().st_size


def test_plots_fill_the_budget_in_priority_order_as_png_then_jpeg(tmp_path):
    from training.build_package import copy_plots

    plots, out = tmp_path / "plots", tmp_path / "package"
    plots.mkdir()
    out.mkdir()
    (out / "weights.bin").write_bytes(b"\0" * 1000)
    sizes = {name: _plot(plots / name, 200) for name in
             ("auroc_classifier.png", "following_T-to-F_frontal.png", "grid_T-to-F_frontal.png")}
    png = sizes["following_T-to-F_frontal.png"]
    # room for one PNG and a little more: the grid goes first as PNG, the chart only as JPEG
    renamed, omitted = copy_plots(plots, out, budget_bytes=1000 + png + png // 3, card_reserve=0)
    assert (out / "plots" / "following_T-to-F_frontal.png").is_file()
    assert renamed == {"auroc_classifier.png": "auroc_classifier.jpg"}
    assert omitted == ["grid_T-to-F_frontal.png"]
    assert sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) <= 1000 + png + png // 3
