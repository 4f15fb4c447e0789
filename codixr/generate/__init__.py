"""Synthetic dataset export: many samples from one model, written in a layout ``codixr.data`` reads back.

    python -m codixr.generate --model PATH --n 10000 --from-labels "Pleural Effusion=0.3,Pneumothorax=0.1" \
        --outputs frontal,lateral,report --out exports/effusion-10k --batch-size 8 --dicom
    accelerate launch -m codixr.generate ...        # one shard of the samples per process

    from codixr.generate import ExportConfig, export_dataset
    export_dataset(ExportConfig(out="exports/x", n=100, from_labels="Pneumothorax=0.5"))

The layout is described in :mod:`codixr.data.synthetic` (``codixr.data.load_synthetic`` reads it back);
seeds, batching, determinism and resuming in :mod:`codixr.generate.export`; label prevalence specs in
:mod:`codixr.generate.conditions`; the requested vs measured prevalence summary in :mod:`codixr.generate.summary`.
"""

from __future__ import annotations

from codixr.generate.conditions import (
    LABEL_MODES,
    Condition,
    assign_labels,
    parse_prevalence,
    read_reports,
)
from codixr.generate.export import (
    ExportConfig,
    ExportResult,
    export_dataset,
    merge_manifests,
    package_sha256,
    sample_seed,
)
from codixr.generate.summary import prevalence_summary, write_summary

__all__ = [
    "ExportConfig",
    "ExportResult",
    "export_dataset",
    "merge_manifests",
    "package_sha256",
    "sample_seed",
    "Condition",
    "parse_prevalence",
    "assign_labels",
    "LABEL_MODES",
    "read_reports",
    "prevalence_summary",
    "write_summary",
]
