"""The paper's evaluation metrics (Sec. IV.B, Tables II-V) plus cross-modal consistency.

    from codixr.metrics import compute_fid, CallableBackbone, classification_metrics, bleu_scores, label_reports
    fid = compute_fid(real, fake, XRVDenseNetBackbone())            # Table II, FIDResult names its backbone
    auc = classification_metrics(y_true, y_score)                    # Table III, per pathology + averages
    bleu = bleu_scores(generated_reports, reference_reports)         # Table IV, BLEU-1..4
    f1 = report_label_f1(generated_reports, reference_reports)       # Table V, rule-based labeler

Names are imported on first use, so text metrics do not pay for importing torch.
"""

from __future__ import annotations

import importlib

from codixr.metrics.errors import BackboneUnavailableError, MetricInputError

_LAZY = {
    # fid.py
    "FIDResult": "fid", "FeatureBackbone": "fid", "CallableBackbone": "fid", "InceptionV3Backbone": "fid",
    "XRVDenseNetBackbone": "fid", "load_backbone": "fid", "BACKBONES": "fid", "frechet_distance": "fid",
    "feature_statistics": "fid", "fid_from_features": "fid", "extract_features": "fid", "compute_fid": "fid",
    # classification.py
    "ClassificationReport": "classification", "classification_metrics": "classification", "f1_metrics": "classification",
    # text.py
    "bleu_scores": "text", "rouge_l": "text", "rouge_l_pair": "text", "text_metrics": "text",
    # labeler.py
    "ReportLabeler": "labeler", "Mention": "labeler", "label_report": "labeler", "label_reports": "labeler",
    "report_label_f1": "labeler",
    # retrieval.py / consistency.py
    "RetrievalResult": "retrieval", "retrieval_metrics": "retrieval", "retrieval_from_similarity": "retrieval",
    "AgreementReport": "consistency", "finding_agreement": "consistency", "binarize_scores": "consistency",
}

__all__ = ["BackboneUnavailableError", "MetricInputError", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f"codixr.metrics.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'codixr.metrics' has no attribute {name!r}")
