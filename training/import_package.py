"""Start a run from the finished stages of an existing model package, to retrain only some stages.

    python -m training.import_package --model assets/codixr-default --run-dir ~/codixr-runs/small-v2 \
        --stages stage1_align stage2_vae stage2_unet_frontal stage2_unet_lateral stage3_joint_FL

Each named stage gets ``<run>/<stage>/final/<component>`` (float32, ``save_pretrained``) and a ``DONE.json``
that says where it came from (``imported_from``, the package's SHA-256) and carries the stage's row of the
package card's training table (steps, batch, learning rate, wall time), so that the new card still accounts for
the training behind every component. ``training.run_all`` then skips those stages and trains the rest.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
from pathlib import Path

from training.common import REPO

logger = logging.getLogger("training.import_package")

# The pipeline components each stage produces (the folder names of its final/).
STAGE_COMPONENTS: dict[str, tuple[str, ...]] = {
    "stage1_align": ("prompt_encoder", "tokenizer"),
    "stage2_vae": ("vae",),
    "stage2_unet_frontal": ("unet_frontal", "condition_frontal"),
    "stage2_unet_lateral": ("unet_lateral", "condition_lateral"),
    "stage2_text_vae": ("text_vae",),
    "stage2_text_unet": ("text_unet", "condition_report"),
    "stage3_joint_FL": ("environment_frontal", "environment_lateral", "cross_attention_frontal",
                        "cross_attention_lateral"),
    "stage3_joint_FR": ("environment_report", "cross_attention_report"),
}
# Components a stage has only in packages made after its condition adapter existed (issues 12 and 13); a package
# without them imports that stage without one, and the flow keeps the single-token convention.
OPTIONAL_COMPONENTS = frozenset({"condition_frontal", "condition_lateral", "condition_report"})


def card_rows(card: str) -> dict[str, dict]:
    """The training table of a package card: stage -> steps, batch size, learning rate, seconds, hardware."""
    rows = {}
    pattern = re.compile(r"^\| (stage\w+) \| (\d+) \| (\d+) \| ([0-9.e-]+) \| ([0-9.]+) min \| ([^|]+) \|")
    for line in card.splitlines():
        match = pattern.match(line)
        if match:
            stage, steps, batch, lr, minutes, hardware = match.groups()
            rows[stage] = {"steps": int(steps), "batch_size": int(batch), "learning_rate": float(lr),
                           "seconds": round(float(minutes) * 60, 1), "hardware": hardware.strip()}
    return rows


def import_stages(model: str | Path, run: str | Path, stages: list[str]) -> list[str]:
    """Write the named stages of ``run`` from the package at ``model``; returns the stages written."""
    from codixr.pipeline import CoDiXRPipeline, package_sha256

    model, run = Path(model), Path(run)
    unknown = [s for s in stages if s not in STAGE_COMPONENTS]
    if unknown:
        raise SystemExit(f"Unknown stage(s) {', '.join(unknown)}; choose from {', '.join(STAGE_COMPONENTS)}.")
    pipe = CoDiXRPipeline.from_pretrained(model)
    card = (model / "README.md").read_text(encoding="utf-8") if (model / "README.md").is_file() else ""
    rows = card_rows(card)
    digest = package_sha256(model)
    written = []
    for stage in stages:
        folder = run / stage
        if (folder / "DONE.json").is_file():
            logger.info("%s: already in %s, left as it is", stage, folder)
            continue
        final = folder / "final"
        for name in STAGE_COMPONENTS[stage]:
            component = getattr(pipe, name, None)
            if component is None and name in OPTIONAL_COMPONENTS:
                logger.info("%s: %s has no %s (made before it existed); imported without it", stage, model, name)
                continue
            if component is None:
                raise SystemExit(f"{model} has no {name} component, so {stage} cannot be imported from it.")
            component.save_pretrained(final / name)
        if stage == "stage1_align":  # stages read the run's tokenizer from <run>/tokenizer
            pipe.tokenizer.save_pretrained(run / "tokenizer")
        row = rows.get(stage, {})
        summary = {"stage": stage, "steps": row.get("steps", 0), "batch_size": row.get("batch_size", 0),
                   "learning_rate": row.get("learning_rate", 0.0), "seconds": row.get("seconds", 0.0),
                   "hardware": row.get("hardware", "unknown"), "imported_from": str(model),
                   "package_sha256": digest,
                   "note": "trained for the imported package; see its card for this stage's training"}
        (folder / "DONE.json").write_text(json.dumps(summary, indent=2))
        written.append(stage)
        logger.info("%s: imported from %s", stage, model)
    return written


def main(argv=None) -> list[str]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(REPO / "assets" / "codixr-default"), help="the package to start from")
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--stages", nargs="+", required=True, help=f"any of {', '.join(STAGE_COMPONENTS)}")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    return import_stages(args.model, args.run_dir, args.stages)


if __name__ == "__main__":
    main()
