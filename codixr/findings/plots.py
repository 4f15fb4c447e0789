"""Bar charts of `Findings`, drawn with matplotlib's object API (Agg canvas, no pyplot state)."""

from __future__ import annotations

import textwrap
from typing import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

from codixr.findings.result import MIN_VALIDATION_AUROC, NOT_VALIDATED, POSITIVE, Findings
from codixr.modality import PATHOLOGIES

POSITIVE_COLOR = "#c0392b"
NEGATIVE_COLOR = "#5d8aa8"
NOT_VALIDATED_COLOR = "#c8c8c8"
THRESHOLD_COLOR = "#222222"


def findings_chart(findings: Findings | Sequence[Findings], width: float = 4.2) -> Figure:
    """Horizontal bars per pathology for one or several readings, side by side.

    Bars are red at or above the reader's threshold (drawn as a black tick), blue below, for pathologies the
    reader validated; each score is labelled with its validation AUROC. A pathology that was not validated
    (AUROC below `MIN_VALIDATION_AUROC`, or none on record) gets a grey bar, no threshold tick and the words
    "not validated"; one the reader does not assess reads "not assessed" instead of a bar; an unavailable
    reading shows its message. The reader (`Findings.source`) titles each panel.
    """
    readings = [findings] if isinstance(findings, Findings) else list(findings)
    if not readings:
        raise ValueError("findings_chart needs at least one Findings.")
    fig = Figure(figsize=(1.9 + width * len(readings), 4.6), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(readings), sharey=True, squeeze=False)[0]
    rows = np.arange(len(PATHOLOGIES))[::-1]  # first pathology on top
    for ax, reading in zip(axes, readings):
        _draw(ax, reading, rows)
    axes[0].set_yticks(rows, PATHOLOGIES)
    return fig


def _draw(ax, reading: Findings, rows: np.ndarray) -> None:
    ax.set_title("\n".join(textwrap.wrap(reading.source, 38)), fontsize=9)
    ax.set_xlim(0, 1)
    ax.set_ylim(-0.7, len(PATHOLOGIES) - 0.3)
    ax.set_xlabel(f"score (calibrated: threshold marked); grey: not validated (AUROC < {MIN_VALIDATION_AUROC:g})",
                  fontsize=7)
    ax.tick_params(labelsize=8)
    if not reading.available:
        ax.set_xticks([])
        ax.set_xlabel("")
        ax.text(0.5, rows.mean(), "\n".join(textwrap.wrap(reading.message, 42)), ha="center", va="center",
                fontsize=8, color="#555555")
        return
    for row, name in zip(rows, PATHOLOGIES):
        score, threshold, status = reading.scores[name], reading.thresholds[name], reading.status(name)
        if score is None:
            ax.text(0.02, row, "not assessed", va="center", fontsize=8, style="italic", color="#777777")
            continue
        auroc = reading.validation_auroc[name]
        auroc_label = "AUROC –" if auroc is None else f"AUROC {auroc:.3f}"
        if status == NOT_VALIDATED:
            ax.barh(row, score, height=0.7, color=NOT_VALIDATED_COLOR, hatch="//", edgecolor="#999999")
            ax.text(min(score + 0.02, 0.5), row, f"{score:.2f} not validated ({auroc_label})", va="center",
                    fontsize=7, style="italic", color="#555555")
            continue
        ax.barh(row, score, height=0.7, color=POSITIVE_COLOR if status == POSITIVE else NEGATIVE_COLOR)
        ax.text(min(score + 0.02, 0.62), row, f"{score:.2f} ({auroc_label})", va="center", fontsize=7)
        if threshold is not None:
            ax.plot([threshold, threshold], [row - 0.42, row + 0.42], color=THRESHOLD_COLOR, linewidth=1.5)


def figure_to_image(fig: Figure, dpi: int | None = None) -> Image.Image:
    """Render a matplotlib figure to an RGB PIL image (on an Agg canvas, whatever the global backend)."""
    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    if dpi is not None:
        fig.set_dpi(dpi)
    canvas.draw()
    return Image.fromarray(np.asarray(canvas.buffer_rgba())).convert("RGB")
