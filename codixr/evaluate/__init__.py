"""The evaluation command: the paper's metrics (Sec. IV.B, Tables II-V) for a model package on a dataset.

    python -m codixr.evaluate --model PATH --data DIR --settings "T->F,F->T" --n 8 --out OUT

Layout: :mod:`~codixr.evaluate.settings` (what "L+T→F" means), :mod:`~codixr.evaluate.data` (which
real items and ground truth each setting uses), :mod:`~codixr.evaluate.generation` (batched, seeded,
resumable sample cache), :mod:`~codixr.evaluate.scoring` (one function per table, on top of
:mod:`codixr.metrics`), :mod:`~codixr.evaluate.report` (results.json, results.md, plots) and
:mod:`~codixr.evaluate.cli` (the numbered steps of the command). See docs/evaluation.md.
"""

from __future__ import annotations

import importlib

_LAZY = {
    "main": "cli", "run": "cli", "build_parser": "cli",
    "Setting": "settings", "parse_setting": "settings", "parse_settings": "settings",
    "DEFAULT_SETTINGS": "settings", "PAPER_SETTINGS": "settings",
    "EvalItem": "data", "EvalData": "data", "load_eval_data": "data", "select_items": "data",
    "GenerationConfig": "generation", "SampleStore": "generation", "generate": "generation",
}

__all__ = list(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f"codixr.evaluate.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'codixr.evaluate' has no attribute {name!r}")
