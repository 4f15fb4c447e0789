"""Findings for any chest X-ray, given or generated: what a classifier reads and where the model looks.

    from codixr.findings import classify, classify_all, findings_chart
    findings = classify(image)            # torchxrayvision DenseNet (official or trained-here weights)
    both = classify_all(image, pipe)      # {"classifier": Findings, "zero_shot": Findings | None}
    figure = findings_chart(list(both.values()))

Every `Findings` holds the ten pathologies of the paper's Table I as keys, None where not assessed.
Names resolve lazily so that ``import codixr.findings`` does not load torch.
"""

from __future__ import annotations

import importlib

# name -> module that defines it.
_LAZY = {
    "Findings": "codixr.findings.result",
    "XRV_SOURCE": "codixr.findings.result",
    "TRAINED_SOURCE": "codixr.findings.result",
    "ZERO_SHOT_SOURCE": "codixr.findings.result",
    "classify": "codixr.findings.classifier",
    "classify_all": "codixr.findings.classifier",
    "zero_shot_findings": "codixr.findings.classifier",
    "load_classifier": "codixr.findings.classifier",
    "clear_cache": "codixr.findings.classifier",
    "XRVClassifier": "codixr.findings.classifier",
    "ClassifierUnavailable": "codixr.findings.classifier",
    "to_xrv_input": "codixr.findings.classifier",
    "zero_shot_scores": "codixr.findings.zero_shot",
    "keypatches": "codixr.findings.keypatch",
    "KeypatchResult": "codixr.findings.keypatch",
    "load_codebook": "codixr.findings.codebook",
    "build_codebook": "codixr.findings.codebook",
    "Codebook": "codixr.findings.codebook",
    "draw_keypatches": "codixr.findings.overlay",
    "findings_chart": "codixr.findings.plots",
    "figure_to_image": "codixr.findings.plots",
}

__all__ = list(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'codixr.findings' has no attribute {name!r}")
