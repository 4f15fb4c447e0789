"""The public chest X-ray sets kept in the shared data folder (see its README.md): covid-cxr,
rsna-pneumonia and nih-cxr14-64px, read as :class:`~codixr.data.records.Study` records.

- covid-cxr: images grouped into studies per patient and per day (``offset``, else a full ``date``);
  ``clinical_notes`` go to ``findings_text`` and ``impression`` stays ``None``: the notes are case
  descriptions from publications (history and findings mixed), not radiology impressions. Labels come
  from the diagnosis in ``finding`` (:data:`COVID_FINDING_LABELS`), not from reading the image.
  Licence, DOI and URL are kept per image (``ImageRef.extra``) and per study (``meta``).
- rsna-pneumonia: one frontal image per patient; ``target`` sets Lung Opacity and Pneumonia;
  ``meta["boxes"]`` lists the ``(x, y, w, h)`` boxes in stored-pixel coordinates.
- nih-cxr14-64px: one frontal 64x64 image per study; ``finding_labels`` mapped by :data:`NIH_LABELS`.

Splits are patient-disjoint within each set. RSNA images are themselves drawn from NIH ChestX-ray14
under new ids, so a patient may occur in both rsna-pneumonia and nih-cxr14-64px; no mapping between
the two id systems is available here, so that overlap cannot be excluded.
"""

from __future__ import annotations

import collections
import logging
import os
import re
from pathlib import Path
from typing import Iterable

from codixr.data.errors import DatasetFormatError, DatasetNotFoundError
from codixr.data.records import ImageRef, Study, StudyDataset, empty_labels, finalize_labels, merge_label, view_from_position
from codixr.data.splits import DEFAULT_SALT, assign_splits
from codixr.data.tables import read_rows
from codixr.modality import NO_FINDING

logger = logging.getLogger(__name__)

ENV_DATA_DIR = "CODIXR_DATA_DIR"
COVID, RSNA, NIH = "covid-cxr", "rsna-pneumonia", "nih-cxr14-64px"
PUBLIC_SETS: tuple[str, ...] = (COVID, RSNA, NIH)

# covid-cxr ``finding`` (comma-separated diagnoses, lower case) -> labels. Every infectious or lipoid
# pneumonia is "Pneumonia"; ARDS is "Lung Opacity" (its definition requires bilateral opacities on chest
# imaging); "No Finding" is a normal study; "todo" (not yet diagnosed) gives no labels.
_PNEUMONIAS = ("covid-19", "sars", "mers", "pneumocystis", "pneumonia", "streptococcus", "klebsiella",
               "legionella", "varicella", "bacterial", "viral", "fungal", "influenza", "lipoid",
               "chlamydophila", "e.coli", "mycoplasma")
COVID_FINDING_LABELS: dict[str, dict[str, float]] = {
    **{name: {"Pneumonia": 1.0} for name in _PNEUMONIAS},
    "ards": {"Lung Opacity": 1.0},
    "no finding": {NO_FINDING: 1.0},
    "todo": {},
}
# NIH ChestX-ray14 label -> condition label. Infiltration counts as Lung Opacity (as in the CheXpert
# labeler and the IU MeSH mapping); NIH labels without a counterpart (Emphysema, Fibrosis, Hernia,
# Pleural_Thickening) are ignored. A label absent from an image's list is negative for the mapped
# labels; Lung Opacity and Enlarged Cardiomediastinum have no complete NIH counterpart and stay
# unstated unless the image is "No Finding".
NIH_LABELS: dict[str, str] = {
    "Atelectasis": "Atelectasis",
    "Cardiomegaly": "Cardiomegaly",
    "Consolidation": "Consolidation",
    "Edema": "Edema",
    "Effusion": "Pleural Effusion",
    "Pneumonia": "Pneumonia",
    "Pneumothorax": "Pneumothorax",
    "Mass": "Lung Lesion",
    "Nodule": "Lung Lesion",
    "Infiltration": "Lung Opacity",
    "No Finding": NO_FINDING,
}
NIH_COMPLETE_LABELS = frozenset(NIH_LABELS.values()) - {"Lung Opacity"}


def default_data_dir() -> Path:
    """The shared data folder: ``$CODIXR_DATA_DIR`` when set, else ``<repository>/../shared/data``."""
    if os.environ.get(ENV_DATA_DIR):
        return Path(os.environ[ENV_DATA_DIR]).expanduser()
    return Path(__file__).resolve().parents[2].parent / "shared" / "data"


def _metadata(folder: Path, required: tuple[str, ...]) -> list[dict[str, str]]:
    path = folder / "metadata.csv"
    if not path.is_file():
        raise DatasetNotFoundError(
            f"{path} is missing: point root (or ${ENV_DATA_DIR}) at the shared data folder that holds {folder.name}/."
        )
    return list(read_rows(path, required))


def _covid_day(row: dict[str, str]) -> str:
    """The part of a covid-cxr study id that names the day: offset, else a full date, else the image."""
    if row["offset"].strip():
        return f"day{row['offset'].strip()}"
    if re.search(r"\b\d{1,2},? \d{4}\b|\d{4}-\d{2}-\d{2}", row["date"]):
        return "date-" + re.sub(r"\W+", "-", row["date"].strip()).strip("-").lower()
    return Path(row["image"]).stem


def _covid_labels(findings: Iterable[str]) -> dict[str, float | None]:
    labels, normal = empty_labels(), False
    for finding in findings:
        for part in (p.strip().lower() for p in finding.split(",")):
            if part not in COVID_FINDING_LABELS:
                logger.warning("covid-cxr finding %r has no label mapping; it is left unlabelled.", part)
                continue
            for name, value in COVID_FINDING_LABELS[part].items():
                normal |= name == NO_FINDING
                labels[name] = merge_label(labels[name], value)
    return finalize_labels(labels, normal=normal)


def load_covid_cxr(folder: str | os.PathLike, drop_duplicate_images: bool = True) -> tuple[list[Study], list[tuple[str, str]]]:
    """covid-cxr studies, and the patient pairs that share an image (to keep them in one split).

    Five images are listed under two patient ids each (the same published case entered twice);
    ``drop_duplicate_images`` keeps each image once, under the first id.
    """
    folder = Path(folder)
    rows = _metadata(folder, ("image", "patientid", "offset", "finding", "view", "view_raw", "date", "clinical_notes"))
    first_patient: dict[str, str] = {}
    linked: list[tuple[str, str]] = []
    groups: dict[tuple[str, str], list[dict[str, str]]] = collections.defaultdict(list)
    for row in rows:
        owner = first_patient.setdefault(row["image"], row["patientid"])
        if owner != row["patientid"]:
            linked.append((f"{COVID}/{owner}", f"{COVID}/{row['patientid']}"))
            if drop_duplicate_images:
                continue
        groups[(row["patientid"], _covid_day(row))].append(row)
    studies = []
    for (patient, day), members in groups.items():
        study = Study(study_id=f"{COVID}:{patient}:{day}", patient_id=patient, source=COVID)
        for row in members:
            extra = {k: row.get(k, "") for k in ("license", "doi", "url", "offset", "date")}
            study.add_image(ImageRef(
                path=str((folder / row["image"]).resolve()), view=row["view"] if row["view"] in ("frontal", "lateral") else "unknown",
                position=row["view_raw"] or None, image_id=Path(row["image"]).stem, extra=extra,
            ))
        notes = list(dict.fromkeys(" ".join(r["clinical_notes"].split()) for r in members if r["clinical_notes"].strip()))
        study.findings_text = "\n\n".join(notes) or None
        study.labels = _covid_labels(r["finding"] for r in members)
        study.meta = {key: sorted({r.get(key, "") for r in members} - {""}) for key in ("finding", "license", "doi", "url")}
        studies.append(study)
    return studies, linked


def load_rsna_pneumonia(folder: str | os.PathLike) -> list[Study]:
    """rsna-pneumonia studies: one frontal image each; Lung Opacity and Pneumonia from ``target``."""
    folder = Path(folder)
    studies = []
    for row in _metadata(folder, ("image", "patientId", "view", "pixel_spacing_mm", "target", "boxes")):
        try:
            boxes = [tuple(float(v) for v in box.split(",")) for box in row["boxes"].split(";") if box.strip()]
            target = float(row["target"])
        except ValueError as exc:
            raise DatasetFormatError(f"rsna-pneumonia metadata row for {row['image']} has an unreadable target/boxes ({exc}).") from exc
        if any(len(b) != 4 for b in boxes):
            raise DatasetFormatError(f"rsna-pneumonia boxes for {row['image']} are not x,y,w,h quadruples.")
        labels = empty_labels()
        labels["Lung Opacity"] = labels["Pneumonia"] = target
        spacing = float(row["pixel_spacing_mm"]) if row["pixel_spacing_mm"].strip() else None
        study = Study(study_id=f"{RSNA}:{row['patientId']}", patient_id=row["patientId"], source=RSNA,
                      labels=finalize_labels(labels), meta={"boxes": boxes})
        study.add_image(ImageRef(path=str((folder / row["image"]).resolve()), view=view_from_position(row["view"]),
                                 position=row["view"], spacing_mm=spacing, image_id=Path(row["image"]).stem))
        studies.append(study)
    return studies


def _nih_labels(finding_labels: str) -> dict[str, float | None]:
    names = {NIH_LABELS[n] for n in (p.strip() for p in finding_labels.split("|")) if n in NIH_LABELS}
    labels = empty_labels()
    for name in NIH_COMPLETE_LABELS:
        labels[name] = 1.0 if name in names else 0.0
    if "Lung Opacity" in names:
        labels["Lung Opacity"] = 1.0
    return finalize_labels(labels, normal=NO_FINDING in names)


def load_nih_cxr14_64px(folder: str | os.PathLike) -> list[Study]:
    """nih-cxr14-64px studies: one frontal 64x64 image each, labels from ``finding_labels``."""
    folder = Path(folder)
    studies = []
    for row in _metadata(folder, ("image", "patient_id", "view", "finding_labels")):
        stem = Path(row["image"]).stem
        study = Study(study_id=f"{NIH}:{stem}", patient_id=row["patient_id"], source=NIH,
                      labels=_nih_labels(row["finding_labels"]), meta={"finding_labels": row["finding_labels"]})
        study.add_image(ImageRef(path=str((folder / row["image"]).resolve()), view=view_from_position(row["view"]),
                                 position=row["view"], image_id=stem, extra={"resolution_px": 64}))
        studies.append(study)
    return studies


def load_public_cxr(
    root: str | os.PathLike | None = None,
    *,
    datasets: Iterable[str] = PUBLIC_SETS,
    validate_fraction: float = 0.1,
    test_fraction: float = 0.0,
    salt: str = DEFAULT_SALT,
    drop_duplicate_images: bool = True,
) -> StudyDataset:
    """The public sets in ``root`` (default :func:`default_data_dir`) as one patient-disjoint dataset.

    No study has an ``impression``: the only texts are the covid-cxr clinical notes, which are case
    descriptions (history and findings mixed) and are given as ``findings_text``.

    Args:
        root: the shared data folder holding ``covid-cxr/``, ``rsna-pneumonia/`` and ``nih-cxr14-64px/``.
        datasets: which of the three sets to read.
        validate_fraction / test_fraction / salt: the hash-of-patient split (per set; patients sharing an
            image are kept together).
        drop_duplicate_images: list each covid-cxr image once (five are listed under two patient ids).
    """
    root = Path(root) if root is not None else default_data_dir()
    if not root.is_dir():
        raise DatasetNotFoundError(
            f"The data folder {root} does not exist: pass root= or set ${ENV_DATA_DIR} to the shared data folder."
        )
    studies: list[Study] = []
    linked: list[tuple[str, str]] = []
    for name in datasets:
        if name == COVID:
            found, linked = load_covid_cxr(root / COVID, drop_duplicate_images)
        elif name == RSNA:
            found = load_rsna_pneumonia(root / RSNA)
        elif name == NIH:
            found = load_nih_cxr14_64px(root / NIH)
        else:
            from codixr.errors import InputError

            raise InputError(f"Unknown public dataset {name!r}: choose from {', '.join(PUBLIC_SETS)}.")
        logger.info("%s: %d studies, %d images", name, len(found), sum(len(s.images) for s in found))
        studies.extend(found)
    assign_splits(studies, validate_fraction, test_fraction, salt, linked=linked)
    return StudyDataset(studies, "public")
