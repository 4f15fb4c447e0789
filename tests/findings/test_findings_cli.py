"""``python -m codixr.findings`` writes findings and keypatches of one image (and report) to a folder."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from codixr.findings.__main__ import main
from codixr.modality import PATHOLOGIES
from codixr.testing import tiny_pipeline


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    folder = tmp_path_factory.mktemp("package")
    tiny_pipeline(seed=0).save_pretrained(folder)
    return folder


@pytest.fixture()
def png(tmp_path):
    y, x = np.mgrid[0:96, 0:80] / 96
    path = tmp_path / "xray.png"
    Image.fromarray((255 * (0.5 + 0.4 * np.sin(5 * x) * np.cos(3 * y))).astype(np.uint8)).save(path)
    return path


def test_cli_writes_findings_chart_overlay_and_report_highlights(package, png, tmp_path):
    out = main([str(png), "--model", str(package), "--report", "Small left pleural effusion.",
                "--out", str(tmp_path / "out")])
    readings = json.loads((out / "findings.json").read_text())
    assert set(readings) == {"classifier", "zero_shot"}
    assert set(readings["zero_shot"]["scores"]) == set(PATHOLOGIES)
    overlay = Image.open(out / "keypatches.png")
    assert overlay.size == (256, 256)  # the preprocessed image the model reads
    keywords = json.loads((out / "keywords.json").read_text())
    assert "".join(span for span, _ in keywords["highlights"]) == "Small left pleural effusion."
    assert keywords["boxes"] and Image.open(out / "findings.png").size[0] > 0


def test_cli_reports_an_unreadable_file_without_a_traceback(package, tmp_path, capsys):
    bad = tmp_path / "notes.png"
    bad.write_bytes(b"not an image at all")
    with pytest.raises(SystemExit) as exit_info:
        main([str(bad), "--model", str(package), "--out", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    assert "error:" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
