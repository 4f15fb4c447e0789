"""Findings for every image and report the app shows, given or generated, and the keypatch overlay seam.

Images are read by the findings classifier (torchxrayvision DenseNet when its weights are installed) and by the
model's own zero-shot reading, each labelled with its source; reports by the rule-based labeler
(:mod:`codixr.metrics.labeler`). Keypatch overlays come from ``codixr.findings.keypatches``.

Every image score is shown with the reader's validation AUROC beside it; a pathology the reader did not
validate (AUROC below ``MIN_VALIDATION_AUROC`` or none on record) reads "not validated", with no positive or
negative call, in the table, the chart and the JSON (``Findings.status``).
"""

from __future__ import annotations

import dataclasses
import logging
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
from PIL import Image

from codixr.errors import CoDiXRError
from codixr.findings.result import NOT_ASSESSED, NOT_VALIDATED, POSITIVE
from codixr.modality import NO_FINDING, PATHOLOGIES

logger = logging.getLogger(__name__)

LABELER_SOURCE = "rule-based report labeler (CheXpert-style)"
_LABEL_WORDS = {1: "positive", 0: "negative", -1: "uncertain", None: "not mentioned"}


@dataclass
class ItemFindings:
    """The findings on one item (an image or a report) the app shows.

    Attributes:
        name: how the app calls the item, e.g. "Frontal (given)" or "Report (synthetic)".
        modality: "frontal", "lateral" or "report".
        readings: for images, the classifier's and the zero-shot ``Findings`` (unavailable ones included).
        labels: for reports, the labeler's {label: 1/0/-1/None}.
    """

    name: str
    modality: str
    readings: list = field(default_factory=list)
    labels: dict[str, int | None] | None = None

    @property
    def primary(self):
        """The reading the item's one-word statuses come from: the classifier, else the zero-shot reading."""
        return next((r for r in self.readings if r.available), None)

    @property
    def reader(self) -> str:
        """Which reader the statuses come from (for table headers)."""
        if self.labels is not None:
            return "labeler"
        primary = self.primary
        if primary is None:
            return "no reader available"
        return "zero-shot" if "zero-shot" in primary.source else "classifier"

    def status(self, pathology: str) -> str | None:
        """"positive", "negative", "uncertain", "not mentioned" or "not validated"; None when no reader assesses it."""
        if self.labels is not None:
            return _LABEL_WORDS[self.labels.get(pathology)]
        primary = self.primary
        if primary is None:
            return None
        status = primary.status(pathology)
        return None if status == NOT_ASSESSED else status

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "modality": self.modality}
        if self.labels is not None:
            out["labeler"] = {"source": LABELER_SOURCE, "labels": dict(self.labels)}
        else:
            out["readings"] = [r.to_dict() for r in self.readings]
        return out


def image_findings(name: str, modality: str, image: np.ndarray | Image.Image, pipe: Any = None) -> ItemFindings:
    """Classifier and zero-shot findings of one X-ray (array in [0, 1] or 8-bit PIL image)."""
    from codixr.findings import classify_all

    both = classify_all(_unit_array(image), pipe)
    return ItemFindings(name, modality, readings=[r for r in (both["classifier"], both["zero_shot"]) if r is not None])


def report_findings(name: str, text: str) -> ItemFindings:
    """The labeler's findings of one impression."""
    from codixr.metrics.labeler import label_report

    return ItemFindings(name, "report", labels=label_report(text))


def _unit_array(image: np.ndarray | Image.Image) -> np.ndarray:
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("L"), dtype=np.float32) / 255.0
    return np.asarray(image, dtype=np.float32)


def findings_table(items: Sequence[ItemFindings]) -> tuple[list[str], list[list[str]]]:
    """(headers, rows) for a table of every item's findings: one row per pathology, one column per reading."""
    columns: list[tuple[str, ItemFindings, Callable[[str], str]]] = []
    for item in items:
        if item.labels is not None:
            columns.append((f"{item.name} · labeler", item, lambda p, item=item: _LABEL_WORDS[item.labels.get(p)]))
        for reading in item.readings:
            if reading.available:
                reader = "zero-shot" if "zero-shot" in reading.source else "classifier"
                columns.append((f"{item.name} · {reader}", item, lambda p, r=reading: _score_cell(r, p)))
    rows = [[p, *(cell(p) for _, _, cell in columns)] for p in PATHOLOGIES]
    if any(item.labels is not None for _, item, _ in columns):  # the labeler also reads "No Finding"
        rows.append([NO_FINDING, *(_LABEL_WORDS[item.labels.get(NO_FINDING)] if item.labels is not None else ""
                                   for _, item, _ in columns)])
    return ["Pathology", *(name for name, _, _ in columns)], rows


def _score_cell(reading, pathology: str) -> str:
    """E.g. "0.71 positive (validation AUROC 0.845)", "0.62 not validated (validation AUROC 0.505)"."""
    score, status = reading.scores[pathology], reading.status(pathology)
    if score is None:
        return NOT_ASSESSED
    return f"{score:.2f} {status} ({auroc_text(reading.validation_auroc[pathology])})"


def auroc_text(auroc: float | None) -> str:
    """The validation AUROC as shown beside a score."""
    return "no validation AUROC" if auroc is None else f"validation AUROC {auroc:.3f}"


def unavailable_notes(items: Sequence[ItemFindings]) -> list[str]:
    """One short note per reader that could not run (its full message stays in the findings JSON)."""
    notes: list[str] = []
    for item in items:
        for reading in item.readings:
            first = re.split(r"(?<=\.)\s", reading.message.strip(), maxsplit=1)[0] if reading.message else ""
            note = f"{first} Findings from it are not shown (details in the findings JSON)."
            if not reading.available and first and note not in notes:
                notes.append(note)
    return notes


def findings_chart_image(item: ItemFindings) -> Image.Image | None:
    """A bar chart of an image's available readings (a panel per reader), or None (a report, or no reader)."""
    readings = [r for r in item.readings if r.available]
    if not readings:
        return None
    from codixr.findings.plots import figure_to_image, findings_chart

    fig = findings_chart(readings)
    fig.suptitle(item.name, fontsize=10)
    return figure_to_image(fig, dpi=80)


def comparison_chart_image(real: ItemFindings, synthetic: ItemFindings) -> Image.Image | None:
    """Real and synthetic readings side by side in one chart (images with an available reader only)."""
    panels = [dataclasses.replace(r, source=f"{item.name}: {r.source}")
              for item in (real, synthetic) for r in item.readings if r.available]
    if not panels:
        return None
    from codixr.findings.plots import figure_to_image, findings_chart

    return figure_to_image(findings_chart(panels), dpi=80)


def agreement_table(real: ItemFindings, synthetic: ItemFindings) -> tuple[list[str], list[list[str]], str]:
    """Where the real and the synthetic item agree: (headers, rows, one-line summary).

    As in the paper's label metrics (``codixr.metrics`` defaults), "uncertain" and "not mentioned" count as not
    positive; a pathology that either side's reader does not assess, or did not validate, is not compared.
    """
    rows, agree, compared = [], 0, 0
    for p in PATHOLOGIES:
        a, b = real.status(p), synthetic.status(p)
        if a is None or b is None or NOT_VALIDATED in (a, b):
            verdict = "not compared"
        else:
            compared += 1
            same = (a == POSITIVE) == (b == POSITIVE)
            agree += same
            verdict = "agree" if same else "DIFFER"
        rows.append([p, a or "not assessed", b or "not assessed", verdict])
    headers = ["Pathology", f"{real.name} ({real.reader})", f"{synthetic.name} ({synthetic.reader})", "Agreement"]
    summary = (f"Real and synthetic agree on **{agree} of {compared}** pathologies compared." if compared else
               "No pathology could be compared: no findings reader is available for these items.")
    return headers, rows, summary


def report_highlights(text: str) -> list[tuple[str, str | None]]:
    """The impression split into spans for ``gr.HighlightedText``: each finding the labeler reads, with its status."""
    from codixr.metrics.labeler import ReportLabeler

    spans: list[tuple[int, int, str]] = []
    for mention in ReportLabeler().mentions(text):
        if mention.label == "other":
            continue
        category = NO_FINDING if mention.label == NO_FINDING else f"{mention.label}: {_LABEL_WORDS[mention.status]}"
        pattern = r"\s+".join(re.escape(word) for word in mention.text.split())
        for match in re.finditer(pattern, text, flags=re.IGNORECASE):
            if not any(match.start() < e and s < match.end() for s, e, _ in spans):
                spans.append((match.start(), match.end(), category))
                break
    out: list[tuple[str, str | None]] = []
    position = 0
    for start, end, category in sorted(spans):
        if start > position:
            out.append((text[position:start], None))
        out.append((text[start:end], category))
        position = end
    if position < len(text):
        out.append((text[position:], None))
    return out


# --------------------------------------------------------------------------------------------- keypatches
@dataclass(frozen=True)
class KeypatchView:
    """A keypatch overlay for one image, or the note that says why there is none."""

    overlay: Image.Image | None = None
    keywords: tuple[tuple[str, float], ...] = ()
    highlights: tuple[tuple[str, str | None], ...] = ()
    note: str = ""


def keypatch_view(pipe: Any, image: np.ndarray | Image.Image, report: str | None = None) -> KeypatchView:
    """The keypatch overlay of ``image`` (with keywords and, given ``report``, its highlighted spans)."""
    from codixr.findings import keypatches

    try:
        result = keypatches(pipe, image, report=report)
    except CoDiXRError as exc:
        return KeypatchView(note=f"No keypatch overlay: {exc}")
    return KeypatchView(overlay=result.overlay, keywords=tuple((str(w), float(s)) for w, s in result.keywords),
                        highlights=tuple(result.highlights or ()))
