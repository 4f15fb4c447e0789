"""One-click examples for the Generate tab, read from ``assets/examples/`` when that folder exists.

The folder holds ``examples.json`` and the images it names (made from the bundled model's own outputs or
public-domain material; never patient data)::

    [
      {"frontal": "frontal-1.png", "outputs": ["lateral", "report"]},
      {"impression": "Small left pleural effusion.", "labels": ["Pleural Effusion"], "outputs": ["frontal"],
       "steps": 20, "guidance": 2.0, "seed": 0, "sampler": "dpm++"}
    ]

Keys: frontal, lateral (file names in the folder), impression, labels, outputs (required), steps, guidance, seed,
sampler. A missing folder or file gives no examples; an entry that does not fit is skipped with a log line.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from codixr.errors import CoDiXRError
from codixr.app.generation import GenerationRequest

logger = logging.getLogger(__name__)

INDEX = "examples.json"


def load_examples(folder: str | Path) -> list[list]:
    """Rows for ``gr.Examples`` in the order of the Generate inputs:
    frontal, lateral, impression, labels, outputs, steps, guidance, seed, sampler, long_impression."""
    index = Path(folder) / INDEX
    if not index.is_file():
        return []
    try:
        entries = json.loads(index.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        logger.warning("%s could not be read (%s); no examples shown", index, type(exc).__name__)
        return []
    rows = []
    for i, entry in enumerate(entries if isinstance(entries, list) else []):
        try:
            rows.append(_row(Path(folder), entry))
        except (CoDiXRError, KeyError, TypeError, ValueError) as exc:
            logger.warning("example %d in %s skipped: %s", i, index, exc)
    return rows


def _row(folder: Path, entry: dict) -> list:
    files = {}
    for view in ("frontal", "lateral"):
        if entry.get(view):
            path = (folder / entry[view]).resolve()
            if folder.resolve() not in path.parents or not path.is_file():
                raise ValueError(f"{view} file {entry[view]!r} is not a file inside the examples folder")
            files[view] = str(path)
    request = GenerationRequest(frontal=files.get("frontal"), lateral=files.get("lateral"),
                                impression=entry.get("impression"), labels=tuple(entry.get("labels", ())),
                                outputs=tuple(entry["outputs"]), steps=entry.get("steps", 20),
                                guidance=entry.get("guidance", 2.0), seed=entry.get("seed", 0),
                                sampler=entry.get("sampler", "dpm++")).checked()
    return [request.frontal, request.lateral, request.impression or "", list(request.labels), list(request.outputs),
            request.steps, request.guidance, request.seed, request.sampler, request.long_impression]
