"""``python -m codixr.data summary DIR``: counts of a dataset as an aligned text table.

Kinds: ``mimic`` (DIR holds ``files/`` and the MIMIC-CXR tables), ``iu`` (DIR is the IU images folder,
which may not exist: the reports come from the torchxrayvision wheel), ``public`` (DIR is the shared
data folder with covid-cxr/, rsna-pneumonia/, nih-cxr14-64px/), ``synthetic`` (an export of
``python -m codixr.generate``), or ``auto`` (the default) to tell them apart.
With ``--tokenizer`` (a tokenizer folder or tokenizer.json), it also counts the impressions over the
77-token limit of the text encoder; those are cut at the last sentence boundary that fits.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any, Sequence, TextIO

from codixr.data.records import StudyDataset
from codixr.data.reports import TOKEN_LIMIT, token_length_report
from codixr.errors import InputError
from codixr.modality import CONDITION_LABELS

KINDS = ("auto", "mimic", "iu", "public", "synthetic")


def detect_kind(path: str | Path) -> str:
    """"synthetic", "public", "mimic" or "iu" for a folder (a missing folder is taken as an IU images folder)."""
    from codixr.data.public import PUBLIC_SETS
    from codixr.data.synthetic import is_synthetic_dir

    path = Path(path)
    if is_synthetic_dir(path):
        return "synthetic"
    if any((path / name).is_dir() for name in PUBLIC_SETS):
        return "public"
    if (path / "files").is_dir() or any(path.glob("mimic-cxr-2.0.0-*.csv*")):
        return "mimic"
    return "iu"


def load_dataset(path: str | Path, kind: str = "auto", keep_all: bool = False) -> StudyDataset:
    """Load DIR as the given kind; ``keep_all`` drops the selection rules (impression, both views)."""
    from codixr.data import load_iu_xray, load_mimic_cxr, load_public_cxr, load_synthetic

    kind = detect_kind(path) if kind == "auto" else kind
    if kind == "mimic":
        rules = {"require_impression": False, "require_both_views": False} if keep_all else {}
        return load_mimic_cxr(path, **rules)
    if kind == "iu":
        return load_iu_xray(path)
    if kind == "public":
        return load_public_cxr(path)
    if kind == "synthetic":
        return load_synthetic(path)
    raise InputError(f"Unknown dataset kind {kind!r}: use one of {', '.join(KINDS)}.")


def load_tokenizer(path: str | Path) -> Any:
    """A Hugging Face tokenizer from a local folder or tokenizer.json (never downloads)."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    path = Path(path)
    if path.is_file():
        return PreTrainedTokenizerFast(tokenizer_file=str(path))
    if not path.is_dir():
        raise InputError(f"No tokenizer at {path}: give a tokenizer folder (tokenizer.json, ...) or a tokenizer.json file.")
    return AutoTokenizer.from_pretrained(str(path), local_files_only=True)


def _table(rows: Sequence[Sequence[Any]], header: Sequence[str] | None = None) -> list[str]:
    cells = [[str(c) for c in row] for row in ([header] if header else []) + list(rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
    return ["  " + "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))) for row in cells]


def format_summary(summary: dict[str, Any], title: str, lengths: dict[str, dict[str, Any]] | None = None) -> str:
    """The text report for a :meth:`StudyDataset.summary` dict (and optional token-length reports)."""
    images = summary["images"]
    lines = [title, ""]
    lines += _table([
        ("studies", summary["studies"]),
        ("patients", summary["patients"]),
        ("images, frontal", images["frontal"]),
        ("images, lateral", images["lateral"]),
        ("images, unknown view", images["unknown"]),
        ("studies with a frontal image", summary["studies_with_frontal"]),
        ("studies with a lateral image", summary["studies_with_lateral"]),
        ("studies with both views", summary["studies_with_both_views"]),
        *((f"images listed in reports, {view}", n) for view, n in summary.get("images_listed_in_reports", {}).items()),
        ("impressions", summary["impressions"]),
        ("findings / other texts", summary["findings_texts"]),
        *((f"split {name}", n) for name, n in summary["splits"].items()),
        *((f"source {name}", n) for name, n in summary["sources"].items()),
    ])
    lines += ["", "Label prevalence (studies)"]
    lines += _table(
        [(name, *summary["labels"][name].values()) for name in CONDITION_LABELS],
        header=("label", "positive", "negative", "uncertain", "not stated"),
    )
    for what, report in (lengths or {}).items():
        lines += ["", f"Token lengths of {what} (limit {report['limit']}, special tokens included)"]
        lines += _table([
            (what, report["texts"]),
            ("within the limit", report["within_limit"]),
            ("over the limit", report["over_limit"]),
            ("median / p95 / max tokens", f"{report['median_tokens']:g} / {report['p95_tokens']} / {report['max_tokens']}"),
        ])
        if report["over_limit"]:
            lines.append(f"  The {report['over_limit']} over the limit are truncated at the last sentence boundary "
                         "that fits (a word boundary when the first sentence alone is too long).")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None, stdout: TextIO | None = None) -> int:
    """Entry point of ``python -m codixr.data``; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m codixr.data", description="Dataset tools for CoDiXR.")
    commands = parser.add_subparsers(dest="command", required=True)
    summary = commands.add_parser("summary", help="print counts of a dataset")
    summary.add_argument("dir", help="MIMIC-CXR root, IU images folder (may be absent) or the shared data folder")
    summary.add_argument("--kind", choices=KINDS, default="auto")
    summary.add_argument("--tokenizer", help="tokenizer folder or tokenizer.json: count impressions over the limit")
    summary.add_argument("--limit", type=int, default=TOKEN_LIMIT, help="token limit (default %(default)s)")
    summary.add_argument("--keep-all", action="store_true", help="MIMIC: keep studies without impression or both views")
    summary.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    args = parser.parse_args(argv)
    stdout = stdout or sys.stdout
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    kind = detect_kind(args.dir) if args.kind == "auto" else args.kind
    dataset = load_dataset(args.dir, kind, args.keep_all)
    lengths = None
    if args.tokenizer:
        tokenizer = load_tokenizer(args.tokenizer)
        texts = {"impressions": [s.impression for s in dataset if s.impression],
                 "findings / other texts": [s.findings_text for s in dataset if s.findings_text]}
        lengths = {what: token_length_report(found, tokenizer, args.limit) for what, found in texts.items() if found}
    stdout.write(format_summary(dataset.summary(), f"Dataset summary: {kind} ({args.dir})", lengths))
    return 0
