"""Writing the evaluation: ``results.json``, ``results.md`` (tables laid out like the paper's Tables II-V) and plots."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import PIL.Image
import PIL.ImageDraw

from codixr.evaluate.scoring import BACKBONES, READER_THRESHOLD
from codixr.modality import ABBREVIATIONS, CONDITION_LABELS, PATHOLOGIES

AVERAGES = ("micro", "macro", "weighted")
GRID_COLUMNS = 8
UNDEFINED = "–"


# ---------------------------------------------------------------------------------------------- JSON


def _plain(value: Any) -> Any:
    """JSON-ready: numpy scalars to Python, NaN/inf to None, tuples to lists, keys to strings."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(results: dict[str, Any], path: str | os.PathLike) -> Path:
    path = Path(path)
    path.write_text(json.dumps(_plain(results), indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------- plots


def sample_grid(real: Sequence[np.ndarray], generated: Sequence[np.ndarray], titles: tuple[str, str],
                path: str | os.PathLike) -> Path:
    """Two rows of (H, W) images in [0, 1], real above generated, each row with its title, as one PNG."""
    return image_rows([(titles[0], real), (titles[1], generated)], path)


def image_rows(rows: Sequence[tuple[str, Sequence[np.ndarray]]], path: str | os.PathLike,
               columns: int = GRID_COLUMNS, size: tuple[int, int] | None = None) -> Path:
    """Rows of (H, W) images in [0, 1], each row under its title, as one greyscale PNG.

    Every tile is resized to ``size`` (H, W); by default the size of the first image of the last row (the
    generated images, when real ones are shown above them). At most ``columns`` images per row.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [(title, list(images)[:columns]) for title, images in rows]
    if size is None:
        size = next(images[0].shape for _, images in reversed(rows) if images)
    h, w = size
    band = 14
    width = max(max(len(images) for _, images in rows) * w, 8 * max(len(title) for title, _ in rows))
    grid = PIL.Image.new("L", (width, len(rows) * (h + band)), color=0)
    draw = PIL.ImageDraw.Draw(grid)
    for r, (title, images) in enumerate(rows):
        y = r * (h + band)
        draw.text((2, y + 1), title, fill=255)
        for i, img in enumerate(images):
            tile = PIL.Image.fromarray((np.clip(img, 0, 1) * 255).round().astype(np.uint8))
            grid.paste(tile.resize((w, h)) if tile.size != (w, h) else tile, (i * w, y + band))
    grid.save(path, optimize=True)
    return path


def auroc_bars(rows: dict[str, dict[str, Any]], title: str, path: str | os.PathLike) -> Path | None:
    """Grouped bars of per-pathology AUROC, one group per pathology, one bar per row (setting); None if nothing is defined."""
    from matplotlib.figure import Figure

    series = {name: r for name, r in rows.items() if r.get("available") and r.get("auroc")
              and any(r["auroc"].get(p) is not None for p in PATHOLOGIES)}
    if not series:
        return None
    fig = Figure(figsize=(11, 4), dpi=100)
    ax = fig.add_subplot()
    x = np.arange(len(PATHOLOGIES))
    width = 0.8 / len(series)
    for k, (name, r) in enumerate(series.items()):
        values = [np.nan if r["auroc"].get(p) is None else r["auroc"][p] for p in PATHOLOGIES]
        ax.bar(x + (k - (len(series) - 1) / 2) * width, values, width, label=f"{name} (n={r['n']})")
    ax.axhline(0.5, color="grey", linewidth=0.8, linestyle="--")
    ax.set_xticks(x, [ABBREVIATIONS[p] for p in PATHOLOGIES])
    ax.set_ylim(0, 1)
    ax.set_ylabel("AUROC")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, ncol=2, loc="lower right")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


# ---------------------------------------------------------------------------------------------- Markdown


class _Notes:
    """Numbered reasons for "n/a" cells of one table."""

    def __init__(self) -> None:
        self.reasons: list[str] = []

    def na(self, entry: dict[str, Any]) -> str:
        reason = entry.get("reason", "not computed")
        if reason not in self.reasons:
            self.reasons.append(reason)
        return f"n/a [{self.reasons.index(reason) + 1}]"

    def lines(self) -> list[str]:
        return ["", *[f"[{i}] {r}  " for i, r in enumerate(self.reasons, 1)]] if self.reasons else []


def _num(value: Any, digits: int = 3) -> str:
    return UNDEFINED if value is None else f"{value:.{digits}f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], left: int = 1, left_last: int = 0) -> list[str]:
    """A Markdown table; the first ``left`` and the last ``left_last`` columns are text (left-aligned), the rest numbers."""
    width = len(header)
    align = ["---" if i < left or i >= width - left_last else "---:" for i in range(width)]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    return lines + ["| " + " | ".join(r) + " |" for r in rows]


def _settings_section(results: dict[str, Any]) -> list[str]:
    rows = [[name, s["pool"], str(s["n"]), str(s["available"]), s.get("text_kind") or "", s.get("note", "")]
            for name, s in results["settings"].items()]
    return ["### Settings and data", "",
            *_table(["Setting", "Conditions drawn from", "n evaluated", "n available", "given text", "note"], rows, 2, 2), ""]


def _fid_section(results: dict[str, Any]) -> list[str]:
    fid = results["fid"]
    names = results["meta"]["backbones"]
    notes = _Notes()
    rows = []
    for setting, views in fid.items():
        for view, cells in views.items():
            n_gen = n_real = ""
            values = []
            for name in names:
                cell = cells[name]
                if cell["available"]:
                    values.append(_num(cell["value"], 2))
                    n_gen, n_real = str(cell["n_generated"]), str(cell["n_real"])
                else:
                    values.append(notes.na(cell))
            rows.append([setting, view, *values, n_gen, n_real])
    header = ["Setting", "Output", *[f"FID · {BACKBONES[n][1]}" for n in names], "n generated", "n real"]
    return ["### Table II — FID (lower is better)", "",
            "FID between generated images and real images of the same view from the evaluation split (distribution "
            "level), in the feature space named in each column. FID from few images is biased upwards: compare only "
            "numbers with the same n and backbone. P_X is the evaluated model's own encoder, so its FID is not "
            "comparable across models.", "", *(_table(header, rows, 2) if rows else ["No image-generating setting."]),
            *notes.lines(), ""]


def _per_class_table(rows: dict[str, dict[str, Any]], metric: str, labels: Sequence[str], notes: _Notes) -> list[list[str]]:
    out = []
    for name, r in rows.items():
        if not r["available"]:
            out.append([name, *[notes.na(r)] * (len(labels) + len(AVERAGES)), ""])
            continue
        out.append([name, *[_num(r[metric].get(k), 2) for k in (*labels, *AVERAGES)], str(r["n"])])
    return out


def _classification_section(results: dict[str, Any]) -> list[str]:
    header_classes = [ABBREVIATIONS[p] for p in PATHOLOGIES]
    lines = ["### Table III — image factual correctness (AUROC and F1 of a reader on the images)", "",
             "Each image is read for the 10 pathologies; the ground truth is the label set of the item the image "
             "was generated from (report labels for T→, dataset labels for image inputs); \"Real Data\" rows read the "
             "real images of the evaluation split against their own labels. A class counts only where ground truth "
             f"exists (uncertain = none); F1 at score ≥ {READER_THRESHOLD}. {UNDEFINED} = undefined (no ground truth, "
             "or only one class present).", ""]
    for reader, block in results["classification"].items():
        lines += [f"#### Reader: {block['source']}", ""]
        if not block["available"]:
            lines += [f"n/a — {block['reason']}", ""]
            continue
        for metric in ("auroc", "f1"):
            notes = _Notes()
            body = _per_class_table(block["rows"], metric, PATHOLOGIES, notes)
            lines += [f"{metric.upper() if metric == 'auroc' else 'F1'} ({reader}):", "",
                      *_table(["", *header_classes, "Micro", "Macro", "Weighted", "n"], body), *notes.lines(), ""]
        support = [[name, *[(f"{r['support'][p]}/{r['n_samples'][p]}" if r["n_samples"][p] else UNDEFINED)
                            for p in PATHOLOGIES]]
                   for name, r in block["rows"].items() if r["available"]]
        if support:
            lines += ["Ground truth per class (positives / images with ground truth):", "",
                      *_table(["", *header_classes], support), ""]
    return lines


def _bleu_section(results: dict[str, Any]) -> list[str]:
    notes = _Notes()
    rows = []
    for setting, generators in results["bleu"].items():
        for name, r in generators.items():
            if r["available"]:
                rows.append([setting, name, *[_num(r[f"BLEU-{k}"]) for k in range(1, 5)], _num(r["ROUGE-L"]),
                             str(r["n"]), r["reference"]])
            else:
                rows.append([setting, name, *[notes.na(r)] * 5, "", ""])
    header = ["Setting", "Generator", "BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "ROUGE-L", "n", "reference"]
    return ["### Table IV — report quality (corpus BLEU-1..4, ROUGE-L; higher is better)", "",
            "sacrebleu corpus BLEU, 13a tokenisation after lowercasing, no smoothing, cumulative BLEU-n in [0, 1]; "
            "ROUGE-L = mean LCS F-measure. Baselines: the most frequent training impression for every case, and the "
            "training impression nearest to the condition in the model's shared space (P_X / P_R / label encoder).",
            "", *(_table(header, rows, 2, 1) if rows else ["No report-generating setting."]), *notes.lines(), ""]


def _label_f1_section(results: dict[str, Any]) -> list[str]:
    notes = _Notes()
    rows = []
    for setting, generators in results["report_labels"].items():
        for name, r in generators.items():
            if r["available"]:
                rows.append([setting, name, *[_num(r["f1"].get(k), 2) for k in (*CONDITION_LABELS, *AVERAGES)],
                             str(r["n"]), r["ground_truth"]])
            else:
                rows.append([setting, name, *[notes.na(r)] * (len(CONDITION_LABELS) + len(AVERAGES)), "", ""])
    header = ["Setting", "Generator", *[ABBREVIATIONS[c] for c in CONDITION_LABELS], "Micro", "Macro", "Weighted", "n",
              "ground truth"]
    return ["### Table V — report factual correctness (F1 of rule-based labeler labels)", "",
            "Generated reports are labelled by codixr's CheXpert-style rule-based labeler (positive = 1; negative, "
            f"uncertain and not mentioned = 0) and compared with the ground truth named per row. {UNDEFINED} = no "
            "ground truth for the class.", "",
            *(_table(header, rows, 2, 1) if rows else ["No report-generating setting."]), *notes.lines(), ""]


def _consistency_section(results: dict[str, Any]) -> list[str]:
    notes = _Notes()
    rows = []
    for setting, pairs in results["consistency"].items():
        for pair, cells in pairs.items():
            for reader, r in cells.items():
                if r["available"]:
                    rows.append([setting, pair, reader, _num(r["agreement"]["mean"]), _num(r["kappa"]["mean"]), str(r["n"])])
                else:
                    rows.append([setting, pair, reader, notes.na(r), notes.na(r), ""])
    return ["### Cross-modal consistency (beyond the paper)", "",
            "Agreement of the 10 pathology findings between two modalities of the same case, at least one generated: "
            f"images read by the reader (score ≥ {READER_THRESHOLD}), texts by the rule-based labeler. Mean over the "
            f"classes of the agreement rate and of Cohen's κ ({UNDEFINED}: κ undefined, a single value everywhere); "
            "per-class values are in results.json.", "",
            *(_table(["Setting", "Pair", "Reader", "mean agreement", "mean κ", "n"], rows, 3) if rows else ["Nothing to compare."]),
            *notes.lines(), ""]


def _retrieval_section(results: dict[str, Any]) -> list[str]:
    notes = _Notes()
    rows = []
    for name, r in results["retrieval"].items():
        if not r["available"]:
            rows.append([name, "", notes.na(r), "", "", "", ""])
            continue
        for direction in ("image_to_report", "report_to_image"):
            d = r[direction]
            rows.append([name, direction.replace("_", " "), _num(d["R@1"]), _num(d["R@5"]), _num(d["R@10"]),
                         f"{d['median_rank']:g}", str(d["n"])])
    return ["### Image–report retrieval in the shared space (AdaMatch-style)", "",
            "Cosine similarity of P_X and P_R embeddings; the correct match is the paired item, ranks count ties "
            "against the model. With n ≤ k, R@k is 1 by construction.", "",
            *_table(["Pairs", "Direction", "R@1", "R@5", "R@10", "median rank", "n"], rows, 2), *notes.lines(), ""]


def _plots_section(results: dict[str, Any]) -> list[str]:
    plots = results.get("plots", {})
    lines = ["### Plots", ""]
    for name, rel in plots.get("auroc", {}).items():
        lines.append(f"![AUROC per pathology, reader {name}]({rel})")
    for name, rel in plots.get("grids", {}).items():
        lines.append(f"![real vs generated, {name}]({rel})")
    if len(lines) == 2:
        lines.append("No plot (no defined AUROC and no generated image).")
    for note in plots.get("notes", []):
        lines.append(f"- {note}")
    return [*lines, ""]


def _short(status: str) -> str:
    """The first clause of an availability message (the full reason is in the table notes)."""
    return status.split(": ", 1)[0] if status.startswith("not available") else status


def _guidance(scale: float | None) -> str:
    return "(the package's default per output)" if scale is None else f"{scale:g}"


def write_markdown(results: dict[str, Any], path: str | os.PathLike) -> Path:
    """The Markdown report: header, settings, Tables II-V, consistency, retrieval, plots, following tables."""
    meta = results["meta"]
    gen = meta["generation"]
    lines = [
        "## CoDiXR evaluation report", "",
        f"- Model: `{meta['model']}` (fingerprint `{gen['model']}`)",
        f"- Data: `{meta['data']}` ({meta['kind']}, split `{meta['split']}`); " +
        "; ".join(f"{k}: {v}" for k, v in meta["data_sources"].items()),
        f"- Generation: {gen['steps']} steps, {gen['scheduler']}, guidance {_guidance(gen['guidance_scale'])}, seed {gen['seed']} "
        f"(batch starting at item i: seed + i), batch size {gen['batch_size']}, up to n = {meta['n']} per setting",
        "- Readers (Table III, consistency): " + "; ".join(f"{k}: {_short(v)}" for k, v in meta["readers"].items()),
        "- FID backbones (Table II): " + "; ".join(f"{BACKBONES[k][1]}: {_short(v)}" for k, v in meta["backbone_status"].items()),
        f"- Command: `{meta['command']}`",
        f"- Wall time: {meta['wall_time_s']:.1f} s on {meta['device']} (generation {meta['generation_time_s']:.1f} s); "
        f"codixr {meta['codixr_version']}, {meta['created']}", "",
    ]
    from codixr.evaluate.following import following_markdown

    for section in (_settings_section, _fid_section, _classification_section, _bleu_section, _label_f1_section,
                    _consistency_section, _retrieval_section, _plots_section):
        lines += section(results)
    lines += following_markdown(results.get("following", {}))
    path = Path(path)
    path.write_text("\n".join(lines), encoding="utf-8")
    return path

