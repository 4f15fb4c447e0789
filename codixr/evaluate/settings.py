"""Generation settings of the evaluation, written as in the paper: "T→F", "L+T→F", "F+L→T", ...

Letters: F = frontal view, L = lateral view, T = report impression (the paper's T; ``R`` is accepted
too), ``labels`` = diagnosis labels as the condition. ``->`` may be typed instead of ``→``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from codixr.errors import InputError, OverlappingModalitiesError
from codixr.modality import Modality

ARROW = "→"
LABELS = "labels"
LETTERS: dict[Modality, str] = {Modality.FRONTAL: "F", Modality.LATERAL: "L", Modality.REPORT: "T"}
_LABEL_TOKENS = frozenset({"labels", "label", "lab", "y"})

# The settings of the paper's Tables II-V, in the tables' order.
PAPER_SETTINGS: tuple[str, ...] = ("T→F", "L→F", "L+T→F", "T→L", "F→L", "F+T→L", "F→T", "L→T", "F+L→T")
# Beyond the paper: joint generation of both views (cross-view consistency) and labels -> report
# (the one report setting with reference impressions when no image has an impression).
EXTRA_SETTINGS: tuple[str, ...] = ("T→F+L", "labels→T")
DEFAULT_SETTINGS: tuple[str, ...] = PAPER_SETTINGS + EXTRA_SETTINGS


@dataclass(frozen=True)
class Setting:
    """One generation setting: the modalities given (``inputs``, plus ``labels``) and those generated (``outputs``)."""

    inputs: tuple[Modality, ...]
    outputs: tuple[Modality, ...]
    labels: bool = False

    @property
    def name(self) -> str:
        """The paper's notation, e.g. ``"L+T→F"``."""
        left = [LETTERS[m] for m in self.inputs] + ([LABELS] if self.labels else [])
        return "+".join(left) + ARROW + "+".join(LETTERS[m] for m in self.outputs)

    @property
    def slug(self) -> str:
        """A file-name-safe form of the name, e.g. ``"L+T-to-F"``."""
        return self.name.replace(ARROW, "-to-")

    @property
    def image_inputs(self) -> tuple[Modality, ...]:
        return tuple(m for m in self.inputs if m.is_image)

    @property
    def image_outputs(self) -> tuple[Modality, ...]:
        return tuple(m for m in self.outputs if m.is_image)

    @property
    def makes_report(self) -> bool:
        return Modality.REPORT in self.outputs

    @property
    def reads_report(self) -> bool:
        return Modality.REPORT in self.inputs

    def __str__(self) -> str:
        return self.name


def parse_setting(text: str) -> Setting:
    """Parse ``"L+T->F"``, ``"F+L→R"``, ``"labels->T"`` ... into a :class:`Setting`.

    Raises InputError for a malformed setting, UnknownModalityError for an unknown letter and
    OverlappingModalitiesError when a modality is both given and generated.
    """
    normalized = str(text).strip().replace("->", ARROW).replace("=>", ARROW)
    if normalized.count(ARROW) != 1:
        raise InputError(f"Setting {text!r} must read INPUTS→OUTPUTS (or INPUTS->OUTPUTS), e.g. T->F or L+T->F.")
    left, right = ([t.strip() for t in side.split("+") if t.strip()] for side in normalized.split(ARROW))
    labels = any(t.lower() in _LABEL_TOKENS for t in left)
    inputs = Modality.parse_many([t for t in left if t.lower() not in _LABEL_TOKENS])
    if any(t.lower() in _LABEL_TOKENS for t in right):
        raise InputError(f"Setting {text!r}: diagnosis labels can be a condition but not an output.")
    outputs = Modality.parse_many(right)
    if not (inputs or labels) or not outputs:
        raise InputError(f"Setting {text!r} needs at least one input and one output, e.g. T->F.")
    overlap = [LETTERS[m] for m in outputs if m in inputs]
    if overlap:
        raise OverlappingModalitiesError(f"Setting {text!r}: {', '.join(overlap)} is both given and generated.")
    return Setting(inputs, outputs, labels)


def parse_settings(values: str | Iterable[str]) -> tuple[Setting, ...]:
    """Parse a comma-separated string (or a list) of settings; duplicates are dropped, order is kept."""
    items = values.split(",") if isinstance(values, str) else list(values)
    out: list[Setting] = []
    for item in items:
        if str(item).strip():
            setting = parse_setting(item)
            if setting not in out:
                out.append(setting)
    if not out:
        raise InputError(f"No setting given; choose from {', '.join(DEFAULT_SETTINGS)}.")
    return tuple(out)
