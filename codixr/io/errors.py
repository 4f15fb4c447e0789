"""Errors raised while reading an X-ray. Each message says what is wrong and what the user can do.

Messages never quote patient-identifying tags, file names or raw decoder output.
"""

from __future__ import annotations

from codixr.errors import CoDiXRError


class XRayReadError(CoDiXRError):
    """An X-ray file or buffer could not be turned into a model input."""


class EmptyFileError(XRayReadError):
    """The file or buffer holds no bytes at all."""


class UnsupportedFormatError(XRayReadError):
    """The input is a readable file of a kind CoDiXR does not read (PDF, text, TIFF, an undecodable codec...)."""


class CorruptFileError(XRayReadError):
    """The input claims to be (or may be) an image but is truncated, damaged or undecodable."""


class NotARadiographError(XRayReadError):
    """The DICOM object is not a projection radiograph (CT, MR, ultrasound, a report, a document...)."""


class ColourImageError(NotARadiographError):
    """The image has real colour content (a photograph, a colour screenshot): not a grey-scale radiograph."""


class MultiFrameError(XRayReadError):
    """The DICOM object holds several frames; CoDiXR reads one radiograph per file."""


class ImageTooLargeError(XRayReadError):
    """The declared image size reaches the pixel limit (guard against decompression bombs), checked before decoding."""
