"""Dataset readers: MIMIC-CXR, IU X-ray / OpenI and the public sets in the shared data folder.

    from codixr.data import load_mimic_cxr, load_iu_xray, load_public_cxr
    train = load_mimic_cxr("/data/mimic-cxr-jpg").split("train")   # the paper's triplets
    reports = load_iu_xray()                                        # text side; images optional
    public = load_public_cxr()                                      # covid-cxr + RSNA + NIH 64 px

Every reader returns a :class:`StudyDataset` of :class:`Study` records (frontal/lateral images,
impression, CheXpert-convention labels over CONDITION_LABELS, patient-disjoint split). Report text
helpers live in :mod:`codixr.data.reports`, the training image cache in :mod:`codixr.data.cache`,
and ``python -m codixr.data summary DIR`` prints a dataset's counts.
"""

from __future__ import annotations

from codixr.data.cache import ImageCache, build_image_cache
from codixr.data.errors import DatasetError, DatasetFormatError, DatasetNotFoundError, ImageCacheError
from codixr.data.iu import MESH_LABEL_RULES, load_iu_xray, mesh_to_labels
from codixr.data.mimic import load_mimic_cxr
from codixr.data.public import COVID_FINDING_LABELS, NIH_LABELS, default_data_dir, load_public_cxr
from codixr.data.records import ImageRef, Study, StudyDataset, view_from_position
from codixr.data.reports import (
    TOKEN_LIMIT,
    clean_report_text,
    extract_findings,
    extract_impression,
    token_length_report,
    truncate_to_token_limit,
)
from codixr.data.splits import assign_splits, patient_overlap
from codixr.data.synthetic import is_synthetic_dir, load_synthetic

__all__ = [
    "ImageRef",
    "Study",
    "StudyDataset",
    "view_from_position",
    "load_mimic_cxr",
    "load_iu_xray",
    "load_public_cxr",
    "load_synthetic",
    "is_synthetic_dir",
    "default_data_dir",
    "mesh_to_labels",
    "MESH_LABEL_RULES",
    "COVID_FINDING_LABELS",
    "NIH_LABELS",
    "extract_impression",
    "extract_findings",
    "clean_report_text",
    "truncate_to_token_limit",
    "token_length_report",
    "TOKEN_LIMIT",
    "build_image_cache",
    "ImageCache",
    "assign_splits",
    "patient_overlap",
    "DatasetError",
    "DatasetNotFoundError",
    "DatasetFormatError",
    "ImageCacheError",
]
