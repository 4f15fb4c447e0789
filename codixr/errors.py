"""Exceptions raised by CoDiXR. Every message says what was wrong and what to do about it."""


class CoDiXRError(Exception):
    """Base class of every error CoDiXR raises on purpose."""


class InputError(CoDiXRError, ValueError):
    """A request to the model is not valid (e.g. nothing given, or an output that is also an input)."""


class EmptyInputError(InputError):
    """No input modality (image, report or labels) was given."""


class OverlappingModalitiesError(InputError):
    """A modality was asked for as an output while it is also given as an input."""


class UnknownModalityError(InputError):
    """A modality name is not frontal, lateral or report."""


class UnknownLabelError(InputError):
    """A diagnosis label is not one of the labels the model knows."""


class ReportTooLongError(InputError):
    """A report impression exceeds the text encoder's token limit (only raised when truncation is refused)."""


class ModelPackageError(CoDiXRError, OSError):
    """A model package folder or hub id cannot be loaded (missing files, not cached while offline, ...)."""
