"""``read_xray``: the one entry point that turns a DICOM, PNG or JPEG into the model's input."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Union

import numpy as np

from codixr.errors import InputError, UnknownModalityError
from codixr.io.dicom import read_dicom
from codixr.io.errors import CorruptFileError, EmptyFileError, UnsupportedFormatError, XRayReadError
from codixr.io.preprocess import DEFAULT_MAX_PIXELS, preprocess
from codixr.io.raster import read_raster
from codixr.modality import Modality

logger = logging.getLogger(__name__)

XRaySource = Union[str, os.PathLike, bytes, bytearray, memoryview, BinaryIO]

VIEWS = ("frontal", "lateral", "unknown")

_SUPPORTED = "CoDiXR reads DICOM (.dcm), PNG and JPEG files."
_CONVERT = "Convert it to PNG (16-bit if the source has more than 8 bits) or use the original DICOM."
# Recognised file kinds that are not read: (signature, offset, what it is, what to do).
_OTHER_FORMATS = (
    (b"%PDF", 0, "a PDF document", "Export the radiograph itself as DICOM or PNG."),
    (b"PK\x03\x04", 0, "a ZIP archive", "Unzip it and open the DICOM or PNG file inside."),
    (b"\x1f\x8b", 0, "a gzip archive", "Decompress it and open the image inside."),
    (b"7z\xbc\xaf\x27\x1c", 0, "a 7-Zip archive", "Extract it and open the image inside."),
    (b"Rar!", 0, "a RAR archive", "Extract it and open the image inside."),
    (b"\xd0\xcf\x11\xe0", 0, "a Microsoft Office document", "Export the radiograph itself as DICOM or PNG."),
    (b"GIF8", 0, "a GIF image", _CONVERT),
    (b"II*\x00", 0, "a TIFF image", _CONVERT),
    (b"MM\x00*", 0, "a TIFF image", _CONVERT),
    (b"BM", 0, "a BMP image", _CONVERT),
    (b"WEBP", 8, "a WebP image", _CONVERT),
    (b"ftyp", 4, "an HEIF/MP4 file", _CONVERT),
    (b"\x00\x00\x00\x0cjP  ", 0, "a JPEG 2000 image", _CONVERT),
    (b"\xffO\xffQ", 0, "a JPEG 2000 codestream", _CONVERT),
)


@dataclass(frozen=True, eq=False, repr=False, slots=True)
class XRay:
    """A chest X-ray ready for CoDiXR, with non-identifying metadata only.

    Attributes:
        image: float32 array in [0, 1], ``size`` x ``size`` (or the padded square at 0.139 mm if size=None).
        view: "frontal", "lateral" or "unknown" (DICOM ViewPosition, else the caller's ``view``).
        modality: DICOM Modality ("CR", "DX", "OT"...) or the file kind ("PNG", "JPEG").
        source_spacing_mm: (row, column) pixel spacing of the source in mm, ``None`` when unknown.
        photometric_interpretation: of the source, in DICOM terms (MONOCHROME1/2, RGB, PALETTE COLOR...).
        bits_stored: bit depth the source was normalised by (2**bits_stored - 1).
        original_shape: (rows, columns) of the source image.
    """

    image: np.ndarray
    view: str
    modality: str
    source_spacing_mm: tuple[float, float] | None
    photometric_interpretation: str
    bits_stored: int
    original_shape: tuple[int, int]

    def __repr__(self) -> str:
        shape = "x".join(map(str, self.image.shape))
        return (
            f"XRay(image={self.image.dtype}[{shape}], view={self.view!r}, modality={self.modality!r}, "
            f"source_spacing_mm={self.source_spacing_mm}, photometric_interpretation="
            f"{self.photometric_interpretation!r}, bits_stored={self.bits_stored}, "
            f"original_shape={self.original_shape})"
        )


def _read_bytes(source: XRaySource) -> bytes:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source)
    if isinstance(source, (str, os.PathLike)):
        try:
            return Path(source).read_bytes()
        except FileNotFoundError:
            raise XRayReadError("No file exists at the given path. Check the path and try again.") from None
        except IsADirectoryError:
            message = f"The path is a folder, not a file. {_SUPPORTED} Give one image file."
            raise UnsupportedFormatError(message) from None
        except OSError as exc:
            raise XRayReadError(f"The file could not be read ({exc.strerror}). Check that it is readable.") from None
    read = getattr(source, "read", None)
    if callable(read):
        data = read()
        if isinstance(data, str):
            raise TypeError("read_xray needs a file opened in binary mode ('rb'), not text mode.")
        return bytes(data)
    raise TypeError(f"read_xray reads a path, bytes or a binary file object, not {type(source).__name__}.")


def _looks_like_text(head: bytes) -> bool:
    if head.startswith((b"\xff\xfe", b"\xfe\xff", b"\xef\xbb\xbf")):
        return True
    text = head.decode("utf-8", errors="replace")
    printable = sum(ch.isprintable() or ch in "\t\r\n\f" for ch in text)
    return printable >= 0.95 * len(text)


def sniff_format(data: bytes) -> str:
    """Return "dicom", "png" or "jpeg" for ``data``, or raise the error that describes what it is."""
    if not data:
        raise EmptyFileError("The file is empty (0 bytes): the transfer or export did not complete. Export it again.")
    if data[128:132] == b"DICM" or data[:2] in (b"\x02\x00", b"\x08\x00"):  # with preamble, or a bare dataset
        return "dicom"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    for signature, offset, what, advice in _OTHER_FORMATS:
        if data[offset : offset + len(signature)] == signature:
            raise UnsupportedFormatError(f"This file is {what}, not an X-ray image. {_SUPPORTED} {advice}")
    if _looks_like_text(data[:4096]):
        raise UnsupportedFormatError(f"This is a text file, not an X-ray image. {_SUPPORTED}")
    raise CorruptFileError(
        f"This file is not a readable image: its contents are not recognisable (damaged, or not an image). "
        f"{_SUPPORTED} Re-export the radiograph and try again."
    )


def _caller_view(view: str | Modality | None) -> str | None:
    if view is None:
        return None
    if isinstance(view, str) and view.strip().lower() == "unknown":
        return "unknown"
    parsed = Modality.parse(view)
    if not parsed.is_image:
        raise UnknownModalityError(f"An X-ray view is frontal, lateral or unknown, not {view!r}.")
    return parsed.value


def read_xray(
    source: XRaySource,
    size: int | None = 256,
    view: str | Modality | None = None,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    allow_colour: bool = False,
) -> XRay:
    """Read a chest X-ray (DICOM, PNG or JPEG) and preprocess it exactly as the CoDi-XR paper (Sec. II).

    Steps, in order (paper's words in quotes; see :mod:`codixr.io.preprocess`):

    1. Decode: DICOM with pydicom (uncompressed, JPEG baseline/lossless, JPEG-LS, JPEG 2000 via pylibjpeg,
       RLE); PNG/JPEG with Pillow at 8 or 16 bits. Sizes are checked against ``max_pixels`` from the header,
       before decoding. RGB and palette images with real colour content are refused (a photograph is not a
       radiograph); grey ones saved as RGB become BT.601 luminance.
    2. Rescale: apply RescaleSlope/RescaleIntercept where present.
    3. Normalise: "dividing every pixel by the maximum pixel value possible given by their bit depth,
       bringing the range to [0, 1]": by 2**BitsStored - 1; by 255 or 65535 for 8- or 16-bit PNG/JPEG.
    4. Invert: "for images with a Photometric Interpretation of Monochrome-1, the pixel values were
       inverted": x -> 1 - x.
    5. Clip to [0, 1].
    6. Resample: "resampled those with non-standard spacing to [0.139, 0.139]" (PixelSpacing, else
       ImagerPixelSpacing; each axis on its own; unknown spacing, as in PNG/JPEG, is left as it is).
    7. Pad: "added zero-padding around the images" to a centred square.
    8. Resize: "then resized them to 256x256" (antialiased bilinear).

    Args:
        source: a path, the file's bytes, or a binary file object.
        size: output side in pixels; ``None`` returns the padded square at 0.139 mm before resizing.
        view: the view to report when the file does not say (PNG/JPEG, DICOM without a known
            ViewPosition): "frontal", "lateral", "unknown" or a :class:`~codixr.modality.Modality`.
        max_pixels: refuse, before decoding, images whose declared pixel count, size at 0.139 mm or padded
            square reaches this (an image of exactly ``max_pixels`` is refused).
        allow_colour: read colour images as their BT.601 luminance instead of refusing them.

    Returns:
        An :class:`XRay`. Patient-identifying tags are never read into it, nor logged.

    Raises:
        EmptyFileError, UnsupportedFormatError, CorruptFileError, NotARadiographError (ColourImageError for
        colour content), MultiFrameError, ImageTooLargeError (all :class:`XRayReadError`); ``XRayReadError``
        itself when a path cannot be read.
        InputError / UnknownModalityError / TypeError for invalid arguments.
    """
    # 1. Check arguments
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 1):
        raise InputError(f"size must be a positive number of pixels or None, not {size!r}.")
    if not isinstance(max_pixels, int) or max_pixels < 1:
        raise InputError(f"max_pixels must be a positive integer, not {max_pixels!r}.")
    fallback_view = _caller_view(view)

    # 2. Decode (format from the content, never from the file name)
    data = _read_bytes(source)
    kind = sniff_format(data)
    if kind == "dicom":
        decoded = read_dicom(data, max_pixels, allow_colour)
        file_view = decoded.view
    else:
        decoded = read_raster(data, kind.upper(), max_pixels, allow_colour)
        file_view = None
    if file_view and fallback_view not in (None, "unknown", file_view):
        logger.debug("ViewPosition gives %s, caller gave %s; using the file's", file_view, fallback_view)

    # 3. Preprocess as the paper
    raw = decoded.raw
    image = preprocess(raw, size=size, max_pixels=max_pixels)
    return XRay(
        image=image,
        view=file_view or fallback_view or "unknown",
        modality=decoded.modality,
        source_spacing_mm=raw.spacing_mm,
        photometric_interpretation=decoded.photometric_interpretation,
        bits_stored=raw.bits_stored,
        original_shape=tuple(raw.pixels.shape[:2]),
    )
