"""``python -m codixr.data summary``: the printed counts."""

from __future__ import annotations

import io
import re
import subprocess
import sys
from pathlib import Path

from codixr.data.summary import detect_kind, main

REPO = Path(__file__).resolve().parents[2]


def run(argv) -> str:
    out = io.StringIO()
    assert main(argv, stdout=out) == 0
    return out.getvalue()


def value(text: str, label: str) -> str:
    match = re.search(rf"^  {re.escape(label)}\s+(\S.*?)\s*$", text, flags=re.MULTILINE)
    assert match, f"no line {label!r} in:\n{text}"
    return match.group(1)


def test_mimic_summary(mimic_root):
    assert detect_kind(mimic_root) == "mimic"
    text = run(["summary", str(mimic_root)])
    assert value(text, "studies") == "2" and value(text, "patients") == "2"
    assert value(text, "images, frontal") == "2" and value(text, "images, lateral") == "2"
    assert value(text, "studies with both views") == "2" and value(text, "impressions") == "2"
    assert value(text, "Cardiomegaly").split() == ["1", "0", "0", "1"]  # positive, negative, uncertain, not stated
    assert value(text, "Edema").split() == ["0", "0", "1", "1"]
    every = run(["summary", str(mimic_root), "--kind", "mimic", "--keep-all"])
    assert value(every, "studies") == "6" and value(every, "images, unknown view") == "1"


def test_tokenizer_counts_impressions_over_the_limit(mimic_root, wordpiece_tokenizer, tmp_path):
    wordpiece_tokenizer.save_pretrained(tmp_path / "tok")
    limit = len(wordpiece_tokenizer("No acute cardiopulmonary process.")["input_ids"])  # one impression fits exactly
    text = run(["summary", str(mimic_root), "--tokenizer", str(tmp_path / "tok"), "--limit", str(limit)])
    assert value(text, "over the limit") == "1" and value(text, "within the limit") == "1"
    assert "truncated at the last sentence boundary" in text


def test_public_summary_subprocess(shared_data_dir):
    result = subprocess.run([sys.executable, "-m", "codixr.data", "summary", str(shared_data_dir)],
                            capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stderr
    assert value(result.stdout, "source rsna-pneumonia") == "1350"
    assert value(result.stdout, "source nih-cxr14-64px") == "882"
    assert int(value(result.stdout, "images, frontal")) == 1350 + 882 + 448  # covid: 452 frontal, 4 duplicates


def test_iu_summary_without_images_and_errors(tmp_path):
    text = run(["summary", str(tmp_path / "no-such-folder"), "--kind", "iu"])
    assert 3850 <= int(value(text, "impressions")) <= 4000
    result = subprocess.run([sys.executable, "-m", "codixr.data", "summary", str(tmp_path), "--kind", "mimic"],
                            capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 2 and "No MIMIC-CXR image folder" in result.stderr
