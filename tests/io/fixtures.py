"""Builders of small X-ray files for the I/O tests: DICOM datasets from numpy pixels, PNG/JPEG bytes.

Everything is made in memory from known arrays, so expected values can be computed with plain numpy.
"""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    ComputedRadiographyImageStorage,
    ExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    generate_uid,
)

#: Identifying values put into every fixture, so privacy tests can look for them in outputs.
PATIENT_NAME = "Sentinel^Patricia^Q"
PATIENT_ID = "PID-SENTINEL-4711"
INSTITUTION = "Sentinel General Hospital"
ACCESSION = "ACC-SENTINEL-99"
BIRTH_DATE = "19370214"
IDENTIFYING_VALUES = (PATIENT_NAME, "Sentinel", PATIENT_ID, INSTITUTION, ACCESSION, BIRTH_DATE)


def make_dicom(
    pixels: np.ndarray,
    *,
    photometric: str = "MONOCHROME2",
    bits_stored: int | None = None,
    modality: str = "CR",
    sop_class: str = ComputedRadiographyImageStorage,
    pixel_spacing: tuple[float, float] | None = None,
    imager_pixel_spacing: tuple[float, float] | None = None,
    view_position: str | None = None,
    rescale: tuple[float, float] | None = None,
    **extra,
) -> Dataset:
    """A single- or multi-frame (3-D ``pixels``) DICOM with the given pixels and tags, plus patient tags.

    ``pixels`` is uint8 (8-bit container) or uint16/int16 (16-bit container); ``bits_stored`` defaults to
    the container size. ``rescale`` is (slope, intercept). Extra keyword arguments are set as tags.
    """
    pixels = np.ascontiguousarray(pixels)
    allocated = pixels.dtype.itemsize * 8
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
    ds.Modality = modality
    ds.PatientName, ds.PatientID, ds.PatientBirthDate = PATIENT_NAME, PATIENT_ID, BIRTH_DATE
    ds.InstitutionName, ds.AccessionNumber, ds.StudyDate = INSTITUTION, ACCESSION, "20240229"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    if pixels.ndim == 3:
        ds.NumberOfFrames = pixels.shape[0]
    ds.Rows, ds.Columns = pixels.shape[-2:]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = allocated
    ds.BitsStored = bits_stored or allocated
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = int(pixels.dtype.kind == "i")
    if pixel_spacing is not None:
        ds.PixelSpacing = list(pixel_spacing)
    if imager_pixel_spacing is not None:
        ds.ImagerPixelSpacing = list(imager_pixel_spacing)
    if view_position is not None:
        ds.ViewPosition = view_position
    if rescale is not None:
        ds.RescaleSlope, ds.RescaleIntercept = rescale
    for keyword, value in extra.items():
        setattr(ds, keyword, value)
    ds.PixelData = pixels.tobytes()
    return ds


def dicom_bytes(ds: Dataset) -> bytes:
    """The Part-10 file bytes of ``ds`` (128-byte preamble, DICM, file meta, dataset)."""
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def jpeg_baseline_dicom(pixels: np.ndarray, quality: int = 90, **tags) -> tuple[Dataset, np.ndarray]:
    """An 8-bit DICOM in JPEG Baseline (encoded by Pillow, encapsulated by pydicom).

    Returns the dataset and Pillow's own decoding of the same JPEG stream (the independent expectation).
    """
    stream = jpeg_bytes(pixels, quality=quality)
    ds = make_dicom(pixels, **tags)
    ds.PixelData = encapsulate([stream])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.LossyImageCompression = "01"
    return ds, np.asarray(Image.open(io.BytesIO(stream)))


def png_bytes(array: np.ndarray, mode: str | None = None) -> bytes:
    """PNG bytes of a uint8 (L or RGB) or uint16 (16-bit grayscale) array; ``mode="P"`` makes a palette PNG."""
    image = Image.fromarray(array)
    if mode == "P":
        image = image.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def jpeg_bytes(array: np.ndarray, quality: int = 95) -> bytes:
    """JPEG bytes of a uint8 grayscale or RGB array."""
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares ``width`` x ``height`` 8-bit gray pixels but carries (almost) no data: a bomb probe."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 16))
        + _png_chunk(b"IEND", b"")
    )
