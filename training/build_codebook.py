"""Build AdaMatch's textual codebook from the training impressions of IU X-ray (OpenI).

The rule set (phrases, entity groups, counting, selection) is documented in :mod:`codixr.findings.codebook`.
Only the patient-disjoint *train* split of ``codixr.data.load_iu_xray`` is read (its default split), so that
validation reports never shape the keywords. The output is deterministic for a given torchxrayvision wheel.

    python -m training.build_codebook --out assets/codebook.json --top 200
"""

from __future__ import annotations

import argparse
import logging
from collections import Counter
from pathlib import Path

from codixr.findings.codebook import CATEGORIES, build_codebook

logger = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write (e.g. assets/codebook.json)")
    parser.add_argument("--top", type=int, default=200, help="entries in all; ceil(top/4) per category (default 200)")
    parser.add_argument("--min-count", type=int, default=3, help="least number of reports an entity must occur in")
    parser.add_argument("--split", default="train", help="IU X-ray split to read (default train)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    from codixr.data import load_iu_xray
    from codixr.data.iu import LICENSE

    studies = load_iu_xray().split(args.split)
    impressions = [s.impression for s in studies if s.impression]
    codebook = build_codebook(
        impressions, top=args.top, min_count=args.min_count,
        source=f"IU X-ray / OpenI report impressions (Indiana University, via torchxrayvision), {args.split} split: "
               f"{len(impressions)} impressions of {len(studies)} studies",
        licence=f"{LICENSE}: derived from the IU X-ray reports; non-commercial use, attribute the Open-i collection",
    )
    codebook.meta.update({"split": args.split, "top": args.top, "min_count": args.min_count,
                          "built_by": "python -m training.build_codebook"})
    path = codebook.save(args.out)
    per = Counter(e.category for e in codebook)
    logger.info("wrote %d keywords (%s) from %d impressions to %s", len(codebook),
                ", ".join(f"{c} {per.get(c, 0)}" for c in CATEGORIES), codebook.num_reports, path)
    return path


if __name__ == "__main__":
    main()
