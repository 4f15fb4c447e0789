"""X-ray input/output: the paper's preprocessing behind one reader, and synthetic-image export.

    from codixr.io import read_xray
    xray = read_xray("frontal.dcm")          # XRay(image=float32[256x256], view='frontal', modality='CR', ...)
    xray = read_xray(png_bytes, view="lateral")

Every reading error is a :class:`XRayReadError` with a message a clinician can act on.
"""

from __future__ import annotations

from codixr.io.errors import (
    ColourImageError,
    CorruptFileError,
    EmptyFileError,
    ImageTooLargeError,
    MultiFrameError,
    NotARadiographError,
    UnsupportedFormatError,
    XRayReadError,
)
from codixr.io.export import SYNTHETIC_MARKER, write_png, write_secondary_capture
from codixr.io.preprocess import DEFAULT_MAX_PIXELS, TARGET_SPACING_MM
from codixr.io.reader import VIEWS, XRay, read_xray

__all__ = [
    "read_xray",
    "XRay",
    "VIEWS",
    "TARGET_SPACING_MM",
    "DEFAULT_MAX_PIXELS",
    "write_secondary_capture",
    "write_png",
    "SYNTHETIC_MARKER",
    "XRayReadError",
    "EmptyFileError",
    "UnsupportedFormatError",
    "CorruptFileError",
    "NotARadiographError",
    "ColourImageError",
    "MultiFrameError",
    "ImageTooLargeError",
]
