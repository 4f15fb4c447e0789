"""Errors raised by the metrics library (all derive from :class:`codixr.errors.CoDiXRError`)."""

from __future__ import annotations

from codixr.errors import CoDiXRError, InputError


class MetricInputError(InputError):
    """Data handed to a metric has the wrong shape, range or length (the message says which)."""


class BackboneUnavailableError(CoDiXRError, FileNotFoundError):
    """A FID feature backbone cannot be built because its weight file is not on this machine.

    Weights are never downloaded: the message names the file and the place (or environment
    variable) where it must be put.
    """
