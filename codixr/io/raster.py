"""Decode PNG and JPEG X-rays with Pillow, keeping 16-bit PNGs at 16 bits.

The trap this avoids: Pillow opens a 16-bit grayscale PNG as mode "I;16"; ``convert("L")`` on it clips every
value above 255 to white. The array is read directly from the 16-bit mode and normalised by 65535.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps

from codixr.io.errors import CorruptFileError, ImageTooLargeError, MultiFrameError, XRayReadError
from codixr.io.preprocess import RawImage, check_grey, check_pixel_count, luminance

logger = logging.getLogger(__name__)

_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I")


@dataclass(frozen=True)
class RasterImage:
    """A decoded PNG/JPEG: the pixels plus the kind of source."""

    raw: RawImage
    modality: str  # "PNG" or "JPEG"
    photometric_interpretation: str  # described with DICOM terms: MONOCHROME2, RGB or PALETTE COLOR


def _to_pixels(im: Image.Image, allow_colour: bool) -> tuple[np.ndarray, int, str]:
    """(pixels, bits, photometric) of an opened image, without losing 16-bit precision."""
    if im.mode == "L":
        return np.asarray(im), 8, "MONOCHROME2"
    if im.mode in _SIXTEEN_BIT_MODES:
        return np.asarray(im), 16, "MONOCHROME2"
    if im.mode in ("LA", "1"):
        return np.asarray(im.getchannel(0) if im.mode == "LA" else im.convert("L")), 8, "MONOCHROME2"
    # Colour (Pillow reads 16-bit colour PNGs as 8-bit RGB) and palette images: refused when they hold real
    # colour, else (a grey image saved as RGB) BT.601 luminance.
    photometric = "PALETTE COLOR" if im.mode in ("P", "PA") else "RGB"
    rgb = np.asarray(im if im.mode == "RGB" else im.convert("RGB"))
    if not allow_colour:
        check_grey(rgb)
    return luminance(rgb), 8, photometric


def read_raster(data: bytes, kind: str, max_pixels: int, allow_colour: bool = False) -> RasterImage:
    """Decode a PNG or JPEG (``kind``) from ``data``; raises :class:`XRayReadError` subclasses.

    The size is checked from the header (against ``max_pixels``, the padded square included) before any pixel
    is decoded; colour images are refused unless ``allow_colour``.
    """
    try:
        with Image.open(io.BytesIO(data), formats=[kind]) as im:
            width, height = im.size
            check_pixel_count((height, width), None, max_pixels, kind)
            if kind == "PNG" and getattr(im, "n_frames", 1) > 1:  # APNG; a JPEG (MPO) keeps its first image
                raise MultiFrameError(
                    f"This {kind} is animated ({im.n_frames} frames); CoDiXR reads one still radiograph. "
                    "Export a single frame."
                )
            im.load()
            if kind == "JPEG":
                im = ImageOps.exif_transpose(im)
            pixels, bits, photometric = _to_pixels(im, allow_colour)
    except XRayReadError:
        raise
    except Image.DecompressionBombError:
        raise ImageTooLargeError(
            f"This {kind} is beyond Pillow's decompression-bomb limit and is not decoded. Export it at a lower "
            "resolution."
        ) from None
    except Exception as exc:  # untrusted bytes: any decoder failure means a damaged file
        logger.debug("%s could not be decoded (%s)", kind, type(exc).__name__)
        raise CorruptFileError(
            f"This {kind} file is damaged or truncated and cannot be decoded. Re-export or re-download it."
        ) from None
    logger.debug("read %s image, %d x %d, %d bits", kind, height, width, bits)
    raw = RawImage(pixels=pixels, bits_stored=bits)
    return RasterImage(raw=raw, modality=kind, photometric_interpretation=photometric)
