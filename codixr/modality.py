"""The three modalities of CoDi-XR and the label vocabulary of the paper (Table I)."""

from __future__ import annotations

import enum
from typing import Iterable


class Modality(str, enum.Enum):
    """A modality of a chest X-ray study: frontal view (F), lateral view (L) or report impression (R)."""

    FRONTAL = "frontal"
    LATERAL = "lateral"
    REPORT = "report"

    @property
    def is_image(self) -> bool:
        return self is not Modality.REPORT

    @property
    def letter(self) -> str:
        """The paper's one-letter name (F, L, R). The paper also writes T for the report."""
        return {"frontal": "F", "lateral": "L", "report": "R"}[self.value]

    @classmethod
    def parse(cls, value: "Modality | str") -> "Modality":
        """Accept a Modality, its value ("frontal"), its letter ("F", "L", "R"/"T") or a common alias."""
        if isinstance(value, Modality):
            return value
        key = str(value).strip().lower()
        aliases = {
            "f": cls.FRONTAL, "frontal": cls.FRONTAL, "pa": cls.FRONTAL, "ap": cls.FRONTAL,
            "l": cls.LATERAL, "lateral": cls.LATERAL, "lat": cls.LATERAL, "ll": cls.LATERAL,
            "r": cls.REPORT, "t": cls.REPORT, "report": cls.REPORT, "text": cls.REPORT,
            "impression": cls.REPORT,
        }
        if key not in aliases:
            from codixr.errors import UnknownModalityError

            raise UnknownModalityError(
                f"Unknown modality {value!r}: use one of frontal, lateral or report (or F, L, R)."
            )
        return aliases[key]

    @classmethod
    def parse_many(cls, values: "Iterable[Modality | str] | Modality | str") -> tuple["Modality", ...]:
        """Parse one or several modalities into a tuple in canonical order (F, L, R), without duplicates."""
        if isinstance(values, (str, Modality)):
            values = [v for v in str(values.value if isinstance(values, Modality) else values).replace("+", ",").split(",") if v.strip()]
        parsed = {cls.parse(v) for v in values}
        return tuple(m for m in cls if m in parsed)


# The ten pathologies of the paper's evaluation (Table I), in the paper's order.
PATHOLOGIES: tuple[str, ...] = (
    "Atelectasis",
    "Cardiomegaly",
    "Consolidation",
    "Edema",
    "Enlarged Cardiomediastinum",
    "Lung Lesion",
    "Lung Opacity",
    "Pleural Effusion",
    "Pneumonia",
    "Pneumothorax",
)

NO_FINDING = "No Finding"

# Labels a user may give as a generation condition (EMIXER-style label conditioning).
CONDITION_LABELS: tuple[str, ...] = PATHOLOGIES + (NO_FINDING,)

# The paper's abbreviations, for tables laid out like Tables I-V.
ABBREVIATIONS: dict[str, str] = {
    "Atelectasis": "Atl.",
    "Cardiomegaly": "Cgml.",
    "Consolidation": "Cnsl.",
    "Edema": "Edm.",
    "Enlarged Cardiomediastinum": "Enl.",
    "Lung Lesion": "Les.",
    "Lung Opacity": "Opc.",
    "Pleural Effusion": "Eff.",
    "Pneumonia": "Pnm.",
    "Pneumothorax": "Ptx.",
    "No Finding": "No F.",
}


def parse_labels(labels: "Iterable[str] | str | None") -> tuple[str, ...]:
    """Normalise user-given condition labels to canonical names from CONDITION_LABELS (case-insensitive).

    Raises UnknownLabelError naming the accepted labels when one is not recognised.
    """
    if labels is None:
        return ()
    if isinstance(labels, str):
        labels = [p for p in labels.split(",")]
    lookup = {name.lower(): name for name in CONDITION_LABELS}
    lookup.update({abbr.lower().rstrip("."): name for name, abbr in ABBREVIATIONS.items()})
    lookup.update({"effusion": "Pleural Effusion", "opacity": "Lung Opacity", "lesion": "Lung Lesion",
                   "normal": NO_FINDING, "no findings": NO_FINDING})
    out: list[str] = []
    for raw in labels:
        key = str(raw).strip().lower().rstrip(".")
        if not key:
            continue
        if key not in lookup:
            from codixr.errors import UnknownLabelError

            raise UnknownLabelError(
                f"Unknown diagnosis label {raw!r}. Accepted labels: {', '.join(CONDITION_LABELS)}."
            )
        if lookup[key] not in out:
            out.append(lookup[key])
    return tuple(out)
