"""Decode a DICOM radiograph with pydicom (compressed transfer syntaxes through pylibjpeg and pydicom's RLE).

Only the tags needed to interpret the pixels are read (Modality, SOP class, frames, geometry, bit depth,
photometric interpretation, rescale, spacing, ViewPosition). Patient, study and institution tags are never
read, returned or logged.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import logging
import math
import struct
import threading
import warnings
import zlib
from dataclasses import dataclass
from typing import Iterator

import pydicom
from pydicom.encaps import generate_fragments
from pydicom.pixels import get_decoder
from pydicom.uid import (
    UID,
    ComputedRadiographyImageStorage,
    DigitalXRayImageStorageForPresentation,
    DigitalXRayImageStorageForProcessing,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    SecondaryCaptureImageStorage,
)

from codixr.io.errors import (
    CorruptFileError,
    ImageTooLargeError,
    MultiFrameError,
    NotARadiographError,
    UnsupportedFormatError,
    XRayReadError,
)
from codixr.io.preprocess import RawImage, check_grey, check_pixel_count, luminance

logger = logging.getLogger(__name__)

#: DICOM Modality values of projection radiographs (DR and RG are retired/film terms still seen in archives).
RADIOGRAPH_MODALITIES = frozenset({"CR", "DX", "DR", "RG"})

#: ViewPosition values (upper case, single spaces) mapped to CoDiXR views.
VIEW_POSITIONS = {
    "PA": "frontal", "AP": "frontal", "AP SUPINE": "frontal",
    "LL": "lateral", "RL": "lateral", "LAT": "lateral", "LATERAL": "lateral", "XTABLE LATERAL": "lateral",
}
# Radiograph SOP classes -> the Modality they imply (used when a file leaves Modality empty).
_RADIOGRAPH_SOPS = {
    ComputedRadiographyImageStorage: "CR",
    DigitalXRayImageStorageForPresentation: "DX",
    DigitalXRayImageStorageForProcessing: "DX",
}
# Secondary Capture (digitised film, screen captures, CoDiXR's own exports) may carry Modality OT or none;
# "" stands for a bare dataset without SOP class.
_CAPTURE_SOPS = frozenset({SecondaryCaptureImageStorage, ""})

_MODALITY_NAMES = {
    "CT": "a CT image", "MR": "an MR image", "US": "an ultrasound image", "NM": "a nuclear medicine image",
    "PT": "a PET image", "MG": "a mammogram", "XA": "an X-ray angiography image", "RF": "a fluoroscopy image",
    "OP": "an ophthalmic photograph", "XC": "a photograph", "ES": "an endoscopy image",
    "IO": "an intra-oral dental X-ray", "PX": "a panoramic dental X-ray", "SR": "a structured report",
    "DOC": "a document", "KO": "a key object selection", "PR": "a presentation state", "SEG": "a segmentation",
    "RTSTRUCT": "a radiotherapy structure set", "RTPLAN": "a radiotherapy plan", "ECG": "an ECG waveform",
}
# Standard Modality codes (DICOM PS3.3 C.7.3.1.1.1). Messages quote a file's Modality only if it is one of
# these: in a damaged file the value may have run into neighbouring patient tags.
_STANDARD_MODALITIES = frozenset(
    "AR ASMT AU BDUS BI BMD CR CT CTPROTOCOL DG DOC DX ECG EPS ES FID GM HC HD IO IOL IVOCT IVUS KER KO LEN LS "
    "MG MR M3D NM OAM OCT OP OPM OPT OPTBSV OPTENF OPV OSS OT PLAN POS PR PT PX REG RESP RF RG RTDOSE RTIMAGE "
    "RTINTENT RTPLAN RTRAD RTRECORD RTSEGANN RTSTRUCT RWV SEG SM SMR SR SRF STAIN TEXTUREMAP TG US VA XA XC".split()
)
_KNOWN_PHOTOMETRIC = frozenset(
    {"MONOCHROME1", "MONOCHROME2", "PALETTE COLOR", "RGB", "HSV", "ARGB", "CMYK", "YBR_FULL", "YBR_FULL_422",
     "YBR_PARTIAL_422", "YBR_PARTIAL_420", "YBR_ICT", "YBR_RCT", "XYB"}
)
_ACT = "CoDiXR reads chest radiographs (CR/DX)."

_MONOCHROME = ("MONOCHROME1", "MONOCHROME2")
_COLOUR = ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT", "YBR_PARTIAL_420")
_MAX_SPACING_MM = 10.0  # anything coarser is not a radiograph's pixel spacing


def _shown(value: str, known: frozenset[str]) -> str:
    """``value`` for a message if it is a standard term, else a placeholder (never echo unknown file text)."""
    return value if value in known else "an unrecognised value"


def _uid_name(uid: UID) -> str:
    """Name of a registered UID, its digits if merely valid, else a placeholder."""
    return uid.name if uid.is_valid else "an unrecognised UID"


@dataclass(frozen=True)
class DicomImage:
    """A decoded DICOM radiograph: the pixels plus the non-identifying tags CoDiXR keeps."""

    raw: RawImage
    modality: str
    photometric_interpretation: str
    view: str | None


def _text(ds: pydicom.Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    return " ".join(str(value).upper().split()) if value is not None else ""


def _spacing(ds: pydicom.Dataset) -> tuple[float, float] | None:
    """(row, column) spacing in mm from PixelSpacing, else ImagerPixelSpacing; ``None`` if absent or invalid."""
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        try:
            values = ds.get(keyword)
            spacing = tuple(float(v) for v in values) if values is not None else ()
        except (TypeError, ValueError):
            spacing = ()
        if len(spacing) == 2 and all(math.isfinite(s) and 0 < s <= _MAX_SPACING_MM for s in spacing):
            return spacing  # type: ignore[return-value]
        if values is not None:
            logger.debug("ignoring invalid %s; the image is not resampled by it", keyword)
    return None


def _check_radiograph(ds: pydicom.Dataset) -> None:
    """Refuse objects that are not single-image projection radiographs, before any pixel is decoded."""
    modality = _text(ds, "Modality")
    sop = UID(str(ds.get("SOPClassUID", "")))
    sop_name = _uid_name(sop) if sop else "not set"
    if "PixelData" not in ds and not sop:
        raise CorruptFileError(
            "This file does not contain a readable DICOM image (no SOP class, no pixel data): it is damaged "
            "or not DICOM. Re-export the radiograph from PACS or the modality."
        )
    # A stated modality that is not a radiograph (Secondary Captures, e.g. CoDiXR's exports, may say OT).
    if modality and modality not in RADIOGRAPH_MODALITIES and not (modality == "OT" and sop in _CAPTURE_SOPS):
        what = _MODALITY_NAMES.get(modality)
        shown = _shown(modality, _STANDARD_MODALITIES)
        what = f"{what} (Modality={modality})" if what else f"not a radiograph (Modality {shown}, SOP class {sop_name})"
        raise NotARadiographError(f"This DICOM is {what}; {_ACT} Export the chest radiograph series instead.")
    if "PixelData" not in ds:
        if sop_name.endswith("Image Storage"):  # an image object whose pixels are missing: cut short
            raise CorruptFileError(
                f"This {sop_name} file has no pixel data: it is incomplete. Re-transfer or re-export it."
            )
        raise NotARadiographError(
            f"This DICOM holds no image (its SOP class is {sop_name}); {_ACT} Export the radiograph image itself."
        )
    if not modality and sop not in _RADIOGRAPH_SOPS and sop not in _CAPTURE_SOPS:
        raise NotARadiographError(
            f"This DICOM is not a radiograph (Modality not set, SOP class {sop_name}); {_ACT} "
            "Export the chest radiograph series instead."
        )
    frames = int(ds.get("NumberOfFrames") or 1)
    if frames > 1:
        raise MultiFrameError(
            f"This DICOM holds {frames} frames (a multi-frame or cine object); CoDiXR reads one radiograph "
            "per file. Export the single chest radiograph (one frame) instead."
        )


def _check_pixels(ds: pydicom.Dataset, max_pixels: int) -> tuple[int, int, str]:
    """Validate geometry, photometric interpretation and codec; returns (rows, columns, photometric).

    Sizes (Rows x Columns, the size at 0.139 mm, the padded square) are checked against ``max_pixels`` here,
    before ``pixel_array`` decodes anything.
    """
    rows, cols = int(ds.get("Rows") or 0), int(ds.get("Columns") or 0)
    if rows <= 0 or cols <= 0:
        raise CorruptFileError("This DICOM does not state its image size (Rows/Columns): it is damaged. Re-export it.")
    check_pixel_count((rows, cols), _spacing(ds), max_pixels, "DICOM")
    photometric = _text(ds, "PhotometricInterpretation") or "MONOCHROME2"
    samples = int(ds.get("SamplesPerPixel") or 1)
    if not ((photometric in _MONOCHROME and samples == 1) or (photometric in _COLOUR and samples == 3)):
        raise UnsupportedFormatError(
            f"This DICOM stores its pixels as {_shown(photometric, _KNOWN_PHOTOMETRIC)} with {samples} sample(s) "
            "per pixel, which CoDiXR does not read. Export the radiograph as a grayscale (MONOCHROME1/2) image."
        )
    syntax = UID(str(ds.file_meta.TransferSyntaxUID))
    try:
        decoder = get_decoder(syntax)
    except NotImplementedError:
        raise UnsupportedFormatError(
            f"This DICOM uses the transfer syntax {_uid_name(syntax)}, which CoDiXR cannot decode. Export it "
            "uncompressed (Explicit VR Little Endian) or with JPEG / JPEG 2000 / RLE compression."
        ) from None
    if not decoder.is_available:
        raise UnsupportedFormatError(
            f"This DICOM is compressed with {syntax.name}, and no decoder for it is installed "
            f"({'; '.join(decoder.missing_dependencies)}). Install one, or export the image uncompressed."
        )
    if syntax.is_encapsulated:
        _check_codestream_size(ds, rows, cols)
    return rows, cols, photometric


def _check_codestream_size(ds: pydicom.Dataset, rows: int, cols: int) -> None:
    """Refuse compressed pixel data whose own header (JPEG SOF, JPEG 2000 SIZ) states another size than
    Rows x Columns: the codec would decode the stream's size, whatever the DICOM header says."""
    first = next(itertools.islice(generate_fragments(ds.PixelData), 1, 2), b"")  # item 0 is the offset table
    shape = _codestream_shape(first)
    if shape is not None and shape != (rows, cols):
        raise CorruptFileError(
            f"This DICOM's compressed image is {shape[0]} x {shape[1]} pixels, which does not match the {rows} x "
            f"{cols} its header states: the file is damaged. Re-export it."
        )


_JPEG_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF, 0xF7})


def _codestream_shape(stream: bytes) -> tuple[int, int] | None:
    """(rows, columns) stated by a JPEG / JPEG-LS SOF or a JPEG 2000 SIZ segment; None when not found (RLE...)."""
    try:
        if stream.startswith(b"\xff\xd8"):  # JPEG, JPEG-LS: walk the segments to the start of frame
            offset = 2
            while offset + 4 <= len(stream) and stream[offset] == 0xFF:
                marker = stream[offset + 1]
                if marker == 0xFF:  # a fill byte before the marker
                    offset += 1
                    continue
                if marker in _JPEG_SOF:
                    rows, cols = struct.unpack(">HH", stream[offset + 5 : offset + 9])
                    return rows, cols
                offset += 2 + struct.unpack(">H", stream[offset + 2 : offset + 4])[0]
            return None
        if stream.startswith(b"\xff\x4f\xff\x51"):  # JPEG 2000 codestream: SOC then SIZ
            xsiz, ysiz, xosiz, yosiz = struct.unpack(">IIII", stream[8:24])
            return ysiz - yosiz, xsiz - xosiz
    except struct.error:
        return None
    return None


_DEFLATED_SYNTAX = b"1.2.840.10008.1.2.1.99"  # Deflated Explicit VR Little Endian
_INFLATE_CHUNK = 1 << 20


def _check_deflated_size(data: bytes, max_pixels: int) -> None:
    """pydicom inflates a deflated dataset whole, before any tag is read: refuse, first, one that inflates to more
    than a radiograph under ``max_pixels`` can need (8 bytes a pixel and 1 MiB of tags), counted in 1 MiB steps."""
    if data[128:136] != b"DICM\x02\x00\x00\x00":  # no File Meta group length: not a deflated Part-10 file
        return
    meta_end = 144 + struct.unpack("<I", data[140:144])[0]
    if _DEFLATED_SYNTAX not in data[132:meta_end]:
        return
    limit = 8 * max_pixels + _INFLATE_CHUNK
    inflater, pending, total = zlib.decompressobj(-zlib.MAX_WBITS), memoryview(data)[meta_end:], 0
    try:
        while pending and total <= limit:
            total += len(inflater.decompress(pending, _INFLATE_CHUNK))
            pending = inflater.unconsumed_tail
    except zlib.error:
        return  # damaged: pydicom's own reading says so
    if total > limit:
        raise ImageTooLargeError(
            f"This DICOM's deflated dataset unpacks to more than {limit / 1e6:.0f} MB, far more than a radiograph "
            f"under the safety limit of {max_pixels / 1e6:g} megapixels needs: it is damaged or not a radiograph. "
            "Export it uncompressed."
        )


def _ensure_transfer_syntax(ds: pydicom.Dataset) -> None:
    """Files without a File Meta header: record the encoding pydicom detected as the transfer syntax."""
    if "TransferSyntaxUID" in ds.file_meta:
        return
    implicit, little = ds.original_encoding
    ds.file_meta.TransferSyntaxUID = (
        ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian if little else ExplicitVRBigEndian
    )


class _ThisThread(logging.Filter):
    def __init__(self) -> None:
        super().__init__()
        self.thread = threading.get_ident()

    def filter(self, record: logging.LogRecord) -> bool:
        return record.thread != self.thread


@contextlib.contextmanager
def _withhold_pydicom_messages() -> Iterator[None]:
    """Keep pydicom's warnings and log records about this file out of logs and stderr.

    pydicom quotes element values in them ("Invalid value for VR CS: '...'"), and in a damaged file such a
    value can run into neighbouring patient tags. Only their number is logged, at debug level. (Scoped to
    this read; ``catch_warnings`` may also hold back another thread's warnings during it.)
    """
    pydicom_logger = logging.getLogger("pydicom")
    this_thread = _ThisThread()
    pydicom_logger.addFilter(this_thread)
    caught: list[warnings.WarningMessage] = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield
    finally:
        pydicom_logger.removeFilter(this_thread)
        if caught:
            logger.debug("pydicom reported %d warning(s) on this file (text withheld)", len(caught))


def read_dicom(data: bytes, max_pixels: int, allow_colour: bool = False) -> DicomImage:
    """Decode one single-frame DICOM radiograph from ``data``; raises :class:`XRayReadError` subclasses.

    Colour (RGB/YBR) pixels with real colour content are refused unless ``allow_colour``."""
    with _withhold_pydicom_messages():
        return _read_dicom(data, max_pixels, allow_colour)


def _read_dicom(data: bytes, max_pixels: int, allow_colour: bool) -> DicomImage:
    stage = "header"
    _check_deflated_size(data, max_pixels)
    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=data[128:132] != b"DICM")
        _ensure_transfer_syntax(ds)
        _check_radiograph(ds)
        rows, cols, photometric = _check_pixels(ds, max_pixels)
        bits = int(ds.get("BitsStored") or ds.get("BitsAllocated") or 0)
        if not 1 <= bits <= 32:
            raise CorruptFileError(f"This DICOM states an invalid bit depth ({bits}); it is damaged. Re-export it.")
        stage = "pixels"
        pixels = ds.pixel_array
        if pixels.shape[:2] != (rows, cols):
            raise CorruptFileError(
                "This DICOM's pixel data does not match its stated size; it is damaged. Re-export it."
            )
        if pixels.ndim == 3:
            if not allow_colour:
                check_grey(pixels, float(2 ** min(bits, 16) - 1))
            pixels = luminance(pixels)
        raw = RawImage(
            pixels=pixels,
            bits_stored=bits,
            monochrome1=photometric == "MONOCHROME1",
            rescale_slope=float(ds.get("RescaleSlope", 1.0) or 1.0),
            rescale_intercept=float(ds.get("RescaleIntercept", 0.0) or 0.0),
            spacing_mm=_spacing(ds),
        )
        modality = _text(ds, "Modality") or _RADIOGRAPH_SOPS.get(str(ds.get("SOPClassUID", "")), "OT")
        view = VIEW_POSITIONS.get(_text(ds, "ViewPosition").replace("_", " "))
    except XRayReadError:
        raise
    except Exception as exc:  # untrusted bytes: any parser failure means a damaged file
        # Raw pydicom messages can quote tag values, so they are not passed on (and not chained).
        logger.debug("DICOM %s could not be read (%s)", stage, type(exc).__name__)
        if stage == "header":
            raise CorruptFileError(
                "This DICOM file is damaged or incomplete: its header cannot be read. Re-transfer or re-export it."
            ) from None
        raise CorruptFileError(
            "This DICOM file's image data is damaged or truncated and cannot be decoded. Re-transfer or re-export it."
        ) from None
    logger.debug("read DICOM %s image, %d x %d, %d bits", modality, rows, cols, bits)
    return DicomImage(raw=raw, modality=modality, photometric_interpretation=photometric, view=view)
