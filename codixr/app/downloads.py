"""The files a user can download after a generation: PNG and DICOM Secondary Capture of every generated image,
the generated impression as text, and the findings as JSON.

Generated images are exported by :func:`codixr.io.write_secondary_capture`: marked synthetic, fresh UIDs, a
synthetic patient, nothing copied from any upload. The DICOM description and the JSON name what the output was
conditioned on (which views, labels, sampler settings), never the text of a given impression.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence

from PIL import Image

from codixr.io import SYNTHETIC_MARKER, write_png, write_secondary_capture

PREFIX = "codixr"


def conditioning_summary(inputs: Sequence[str], labels: Sequence[str], settings: Mapping[str, Any]) -> str:
    """E.g. "from frontal view + impression; labels: Edema; dpm++, 20 steps, guidance 2.0, seed 0"."""
    given = " + ".join({"frontal": "frontal view", "lateral": "lateral view", "report": "impression"}[m]
                       for m in inputs) or "labels only"
    parts = [f"from {given}"]
    if labels:
        parts.append(f"labels: {', '.join(labels)}")
    parts.append(f"{settings['sampler']}, {settings['steps']} steps, guidance {settings['guidance']:g}, "
                 f"seed {settings['seed']}")
    return "; ".join(parts)


def write_downloads(
    folder: Path,
    *,
    images: Mapping[str, Image.Image],
    report: str | None,
    findings: Mapping[str, Any],
    description: str,
    model: str,
) -> list[Path]:
    """Write the downloads of one generation into ``folder``; returns their paths (images first).

    Args:
        images: generated views, {"frontal": PIL, "lateral": PIL}.
        report: the generated impression, if any.
        findings: JSON-ready findings (``ItemFindings.to_dict()`` per item, and what they were run on).
        description: how the outputs were conditioned (see :func:`conditioning_summary`).
        model: the model package name, recorded in the files.
    """
    folder.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    for view, image in images.items():
        paths.append(write_png(image, folder / f"{PREFIX}-{view}-synthetic.png"))
        paths.append(write_secondary_capture(image, folder / f"{PREFIX}-{view}-synthetic.dcm", view=view,
                                             description=f"Model {model}; {description}."))
    if report is not None:
        path = folder / f"{PREFIX}-report-synthetic.txt"
        path.write_text(f"{SYNTHETIC_MARKER}\nModel {model}; {description}.\n\nImpression:\n{report}\n",
                        encoding="utf-8")
        paths.append(path)
    path = folder / f"{PREFIX}-findings.json"
    document = {"synthetic_marker": SYNTHETIC_MARKER, "model": model, "conditioning": description, **findings}
    path.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    paths.append(path)
    return paths
