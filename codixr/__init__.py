"""CoDiXR: any-to-any generation of frontal and lateral chest X-rays and report impressions.

The public API is flat, in the spirit of torchxrayvision::

    import codixr
    pipe = codixr.CoDiXRPipeline.from_pretrained()
    xray = codixr.read_xray("study/frontal.dcm")

Heavy sub-packages (torch, diffusers, transformers) are imported on first use, so that
``import codixr.io`` stays fast.
"""

from __future__ import annotations

import importlib
import logging

from codixr.errors import CoDiXRError, InputError
from codixr.modality import CONDITION_LABELS, NO_FINDING, PATHOLOGIES, Modality

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())

# name -> module that defines it; resolved lazily by __getattr__.
_LAZY = {
    "CoDiXRPipeline": "codixr.pipeline",
    "CoDiXRPipelineOutput": "codixr.pipeline",
    "read_xray": "codixr.io",
    "XRay": "codixr.io",
    "XRayReadError": "codixr.io",
    "classify": "codixr.findings",
    "classify_all": "codixr.findings",
    "keypatches": "codixr.findings",
    "Findings": "codixr.findings",
    "load_mimic_cxr": "codixr.data",
    "load_iu_xray": "codixr.data",
    "load_public_cxr": "codixr.data",
    "load_synthetic": "codixr.data",
    "StudyDataset": "codixr.data",
}

__all__ = ["Modality", "PATHOLOGIES", "CONDITION_LABELS", "NO_FINDING", "CoDiXRError", "InputError", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        module = importlib.import_module(_LAZY[name])
        return getattr(module, name)
    raise AttributeError(f"module 'codixr' has no attribute {name!r}")
