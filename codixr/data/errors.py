"""Errors raised by the dataset readers. Each message names what is missing and what to do."""

from __future__ import annotations

from codixr.errors import CoDiXRError


class DatasetError(CoDiXRError):
    """Base class of the dataset readers' errors."""


class DatasetNotFoundError(DatasetError, FileNotFoundError):
    """A dataset folder or one of its required files (metadata table, report archive) is missing."""


class DatasetFormatError(DatasetError, ValueError):
    """A dataset file exists but does not have the expected layout (missing columns, unreadable XML, ...)."""


class ImageCacheError(DatasetError, OSError):
    """A preprocessed image cache folder is missing, incomplete or does not match what was asked for."""
