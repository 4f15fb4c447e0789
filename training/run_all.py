"""Run every training stage in order, skipping the ones already done, then build the model package.

    python -m training.run_all --config small                  # the bundled default (CPU, resumable)
    python -m training.run_all --config tiny --limit 8         # CI-sized smoke run of every stage
    accelerate launch --multi_gpu -m training.run_all --config paper

A killed run resumes from each stage's latest checkpoint when started again.
"""

from __future__ import annotations

import argparse
import logging

from training.common import load_config, run_dir, stage_done

logger = logging.getLogger("training.run_all")

# Stages a configuration may leave out (its YAML has no section for them).
OPTIONAL_STAGES = frozenset({"stage2_vae_decoder"})

# (stage folder, module, extra arguments) in the paper's order
PLAN = (
    ("stage1_align", "training.stage1_align", []),
    ("stage2_vae", "training.stage2_vae", []),
    ("stage2_vae_decoder", "training.stage2_vae", ["--decoder-only"]),  # only where the config has this stage
    ("stage2_text_vae", "training.stage2_text", ["--part", "vae"]),
    ("stage2_unet_frontal", "training.stage2_unet", ["--view", "frontal"]),
    ("stage2_unet_lateral", "training.stage2_unet", ["--view", "lateral"]),
    ("stage2_text_unet", "training.stage2_text", ["--part", "unet"]),
    ("stage3_joint_FL", "training.stage3_joint", ["--pair", "FL"]),
    ("stage3_joint_FR", "training.stage3_joint", ["--pair", "FR"]),
)


def main(argv=None) -> None:
    import importlib

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="small")
    parser.add_argument("--run-dir", default=None)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--max-steps", type=int, default=None)
    parser.add_argument("--out", default=None, help="where build_package writes the model package")
    parser.add_argument("--only", nargs="*", default=None, help="run only these stage folders")
    parser.add_argument("--skip-package", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    config = load_config(args.config)
    root = run_dir(config, args.run_dir)
    common = ["--config", args.config, "--run-dir", str(root)]
    for flag, value in (("--data-dir", args.data_dir), ("--limit", args.limit), ("--max-steps", args.max_steps)):
        if value is not None:
            common += [flag, str(value)]
    for folder, module, extra in PLAN:
        if args.only and folder not in args.only:
            continue
        if folder not in config["stages"] and folder in OPTIONAL_STAGES:
            continue
        if stage_done(root / folder):
            logger.info("%s: done, skipping", folder)
            continue
        logger.info("%s: starting", folder)
        importlib.import_module(module).main(common + extra)
    if not args.skip_package:
        from training.build_package import main as build

        build(["--config", args.config, "--run-dir", str(root)] + (["--out", args.out] if args.out else []))


if __name__ == "__main__":
    main()
