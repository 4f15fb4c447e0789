"""MIMIC-CXR (the paper's data; credentialed access, users bring it) in the PhysioNet layout.

Expected layout (MIMIC-CXR DICOM or MIMIC-CXR-JPG, full or a subset)::

    ROOT/files/p10/p10000032/s50414267/02aa804e-....dcm   (or .jpg/.png)
    ROOT/files/p10/p10000032/s50414267.txt                (report; may live under a separate reports_dir)
    ROOT/mimic-cxr-2.0.0-metadata.csv(.gz)                 (ViewPosition per dicom_id; optional)
    ROOT/mimic-cxr-2.0.0-split.csv(.gz)                    (official split; optional)
    ROOT/mimic-cxr-2.0.0-chexpert.csv(.gz)                 (CheXpert-labeler labels; optional)

As in the paper, a study is kept when it has an impression and both a frontal (PA/AP) and a lateral
(LATERAL/LL) image; both rules can be switched off.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from codixr.data.errors import DatasetNotFoundError
from codixr.data.records import ImageRef, Study, StudyDataset, View, empty_labels, view_from_position
from codixr.data.reports import PLACEHOLDER, extract_findings, extract_impression
from codixr.data.splits import DEFAULT_SALT, assign_splits
from codixr.data.tables import find_table, read_rows
from codixr.modality import CONDITION_LABELS

logger = logging.getLogger(__name__)

SOURCE = "mimic-cxr"
METADATA_CSV = "mimic-cxr-2.0.0-metadata.csv"
SPLIT_CSV = "mimic-cxr-2.0.0-split.csv"
CHEXPERT_CSV = "mimic-cxr-2.0.0-chexpert.csv"
IMAGE_SUFFIXES = frozenset({".dcm", ".jpg", ".jpeg", ".png"})
_PATIENT_DIR = re.compile(r"p\d+")
_STUDY_DIR = re.compile(r"s\d+")


def _dicom_view_position(path: Path) -> str | None:
    """ViewPosition from a DICOM header (pixels not read), or None when absent/unreadable."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        header = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["ViewPosition"])
    except (InvalidDicomError, OSError, ValueError, EOFError):  # an unreadable header only means an unknown view
        return None
    return str(header.get("ViewPosition", "") or "").strip() or None


def _parse_label(value: str | None) -> float | None:
    value = (value or "").strip()
    return float(value) if value else None


def load_mimic_cxr(
    root: str | os.PathLike,
    reports_dir: str | os.PathLike | None = None,
    *,
    require_impression: bool = True,
    require_both_views: bool = True,
    use_official_split: bool = True,
    validate_fraction: float = 0.0,
    test_fraction: float = 0.2,
    salt: str = DEFAULT_SALT,
    labels_csv: str | os.PathLike | None = None,
    placeholder: str | None = PLACEHOLDER,
) -> StudyDataset:
    """Read MIMIC-CXR studies from the PhysioNet folder layout.

    Args:
        root: folder holding ``files/`` and (optionally) the ``mimic-cxr-2.0.0-*.csv(.gz)`` tables.
        reports_dir: folder holding ``files/pXX/pXXXXXXXX/sXXXXXXXX.txt`` when not under ``root``
            (e.g. the unpacked ``mimic-cxr-reports``); its tables are searched too.
        require_impression / require_both_views: the paper's selection (impression, frontal and lateral).
        use_official_split: take each study's split from ``mimic-cxr-2.0.0-split.csv`` when present
            (patient-disjoint by construction); studies it does not list, or all studies without it,
            get a deterministic hash-of-patient split with ``validate_fraction``/``test_fraction``.
        labels_csv: a CheXpert-style label table (defaults to ``mimic-cxr-2.0.0-chexpert.csv``).
        placeholder: replacement for the ``___`` de-identification gaps (``None`` keeps them).

    Views come from ``ViewPosition`` in the metadata table, else from each DICOM header; JPG/PNG files
    without the metadata table have an unknown view. Raises DatasetNotFoundError without ``root/files``.
    """
    root = Path(root)
    reports_root = Path(reports_dir) if reports_dir is not None else root
    if not (root / "files").is_dir():
        raise DatasetNotFoundError(
            f"No MIMIC-CXR image folder at {root / 'files'}: point root at the folder that holds files/ "
            "(and the mimic-cxr-2.0.0-*.csv tables) from PhysioNet."
        )
    folders = [root, reports_root]

    # 1. Tables (each optional).
    positions: dict[str, str] = {}
    if (path := find_table(folders, METADATA_CSV)) is not None:
        positions = {r["dicom_id"]: r["ViewPosition"] for r in read_rows(path, ("dicom_id", "ViewPosition"))}
    official: dict[str, str] = {}  # study number -> split
    official_patients: dict[str, str] = {}  # "p" + subject number -> split, for studies the file misses
    if use_official_split and (path := find_table(folders, SPLIT_CSV)) is not None:
        for r in read_rows(path, ("study_id", "subject_id", "split")):
            official[r["study_id"]] = official_patients[f"p{r['subject_id']}"] = r["split"]
    labels_by_study: dict[str, dict[str, float | None]] = {}
    label_path = Path(labels_csv) if labels_csv is not None else find_table(folders, CHEXPERT_CSV)
    if label_path is not None:
        for r in read_rows(label_path, ("study_id",)):
            labels_by_study[r["study_id"]] = {name: _parse_label(r.get(name)) for name in CONDITION_LABELS}
    logger.info(
        "MIMIC-CXR tables: metadata %s, split %s, labels %s",
        "found" if positions else "absent", "found" if official else "absent", "found" if labels_by_study else "absent",
    )

    # 2. Walk files/pXX/pXXXXXXXX/sXXXXXXXX/ for images.
    studies: list[Study] = []
    for dirpath, dirnames, filenames in os.walk(root / "files"):
        dirnames.sort()
        study_dir = Path(dirpath)
        if not (_STUDY_DIR.fullmatch(study_dir.name) and _PATIENT_DIR.fullmatch(study_dir.parent.name)):
            continue
        study = Study(study_id=study_dir.name, patient_id=study_dir.parent.name, source=SOURCE)
        for name in sorted(filenames):
            path = study_dir / name
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            position = positions.get(path.stem)
            if position is None and path.suffix.lower() == ".dcm":
                position = _dicom_view_position(path)
            view: View = view_from_position(position)
            study.add_image(ImageRef(path=str(path.resolve()), view=view, position=position or None, image_id=path.stem))
        if not study.images:
            continue
        # 3. Report, labels, official split.
        report_path = reports_root / study_dir.relative_to(root).parent / f"{study_dir.name}.txt"
        if report_path.is_file():
            report = report_path.read_text(encoding="utf-8", errors="replace")
            study.impression = extract_impression(report, placeholder)
            study.findings_text = extract_findings(report, placeholder)
        number = study_dir.name[1:]
        study.labels = labels_by_study.get(number, empty_labels())
        study.split = official.get(number) or official_patients.get(study.patient_id, "")
        studies.append(study)

    # 4. Selection and split.
    found = len(studies)
    no_impression = sum(1 for s in studies if not s.impression)
    no_pair = sum(1 for s in studies if not s.has_both_views)
    studies = [
        s for s in studies
        if (s.impression or not require_impression) and (s.has_both_views or not require_both_views)
    ]
    assign_splits([s for s in studies if not s.split], validate_fraction, test_fraction, salt)
    logger.info(
        "MIMIC-CXR: %d studies with images; %d without impression, %d without both views; kept %d",
        found, no_impression, no_pair, len(studies),
    )
    return StudyDataset(studies, SOURCE)
