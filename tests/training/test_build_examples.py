"""The app's example folder builder, on a tiny seeded model package."""

from __future__ import annotations

import json

from codixr.app.examples import load_examples
from codixr.testing import tiny_pipeline
from training.build_examples import main


def test_build_examples_writes_synthetic_studies_the_app_loads(tmp_path):
    package = tmp_path / "package"
    tiny_pipeline(seed=0).save_pretrained(package)
    out = main(["--model", str(package), "--out", str(tmp_path / "examples")])
    entries = json.loads((out / "examples.json").read_text())
    rows = load_examples(out)
    assert len(rows) == len(entries) == 6  # every entry is a valid request
    assert {tuple(e["outputs"]) for e in entries} >= {("lateral", "report"), ("frontal",), ("report",)}
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs and all("synthetic" in name for name in pngs)
    assert "synthetic" in (out / "README.md").read_text().lower()
