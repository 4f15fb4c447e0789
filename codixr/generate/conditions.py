"""What each synthetic sample is generated from: drawn labels, lines of a reports file, or real studies.

Label-conditioned synthesis takes a prevalence spec such as ``"Pleural Effusion=0.3,Pneumothorax=10%"``.
Each label of the spec is drawn independently of the others (a sample may have several); a sample that
draws none of them is conditioned on "No Finding", so "No Finding" is the remainder and cannot be given.
Two modes, both seeded by the export's base seed:

* ``exact`` (default): label L is given to exactly ``round(p_L * n)`` of the n samples, chosen by a seeded
  permutation per label. The mix is exactly the one asked for, and depends on n (an export cannot be
  extended to a larger n in this mode).
* ``bernoulli``: sample i draws each label with probability p_L from its own generator (base seed, i), so
  the mix is p_L on average and sample i's labels do not depend on n (an export can be extended).
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from codixr.errors import InputError
from codixr.modality import CONDITION_LABELS, NO_FINDING, Modality, parse_labels

logger = logging.getLogger(__name__)

LABEL_MODES = ("exact", "bernoulli")
STUDY_INPUTS = ("frontal", "lateral", "report", "labels")
REPORT_COLUMNS = ("impression", "report", "text")  # looked for, in this order, in a CSV reports file


@dataclass(frozen=True)
class Condition:
    """The inputs of one sample.

    Attributes:
        kind: "labels" (drawn from a prevalence spec), "report" (a line of a reports file) or "study" (a real study).
        labels: condition labels (canonical names) when labels are an input.
        report: the impression when a report is an input.
        frontal, lateral: image paths when real images are inputs (never written to the manifest).
        study_id, study_source: the real study a "study" sample is conditioned on.
        row: the position of the report in the reports file (0-based, blank lines not counted).
    """

    kind: str
    labels: tuple[str, ...] = ()
    report: str | None = None
    frontal: str | None = None
    lateral: str | None = None
    study_id: str | None = None
    study_source: str | None = None
    row: int | None = None

    @property
    def inputs(self) -> tuple[str, ...]:
        """The inputs given to the model, in the order frontal, lateral, report, labels."""
        given = {"frontal": self.frontal, "lateral": self.lateral, "report": self.report, "labels": self.labels}
        return tuple(name for name in STUDY_INPUTS if given[name])

    def to_record(self) -> dict[str, Any]:
        """The manifest's ``condition`` entry: labels, report text and study id, never image paths."""
        record: dict[str, Any] = {"kind": self.kind, "inputs": list(self.inputs)}
        if self.labels:
            record["labels"] = list(self.labels)
        if self.report is not None:
            record["report"] = self.report
        if self.row is not None:
            record["row"] = self.row
        if self.study_id is not None:
            record["study_id"], record["study_source"] = self.study_id, self.study_source
        return record

    def describe(self) -> str:
        """A description without identifiers or text of a real study (for the DICOM ImageComments)."""
        if self.kind == "labels":
            return f"labels: {', '.join(self.labels)}"
        if self.kind == "report":
            return "a report impression"
        return f"a real study's {' and '.join(self.inputs)}"


# ----------------------------------------------------------------------------------------------- labels
def parse_prevalence(spec: str) -> dict[str, float]:
    """``"Pleural Effusion=0.3,Pneumothorax=10%"`` -> ``{"Pleural Effusion": 0.3, "Pneumothorax": 0.1}``.

    Names go through :func:`codixr.modality.parse_labels` (case-insensitive, abbreviations such as "Eff."
    accepted); values are fractions in [0, 1] or percentages. "No Finding" is the remainder and cannot be given.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise InputError('Give a prevalence spec such as "Pleural Effusion=0.3,Pneumothorax=0.1".')
    out: dict[str, float] = {}
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        name, sep, value = part.rpartition("=") if "=" in part else part.rpartition(":")
        if not sep or not name.strip():
            raise InputError(f"Cannot read {part!r} in the prevalence spec: write LABEL=FRACTION, e.g. "
                             "\"Pleural Effusion=0.3\" or \"Pneumothorax=10%\".")
        (label,) = parse_labels([name])
        if label == NO_FINDING:
            raise InputError('"No Finding" is what remains when a sample draws none of the labels; leave it out '
                             "of the spec.")
        if label in out:
            raise InputError(f"{label} is given twice in the prevalence spec.")
        text = value.strip()
        try:
            p = float(text[:-1]) / 100.0 if text.endswith("%") else float(text)
        except ValueError:
            raise InputError(f"The prevalence of {label} must be a number (0.3 or 30%), not {text!r}.") from None
        if not 0.0 <= p <= 1.0:
            raise InputError(f"The prevalence of {label} must lie between 0 and 1 (0% and 100%), not {text}.")
        out[label] = p
    if not out:
        raise InputError('The prevalence spec names no label; write e.g. "Pleural Effusion=0.3".')
    return out


def assign_labels(prevalence: dict[str, float], n: int, seed: int, mode: str = "exact") -> list[tuple[str, ...]]:
    """The condition labels of each of n samples for a prevalence spec (see the module docstring for the modes).

    Every sample gets its labels in CONDITION_LABELS order, or ``("No Finding",)`` when it drew none.
    """
    if mode not in LABEL_MODES:
        raise InputError(f"Unknown label mode {mode!r}: use one of {', '.join(LABEL_MODES)}.")
    names = [name for name in CONDITION_LABELS if name in prevalence]
    chosen = np.zeros((n, len(names)), dtype=bool)
    for j, name in enumerate(names):
        stream = CONDITION_LABELS.index(name)
        if mode == "exact":
            k = int(round(prevalence[name] * n))
            chosen[np.random.default_rng([seed, stream]).permutation(n)[:k], j] = True
    if mode == "bernoulli":
        p = np.array([prevalence[name] for name in names])
        for i in range(n):
            chosen[i] = np.random.default_rng([seed, len(CONDITION_LABELS), i]).random(len(names)) < p
    return [tuple(name for j, name in enumerate(names) if row[j]) or (NO_FINDING,) for row in chosen]


def label_conditions(spec: str, n: int, seed: int, mode: str = "exact") -> tuple[list[Condition], dict[str, Any]]:
    """Conditions and the ``dataset.json`` description of a label-conditioned export."""
    prevalence = parse_prevalence(spec)
    labels = assign_labels(prevalence, n, seed, mode)
    info = {"kind": "labels", "prevalence": prevalence, "mode": mode, "spec_labels": list(prevalence)}
    if mode == "exact":
        info["n"] = n  # the assignment depends on n
    return [Condition("labels", labels=ls) for ls in labels], info


# ----------------------------------------------------------------------------------------------- reports
def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_reports(path: str | os.PathLike, column: str | None = None) -> list[str]:
    """The impressions of a reports file: one per line (blank lines skipped), or one per row of a CSV
    (``.csv`` / ``.csv.gz``) taken from ``column`` (default: the first of impression, report, text)."""
    from codixr.data.tables import read_rows

    path = Path(path)
    if not path.is_file():
        raise InputError(f"The reports file {path} does not exist.")
    if path.name.lower().endswith((".csv", ".csv.gz")):
        rows = list(read_rows(path))
        columns = list(rows[0]) if rows else []
        name = column or next((c for c in REPORT_COLUMNS if c in columns), None)
        if name is None or name not in columns:
            raise InputError(f"{path.name} has no column {column or ' / '.join(REPORT_COLUMNS)}; give the column "
                             f"with --report-column (columns: {', '.join(columns)[:300]}).")
        reports = [" ".join(row[name].split()) for row in rows]
    else:
        if column:
            raise InputError(f"--report-column applies to CSV files; {path.name} is read as one impression per line.")
        reports = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    reports = [r for r in reports if r]
    if not reports:
        raise InputError(f"{path} holds no report text.")
    return reports


def report_conditions(path: str | os.PathLike, n: int | None, column: str | None = None
                      ) -> tuple[list[Condition], dict[str, Any]]:
    """Conditions for ``--from-reports``: sample i uses report ``i % len(reports)`` (n defaults to the count)."""
    reports = read_reports(path, column)
    n = len(reports) if n is None else n
    info = {"kind": "reports", "file": str(Path(path).resolve()), "sha256": _sha256(Path(path)),
            "column": column, "reports": len(reports)}
    return [Condition("report", report=reports[i % len(reports)], row=i % len(reports)) for i in range(n)], info


# ----------------------------------------------------------------------------------------------- studies
def parse_study_inputs(value: str | Sequence[str]) -> tuple[str, ...]:
    """``"frontal,report"`` -> ("frontal", "report"); accepts F/L/R letters and "labels"."""
    parts = [p.strip() for p in (value.split(",") if isinstance(value, str) else value) if p.strip()]
    out = []
    for part in parts:
        name = "labels" if part.lower() in ("labels", "label") else Modality.parse(part).value
        if name not in out:
            out.append(name)
    if not out:
        raise InputError("Say what to condition on: frontal, lateral, report and/or labels.")
    return tuple(name for name in STUDY_INPUTS if name in out)


def study_conditions(path: str | os.PathLike, n: int | None, inputs: Sequence[str] = ("frontal",),
                     kind: str = "auto", split: str | None = None) -> tuple[list[Condition], dict[str, Any]]:
    """Conditions for ``--from-studies``: the real studies of a dataset folder read with ``codixr.data``.

    Only studies that have every input are used (the first image of a view; the impression, not other text;
    labels = the study's positive labels). Sample i uses eligible study ``i % count``; n defaults to the count.
    """
    from codixr.data.summary import detect_kind, load_dataset

    kind = detect_kind(path) if kind == "auto" else kind
    dataset = load_dataset(path, kind)
    if split:
        dataset = dataset.split(split)
    conditions = []
    for study in dataset:
        positives = tuple(name for name in CONDITION_LABELS if study.labels.get(name) == 1.0)
        have = {"frontal": bool(study.frontal), "lateral": bool(study.lateral), "report": bool(study.impression),
                "labels": bool(positives)}
        if all(have[name] for name in inputs):
            conditions.append(Condition(
                "study", labels=positives if "labels" in inputs else (),
                report=study.impression if "report" in inputs else None,
                frontal=study.frontal[0].path if "frontal" in inputs else None,
                lateral=study.lateral[0].path if "lateral" in inputs else None,
                study_id=study.study_id, study_source=study.source))
    if not conditions:
        need = {"frontal": "a frontal image", "lateral": "a lateral image", "report": "an impression",
                "labels": "a positive label"}
        raise InputError(f"None of the {len(dataset)} studies in {path} ({kind}{', split ' + split if split else ''}) "
                         f"has {' and '.join(need[i] for i in inputs)}; condition on other inputs (--condition-on).")
    logger.info("%d of %d studies have %s", len(conditions), len(dataset), " + ".join(inputs))
    n = len(conditions) if n is None else n
    info = {"kind": "studies", "dir": str(Path(path).resolve()), "dataset_kind": kind, "inputs": list(inputs),
            "split": split, "studies": len(conditions)}
    return [conditions[i % len(conditions)] for i in range(n)], info


def batch_inputs(conditions: Sequence[Condition]) -> dict[str, list]:
    """Pipeline keyword arguments (lists, one entry per sample) for a batch of conditions with the same inputs."""
    first = conditions[0].inputs
    if any(c.inputs != first for c in conditions):
        raise InputError("All samples of a batch must have the same inputs.")
    return {name: [list(c.labels) if name == "labels" else getattr(c, name) for c in conditions] for name in first}
