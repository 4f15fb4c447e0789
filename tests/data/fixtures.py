"""Builders for the dataset reader tests: synthetic reports, DICOM/PNG/CSV writers, a MIMIC tree layout, a tokenizer."""

from __future__ import annotations

import csv
import gzip
from pathlib import Path

import numpy as np

REPORT_KEPT = """                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)

 INDICATION:  ___F with cough  // eval for pneumonia

 COMPARISON:  None.

 FINDINGS:

 There is no focal consolidation, pleural effusion or pneumothorax.  Heart size
 is normal.

 IMPRESSION:

 No acute cardiopulmonary process.
"""
REPORT_NO_IMPRESSION = """ EXAMINATION:  CHEST (PA AND LAT)

 FINDINGS:  Lungs are clear.  No effusion.
"""
REPORT_INLINE = """ INDICATION: ___ year old with dyspnea.
 FINDINGS: Moderate cardiomegaly. IMPRESSION: Moderate cardiomegaly with
 mild  pulmonary  edema, as seen on ___.
"""

SOP_CR = "1.2.840.10008.5.1.4.1.1.1"  # Computed Radiography Image Storage


def write_dicom(path: Path, view_position: str | None, pixels: np.ndarray | None = None) -> None:
    """A small uncompressed CR DICOM (8-bit MONOCHROME2) with the given ViewPosition."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid
    from pydicom import Dataset

    pixels = np.full((16, 16), 100, np.uint8) if pixels is None else pixels.astype(np.uint8)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SOP_CR
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = SOP_CR, meta.MediaStorageSOPInstanceUID, "CR"
    if view_position is not None:
        ds.ViewPosition = view_position
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = pixels.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def write_png(path: Path, pixels: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels.astype(np.uint8), mode="L").save(path)


def write_csv_gz(path: Path, header: list[str], rows: list[list[object]]) -> None:
    with gzip.open(path, "wt", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


# (patient, study, [(dicom_id, ViewPosition in metadata or None, suffix)], report or None)
MIMIC_STUDIES = [
    ("10000001", "50000001", [("a1", "PA", ".dcm"), ("a2", "LL", ".dcm")], REPORT_KEPT),  # kept
    ("10000001", "50000002", [("a3", "PA", ".dcm")], REPORT_KEPT),  # dropped: no lateral
    ("10000002", "50000003", [("b1", "PA", ".png"), ("b2", "LATERAL", ".png")], REPORT_NO_IMPRESSION),  # dropped: no impression
    ("10000003", "50000004", [("c1", "AP", ".dcm"), ("c2", None, ".dcm")], REPORT_INLINE),  # kept: c2's view from its header
    ("11000004", "50000005", [("d1", "PA", ".dcm"), ("d2", "LATERAL", ".dcm")], None),  # dropped: no report
    ("11000005", "50000006", [("e1", "PA", ".dcm"), ("e2", "LAO", ".dcm")], REPORT_KEPT),  # dropped: oblique, not lateral
]
KEPT_STUDIES = {"s50000001", "s50000004"}
HEADER_VIEWS = {"c2": "LL"}  # ViewPosition written only in the DICOM header


def train_wordpiece(texts: list[str], vocab_size: int = 300):
    """A BERT-style WordPiece tokenizer trained on ``texts``, wrapped for transformers ([CLS] ... [SEP])."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok.train_from_iterator(texts, trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=specials))
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))]
    )
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]",
                                   pad_token="[PAD]", mask_token="[MASK]")


TOKENIZER_TEXTS = [
    "No acute cardiopulmonary process.",
    "Moderate cardiomegaly with mild pulmonary edema.",
    "There is no focal consolidation, pleural effusion or pneumothorax.",
    "Heart size is normal. Lungs are clear.",
    "Small left pleural effusion with adjacent atelectasis.",
    "Right lower lobe opacity concerning for pneumonia.",
]
