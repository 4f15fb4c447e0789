"""IU X-ray / OpenI (Indiana University): reports from the torchxrayvision wheel, images from the caller.

The 3,955 report XML files ship inside the installed torchxrayvision package
(``torchxrayvision/data/NLMCXR_reports.tgz``) with the view of each image
(``nlmcxr_dicom_metadata.csv.gz``) and a t-SNE-derived PA/lateral label for part of them
(``nlmcxr_tsne_pa.csv.gz``). The images are not part of the wheel: pass the folder where you keep
them (OpenI PNGs such as ``CXR1_1_IM-0001-3001.png`` or DICOMs such as ``1_IM-0001-3001.dcm``). Without
images, studies still carry impression, findings and labels for the text side.

Labels come from the human MeSH "major" indexing of each report through :data:`MESH_LABEL_RULES`.
Licence of the collection: CC BY-NC-ND 4.0.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
import re
import tarfile
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Literal

from codixr.data.errors import DatasetFormatError, DatasetNotFoundError
from codixr.data.records import ImageRef, Study, StudyDataset, empty_labels, finalize_labels, merge_label, view_from_position
from codixr.data.reports import PLACEHOLDER, clean_report_text
from codixr.data.splits import DEFAULT_SALT, assign_splits
from codixr.data.tables import read_rows

logger = logging.getLogger(__name__)

SOURCE = "iu-xray"
LICENSE = "CC BY-NC-ND 4.0"
REPORTS_TGZ = "NLMCXR_reports.tgz"
DICOM_METADATA_CSV = "nlmcxr_dicom_metadata.csv.gz"
TSNE_VIEW_CSV = "nlmcxr_tsne_pa.csv.gz"
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".dcm"})

# MeSH major term -> condition label. A term is "Head/qualifier/qualifier..."; the rule matches the head
# (case-insensitive), optionally needs one of ``needs`` among the qualifiers, and is skipped when a
# qualifier names a site outside the lungs (for the lung-only labels). The qualifier "borderline" makes
# the label uncertain (-1). "normal" -> No Finding = 1 and every pathology 0; "No Indexing" -> nothing.
# The mapping follows the CheXpert labeler's categories (e.g. pulmonary congestion counts as edema,
# infiltrate/airspace disease/density count as lung opacity).
MESH_LABEL_RULES: tuple[tuple[str, tuple[str, ...], tuple[str, ...], bool], ...] = (
    # (head, labels, needs one of these qualifiers (empty: none needed), lung-only)
    ("pulmonary atelectasis", ("Atelectasis",), (), False),
    ("atelectasis", ("Atelectasis",), (), False),
    ("cardiomegaly", ("Cardiomegaly",), (), False),
    ("cardiac shadow", ("Cardiomegaly",), ("enlarged", "borderline"), False),
    ("consolidation", ("Consolidation",), (), False),
    ("pulmonary edema", ("Edema",), (), False),
    ("pulmonary congestion", ("Edema",), (), False),
    ("heart failure", ("Edema",), (), False),
    ("mediastinum", ("Enlarged Cardiomediastinum",), ("enlarged", "prominent", "widened"), False),
    ("nodule", ("Lung Lesion",), (), True),
    ("mass", ("Lung Lesion",), (), True),
    ("opacity", ("Lung Opacity",), (), True),
    ("density", ("Lung Opacity",), (), True),
    ("infiltrate", ("Lung Opacity",), (), True),
    ("airspace disease", ("Lung Opacity",), (), True),
    ("pleural effusion", ("Pleural Effusion",), (), False),
    ("hydropneumothorax", ("Pneumothorax", "Pleural Effusion"), (), False),
    ("hemopneumothorax", ("Pneumothorax",), (), False),
    ("pneumonia", ("Pneumonia",), (), False),
    ("pneumothorax", ("Pneumothorax",), (), False),
)
# Qualifiers that put a lung-only finding elsewhere (a breast mass, a rib opacity, mediastinal nodes).
NON_LUNG_SITES = frozenset({
    "breast", "mediastinum", "ribs", "abdomen", "neck", "shoulder", "spine", "clavicle", "humerus",
    "sternum", "heart", "aorta", "diaphragm", "thoracic vertebrae", "lymph nodes", "paratracheal",
})
_RULES_BY_HEAD = {head: (labels, needs, lung_only) for head, labels, needs, lung_only in MESH_LABEL_RULES}


def mesh_to_labels(terms: list[str]) -> dict[str, float | None]:
    """Condition labels (1/0/-1/None) from a report's MeSH major terms via :data:`MESH_LABEL_RULES`."""
    labels = empty_labels()
    normal = False
    for term in terms:
        head, *qualifiers = [part.strip().lower() for part in term.split("/")]
        if head == "normal":
            normal = True
            continue
        if head == "mediastinum" and "lymph nodes" in qualifiers:
            continue
        rule = _RULES_BY_HEAD.get(head)
        if rule is None:
            continue
        names, needs, lung_only = rule
        if needs and not set(needs) & set(qualifiers):
            continue
        if lung_only and set(qualifiers) & NON_LUNG_SITES:
            continue
        value = -1.0 if "borderline" in qualifiers else 1.0
        for name in names:
            labels[name] = merge_label(labels[name], value)
    return finalize_labels(labels, normal=normal)


def torchxrayvision_data_dir() -> Path:
    """The ``data`` folder of the installed torchxrayvision package (found without importing it)."""
    spec = importlib.util.find_spec("torchxrayvision")
    if spec is None or not spec.submodule_search_locations:
        raise DatasetNotFoundError(
            "torchxrayvision is not installed, and the IU/OpenI reports ship inside it: install the pinned "
            "requirements (pip install -r requirements.txt) or pass reports_tgz=."
        )
    return Path(list(spec.submodule_search_locations)[0]) / "data"


def image_key(image_id: str) -> str:
    """A join key shared by report image ids ("CXR1_1_IM-0001-3001"), metadata ids ("CXR1_IM-0001-3001")
    and file stems ("CXR1_1_IM-0001-3001", "1_IM-0001-3001"): "1_im-0001-3001"."""
    key = re.sub(r"^CXR", "", image_id.strip(), flags=re.IGNORECASE)
    return re.sub(r"^(\d+)_\d+_(IM-)", r"\1_\2", key, flags=re.IGNORECASE).lower()


def _views(metadata_csv: Path, tsne_csv: Path | None, tsne_views: str) -> dict[str, tuple[str | None, str]]:
    """image key -> (position, view) from the DICOM metadata, with the t-SNE view filling or overriding."""
    out = {}
    for row in read_rows(metadata_csv, ("imageid", "View Position")):
        position = row["View Position"].strip() or None
        out[image_key(row["imageid"])] = (position, view_from_position(position))
    if tsne_views != "ignore" and tsne_csv is not None and tsne_csv.is_file():
        for row in read_rows(tsne_csv, ("imageid", "tsne-view")):
            key = image_key(row["imageid"])
            position, view = out.get(key, (None, "unknown"))
            if view == "unknown" or tsne_views == "prefer":
                out[key] = (position, view_from_position(row["tsne-view"]))
    return out


def _scan_images(images_dir: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for dirpath, dirnames, filenames in os.walk(images_dir):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if path.suffix.lower() in IMAGE_SUFFIXES:
                found.setdefault(image_key(path.stem), path.resolve())
    return found


@functools.lru_cache(maxsize=2)
def _parse_reports(path: str, mtime_ns: int) -> tuple[dict, ...]:
    """The raw content of every report XML in the archive (cached per archive path and mtime)."""
    out = []
    with tarfile.open(path, "r:gz") as archive:
        for member in archive:
            if not (member.isfile() and member.name.endswith(".xml")):
                continue
            try:
                root = ET.parse(archive.extractfile(member)).getroot()
            except ET.ParseError as exc:
                raise DatasetFormatError(f"{member.name} in {Path(path).name} is not valid XML ({exc}).") from exc
            abstracts = {node.get("Label", "").upper(): "".join(node.itertext()) for node in root.iter("AbstractText")}
            uid = root.find("uId")
            out.append({
                "patient": Path(member.name).stem,
                "uid": uid.get("id") if uid is not None else None,
                "impression": abstracts.get("IMPRESSION"),
                "findings": abstracts.get("FINDINGS"),
                "mesh": [t.text.strip() for t in root.iterfind("MeSH/major") if t.text and t.text.strip()],
                "images": [node.get("id", "") for node in root.iterfind("parentImage")],
            })
    return tuple(out)


def load_iu_xray(
    images_dir: str | os.PathLike | None = None,
    *,
    reports_tgz: str | os.PathLike | None = None,
    metadata_csv: str | os.PathLike | None = None,
    tsne_views: Literal["fill", "prefer", "ignore"] = "fill",
    require_impression: bool = False,
    require_both_views: bool = False,
    validate_fraction: float = 0.1,
    test_fraction: float = 0.0,
    salt: str = DEFAULT_SALT,
    placeholder: str | None = PLACEHOLDER,
) -> StudyDataset:
    """Read the IU X-ray reports (and, when ``images_dir`` is given, join their images).

    Args:
        images_dir: folder searched recursively for the images (file stem = image id); ``None`` or a
            missing folder gives text-only studies (every image still listed in ``meta["images"]``).
        reports_tgz / metadata_csv: override the files taken from the torchxrayvision wheel.
        tsne_views: the DICOM ViewPosition is blank for about a third of the images; "fill" takes the
            t-SNE-derived view that torchxrayvision ships for those, "prefer" uses it wherever it exists
            (the raw metadata is known to be noisy), "ignore" leaves them unknown.
        require_impression / require_both_views: drop studies without an impression / without a found
            frontal and lateral image.
        validate_fraction / test_fraction / salt: the hash-of-patient split (one study per patient).
        placeholder: replacement for the "XXXX" de-identification gaps (``None`` keeps them).

    ``impression``/``findings_text`` are the report's IMPRESSION/FINDINGS; ``labels`` are the MeSH
    labels (:func:`mesh_to_labels`); ``meta`` holds the MeSH major terms, image ids/views and licence.
    """
    data_dir = None if reports_tgz is not None and metadata_csv is not None else torchxrayvision_data_dir()
    reports_tgz = Path(reports_tgz) if reports_tgz is not None else data_dir / REPORTS_TGZ
    metadata_csv = Path(metadata_csv) if metadata_csv is not None else data_dir / DICOM_METADATA_CSV
    for path in (reports_tgz, metadata_csv):
        if not path.is_file():
            raise DatasetNotFoundError(f"IU X-ray file {path} is missing: reinstall torchxrayvision==1.5.7 or pass its path.")
    views = _views(metadata_csv, data_dir / TSNE_VIEW_CSV if data_dir else None, tsne_views)
    files: dict[str, Path] = {}
    if images_dir is not None:
        if Path(images_dir).is_dir():
            files = _scan_images(Path(images_dir))
        else:
            logger.warning("IU X-ray images folder %s does not exist: reading the reports only.", images_dir)

    studies: list[Study] = []
    for report in _parse_reports(str(reports_tgz.resolve()), reports_tgz.stat().st_mtime_ns):
        study = Study(
            study_id=report["uid"] or f"CXR{report['patient']}",
            patient_id=report["patient"],
            impression=clean_report_text(report["impression"], placeholder) or None,
            findings_text=clean_report_text(report["findings"], placeholder) or None,
            labels=mesh_to_labels(report["mesh"]),
            source=SOURCE,
            meta={"mesh": list(report["mesh"]), "license": LICENSE, "images": []},
        )
        for image_id in report["images"]:
            position, view = views.get(image_key(image_id), (None, "unknown"))
            study.meta["images"].append({"image_id": image_id, "view": view, "position": position})
            if (path := files.get(image_key(image_id))) is not None:
                study.add_image(ImageRef(path=str(path), view=view, position=position, image_id=image_id))
        studies.append(study)
    studies.sort(key=lambda s: int(s.patient_id) if s.patient_id.isdigit() else 0)
    studies = [
        s for s in studies
        if (s.impression or not require_impression) and (s.has_both_views or not require_both_views)
    ]
    assign_splits(studies, validate_fraction, test_fraction, salt)
    logger.info(
        "IU X-ray: %d studies, %d with impression, %d images joined from %s",
        len(studies), sum(1 for s in studies if s.impression), sum(len(s.images) for s in studies),
        "the images folder" if files else "no images folder",
    )
    return StudyDataset(studies, SOURCE)
