"""Findings and keypatches of one chest X-ray (and optionally its impression), written to a folder.

    python -m codixr.findings IMAGE [--report "Small left pleural effusion."] --out DIR [--model PATH]

IMAGE is a DICOM, PNG or JPEG file. DIR receives ``findings.json`` (the classifier's and the model's zero-shot
readings), ``findings.png`` (the bar chart), ``keypatches.png`` (the adaptive-patch overlay in the image's pixels)
and ``keywords.json`` (ranked keywords, boxes, and for a report its highlighted words). Nothing is written
anywhere else and no part of the image file's header is copied.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from codixr.errors import CoDiXRError

logger = logging.getLogger("codixr.findings")


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(prog="python -m codixr.findings", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("image", help="the X-ray: DICOM, PNG or JPEG")
    parser.add_argument("--report", help="an impression to match word by word to the image's patches")
    parser.add_argument("--out", type=Path, required=True, help="folder for the results (created)")
    parser.add_argument("--model", help="model package (default: $CODIXR_MODEL or the bundled default)")
    parser.add_argument("--source", default="auto", choices=("auto", "xrv", "trained"),
                        help="classifier weights (default auto: official torchxrayvision when installed)")
    parser.add_argument("--top-k", type=int, default=5, help="keypatches drawn (default 5)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    from codixr.findings import classify, figure_to_image, findings_chart, keypatches, zero_shot_findings
    from codixr.io import read_xray
    from codixr.pipeline import CoDiXRPipeline

    # 1. Read the image with the paper's preprocessing (the model's input) and load the model
    try:
        xray = read_xray(args.image)
    except CoDiXRError as exc:
        parser.exit(2, f"error: {exc}\n")
    pipe = CoDiXRPipeline.from_pretrained(args.model)
    pipe.set_progress_bar_config(disable=True)
    args.out.mkdir(parents=True, exist_ok=True)

    # 2. Findings: the classifier (or its plain "not installed" state) and the model's own zero-shot reading
    readings = {"classifier": classify(xray, pipe, args.source), "zero_shot": zero_shot_findings(xray, pipe)}
    (args.out / "findings.json").write_text(
        json.dumps({k: v.to_dict() for k, v in readings.items()}, indent=2) + "\n", encoding="utf-8")
    figure_to_image(findings_chart([r for r in readings.values() if r.available])).save(args.out / "findings.png")

    # 3. Keypatches: codebook keywords per adaptive patch, or each clinical word of the report
    result = keypatches(pipe, xray, report=args.report, top_k=args.top_k)
    result.overlay.save(args.out / "keypatches.png")
    (args.out / "keywords.json").write_text(json.dumps({
        "method": result.method, "keywords": result.keywords, "highlights": result.highlights,
        "boxes": [{k: (list(v) if isinstance(v, tuple) else v) for k, v in box.items()} for box in result.boxes],
        "warnings": result.warnings}, indent=2, default=float) + "\n", encoding="utf-8")
    for name, reading in readings.items():
        logger.info("%s (%s): %s", name, reading.source,
                    ", ".join(reading.positive) or ("none positive" if reading.available else reading.message))
    logger.info("keywords: %s", ", ".join(k for k, _ in result.keywords[: args.top_k]))
    logger.info("wrote findings.json, findings.png, keypatches.png and keywords.json to %s", args.out)
    return args.out


if __name__ == "__main__":
    main()
