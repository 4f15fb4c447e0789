"""``python -m codixr.generate``: write a synthetic dataset (see ``--help`` and :mod:`codixr.generate`)."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Sequence

from codixr.errors import CoDiXRError
from codixr.generate.conditions import LABEL_MODES
from codixr.generate.export import FINDINGS_SOURCES, SAMPLERS, ExportConfig, export_dataset, merge_manifests
from codixr.generate.summary import write_summary

logger = logging.getLogger("codixr.generate")

EPILOG = """\
examples:
  python -m codixr.generate --model assets/codixr-default --n 1000 \\
      --from-labels "Pleural Effusion=0.3,Pneumothorax=0.1" --out exports/eff --batch-size 4
  python -m codixr.generate --from-reports impressions.txt --outputs frontal,lateral --out exports/rep --dicom
  python -m codixr.generate --from-studies ../shared/data --condition-on frontal --outputs lateral --out exports/lat
  accelerate launch -m codixr.generate ...   (each process writes its shard; the main process merges)

Rerunning the same command resumes: samples already written are skipped. Label specs: each label is drawn
independently; samples drawing none are conditioned on "No Finding". --label-mode exact (default) gives
exactly round(p*n) samples per label; bernoulli draws per sample (extendable to a larger --n).
"""


def build_parser() -> argparse.ArgumentParser:
    """The command-line options of ``python -m codixr.generate``."""
    parser = argparse.ArgumentParser(prog="python -m codixr.generate", description=__doc__.splitlines()[0],
                                     epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="the dataset folder (created; rerun to resume)")
    parser.add_argument("--model", help="model package folder (default: $CODIXR_MODEL or assets/codixr-default)")
    parser.add_argument("--n", "--num-samples", dest="n", type=int,
                        help="number of samples (default with reports/studies: one per item)")
    parser.add_argument("--outputs", help="frontal,lateral,report (default: every modality that is not an input)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--from-labels", metavar="SPEC",
                        help='prevalence spec, e.g. "Pleural Effusion=0.3,Pneumothorax=10%%"')
    source.add_argument("--from-reports", metavar="FILE",
                        help="one impression per line, or a CSV (see --report-column)")
    source.add_argument("--from-studies", metavar="DIR", help="a dataset folder read with codixr.data")
    parser.add_argument("--label-mode", choices=LABEL_MODES, default="exact", help="with --from-labels (default exact)")
    parser.add_argument("--report-column", help="CSV column of the impressions (default: impression, report or text)")
    parser.add_argument("--studies-kind", default="auto", choices=("auto", "mimic", "iu", "public", "synthetic"),
                        help="dataset kind of --from-studies (default: detected)")
    parser.add_argument("--condition-on", default="frontal",
                        help="with --from-studies: inputs taken from each study, of frontal,lateral,report,labels")
    parser.add_argument("--split", choices=("train", "validate", "test"), help="with --from-studies: one split only")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--steps", type=int, default=20, help="sampler steps (default 20)")
    parser.add_argument("--guidance", type=float, default=None,
                        help="classifier-free guidance scale (default: the package's validated scale per output)")
    parser.add_argument("--sampler", choices=SAMPLERS, default="dpm++")
    parser.add_argument("--seed", type=int, default=0, help="base seed; sample i uses seed + 3*i")
    parser.add_argument("--dicom", action="store_true", help="also write each image as a DICOM marked synthetic")
    parser.add_argument("--findings", choices=FINDINGS_SOURCES, default="zero-shot",
                        help="image findings reader per sample (default zero-shot; xrv/trained need their weights)")
    parser.add_argument("--threads", type=int, help="torch CPU threads per process (default: torch's choice; on a "
                        "machine shared with other jobs, 1 can be many times faster)")
    parser.add_argument("--merge-only", action="store_true", help="only merge the manifest shards of --out")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("-q", "--quiet", action="store_true", help="log warnings only")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (2 for a request that cannot be carried out)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if args.merge_only:
            records = merge_manifests(args.out)
            write_summary(args.out)
            logger.info("%s: merged manifest holds %d samples", args.out, len(records))
            return 0
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        config = ExportConfig(
            out=args.out, n=args.n, outputs=args.outputs, model=args.model, from_labels=args.from_labels,
            label_mode=args.label_mode, from_reports=args.from_reports, report_column=args.report_column,
            from_studies=args.from_studies, studies_kind=args.studies_kind, condition_on=args.condition_on,
            split=args.split, batch_size=args.batch_size, steps=args.steps, guidance_scale=args.guidance,
            sampler=args.sampler, seed=args.seed, dicom=args.dicom, findings=args.findings)
        export_dataset(config, progress=not args.no_progress)
    except CoDiXRError as exc:
        logger.error("%s", exc)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
