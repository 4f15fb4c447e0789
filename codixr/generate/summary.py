"""Requested vs measured prevalence of a synthetic dataset (``summary.json`` and ``summary.md``).

For each label: the prevalence asked for in the spec, the fraction of samples actually conditioned on it,
and the fraction each findings reader calls positive on the outputs: the image reader chosen with
``--findings`` on each generated view (positive = score at or above its threshold) and the rule-based
report labeler on each generated report (positive = 1; uncertain is not counted as positive). For the labels
of the spec it also gives each reader's positive rate among the samples conditioned on the label and among
the others, which is what tells whether the conditioning took.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from codixr.data.synthetic import SUMMARY_JSON, SUMMARY_MD, read_dataset_info, read_manifest
from codixr.modality import CONDITION_LABELS, NO_FINDING, PATHOLOGIES

REPORT_READER = "report: rule-based labeler"
CAVEAT = ("Image readers judge generated images: the zero-shot reading is the model's own reading, not a validated "
          "classifier, and a model that is not trained gives meaningless measurements.")


def _rate(hits: int, total: int) -> float | None:
    return hits / total if total else None


def _readings(root: Path, record: dict[str, Any], reader: str, sources: dict[str, str]) -> dict[str, dict[str, bool]]:
    """reader name -> {label: positive?} for the labels each reader assessed on one sample (``sources`` collects
    the full name of each image reader)."""
    file = record.get("files", {}).get("findings")
    if not file:
        return {}
    found = json.loads((root / file).read_text(encoding="utf-8"))
    out: dict[str, dict[str, bool]] = {}
    for view in ("frontal", "lateral"):
        result = found.get(view)
        if result and result.get("available"):
            positive = set(result.get("positive", []))
            name = f"{view}: {reader}"
            sources[name] = result["source"]
            out[name] = {p: p in positive for p in PATHOLOGIES if result["scores"].get(p) is not None}
    if "report_labels" in found:
        out[REPORT_READER] = {label: value == 1 for label, value in found["report_labels"].items()}
    return out


def prevalence_summary(out: str | os.PathLike) -> dict[str, Any]:
    """The summary of an export folder as a JSON-ready dict (see the module docstring)."""
    root = Path(out)
    info = read_dataset_info(root)
    records = read_manifest(root)
    spec: dict[str, float] = info.get("conditioning", {}).get("prevalence", {})
    conditioned = [set(r.get("condition", {}).get("labels", [])) for r in records]
    sources: dict[str, str] = {REPORT_READER: "codixr.metrics.labeler.label_report"}
    readings = [_readings(root, r, str(info.get("findings")), sources) for r in records]
    readers = sorted({name for sample in readings for name in sample}, key=lambda s: (s == REPORT_READER, s))
    labels: dict[str, Any] = {}
    for label in [*spec, *(l for l in CONDITION_LABELS if l not in spec)]:
        row: dict[str, Any] = {
            "requested": spec.get(label) if spec else None,
            "conditioned": _rate(sum(label in c for c in conditioned), len(records)),
            "measured": {},
        }
        for reader in readers:
            seen = [(sample[reader][label], label in cond) for sample, cond in zip(readings, conditioned)
                    if label in sample.get(reader, {})]
            if not seen:
                continue
            row["measured"][reader] = _rate(sum(pos for pos, _ in seen), len(seen))
            if label in spec:
                with_label = [pos for pos, cond in seen if cond]
                without = [pos for pos, cond in seen if not cond]
                row.setdefault("measured_by_condition", {})[reader] = {
                    "conditioned_on_label": _rate(sum(with_label), len(with_label)),
                    "not_conditioned_on_label": _rate(sum(without), len(without))}
        labels[label] = row
    return {"samples": len(records), "requested_samples": info.get("n"), "model_sha256": info.get("model_sha256"),
            "conditioning": info.get("conditioning"), "sampler": info.get("sampler"), "findings": info.get("findings"),
            "readers": readers, "reader_sources": {r: sources[r] for r in readers}, "labels": labels, "caveat": CAVEAT}


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}%"


def format_markdown(summary: dict[str, Any]) -> str:
    """The summary as a Markdown report with a requested vs measured table."""
    readers = summary["readers"]
    cond = summary.get("conditioning") or {}
    lines = ["# Synthetic dataset summary", "",
             f"- samples: {summary['samples']} of {summary['requested_samples']} requested",
             f"- conditioning: {cond.get('kind')}" + (f" ({cond.get('mode')} mode)" if cond.get("mode") else ""),
             f"- sampler: {json.dumps(summary['sampler'])}",
             f"- model package sha256: {summary['model_sha256']}",
             f"- findings reader: {summary['findings']}",
             *(f"- `{reader}`: {source}" for reader, source in summary.get("reader_sources", {}).items()), "",
             "| label | requested | conditioned | " + " | ".join(readers) + " |",
             "|---|---:|---:|" + "---:|" * len(readers)]
    shown = [label for label, row in summary["labels"].items()
             if row["requested"] is not None or row["conditioned"] or row["measured"]]
    for label in shown:
        row = summary["labels"][label]
        lines.append(f"| {label} | {_pct(row['requested'])} | {_pct(row['conditioned'])} | "
                     + " | ".join(_pct(row["measured"].get(r)) for r in readers) + " |")
    split = [(label, row) for label, row in summary["labels"].items() if row.get("measured_by_condition")]
    if split:
        lines += ["", "Positive rate of each reader among samples conditioned on the label / among the others:", "",
                  "| label | " + " | ".join(readers) + " |", "|---|" + "---:|" * len(readers)]
        for label, row in split:
            cells = []
            for reader in readers:
                by = row["measured_by_condition"].get(reader)
                cells.append("—" if by is None else
                             f"{_pct(by['conditioned_on_label'])} / {_pct(by['not_conditioned_on_label'])}")
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", f"{NO_FINDING} is measured by the report labeler only. {summary['caveat']}", ""]
    return "\n".join(lines)


def write_summary(out: str | os.PathLike) -> tuple[Path, Path]:
    """Write ``summary.json`` and ``summary.md`` into an export folder; returns their paths."""
    root = Path(out)
    summary = prevalence_summary(root)
    json_path, md_path = root / SUMMARY_JSON, root / SUMMARY_MD
    json_path.write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    md_path.write_text(format_markdown(summary), encoding="utf-8")
    return json_path, md_path
