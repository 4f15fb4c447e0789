"""``python -m codixr.evaluate``: the paper's evaluation (Sec. IV.B, Tables II-V) of a model package on a dataset.

    python -m codixr.evaluate --model assets/codixr-default --data ../shared/data \\
        --settings "T->F,L->F,L+T->F,T->L,F->L,F+T->L,F->T,L->T,F+L->T" --n 64 --out runs/evaluation

Generates what each setting needs (progress bar; cached under OUT/samples/, so a rerun resumes), then
writes OUT/results.json and OUT/results.md (tables laid out like the paper's Tables II-V, cross-modal
consistency, retrieval) and OUT/plots/. Numbers that cannot be computed here are reported as n/a with
the reason. See docs/evaluation.md.
"""

from __future__ import annotations

import argparse
import datetime
import logging
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from codixr.errors import CoDiXRError, InputError
from codixr.evaluate.settings import DEFAULT_SETTINGS, LETTERS, Setting, parse_settings
from codixr.modality import Modality

logger = logging.getLogger("codixr.evaluate")

RESULTS_JSON = "results.json"
RESULTS_MD = "results.md"


def build_parser() -> argparse.ArgumentParser:
    from codixr.evaluate.data import KINDS
    from codixr.evaluate.scoring import BACKBONES, READERS

    p = argparse.ArgumentParser(prog="python -m codixr.evaluate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="model package folder (default: $CODIXR_MODEL or the bundled default)")
    p.add_argument("--data", default=None, help="MIMIC-CXR folder or the public data folder (default: the shared data folder)")
    p.add_argument("--out", required=True, help="output folder (samples are cached there; a rerun resumes)")
    p.add_argument("--settings", default=",".join(DEFAULT_SETTINGS),
                   help="comma-separated settings such as T->F,L+T->F,F+L->T,labels->T (T or R = report)")
    p.add_argument("--n", type=int, default=64, help="items per setting (default 64)")
    p.add_argument("--n-real", type=int, default=None, help="real images per view for FID and Real Data rows (default: --n)")
    p.add_argument("--n-retrieval", type=int, default=200, help="real image-text pairs for retrieval (default 200)")
    p.add_argument("--steps", type=int, default=20, help="sampler steps (default 20)")
    p.add_argument("--guidance", type=float, default=None,
                   help="classifier-free guidance scale (default: the package's validated scale of each output)")
    p.add_argument("--scheduler", default="dpm++", help="sampler of the pipeline: dpm++ (default), ddim or ddpm")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=4, help="samples per pipeline call (default 4)")
    p.add_argument("--backbones", default=",".join(BACKBONES), help=f"FID backbones, from {', '.join(BACKBONES)}")
    p.add_argument("--readers", default=",".join(READERS), help=f"image readers for Table III, from {', '.join(READERS)}")
    p.add_argument("--kind", default="auto", choices=KINDS, help="dataset layout (default: detected)")
    p.add_argument("--split", default="auto", help="evaluation split (default: test when present, else validate)")
    p.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    p.add_argument("--following", default="on", choices=("on", "off", "only"),
                   help="the 'does the output follow its input' tables (on by default; 'only' skips Tables II-V)")
    p.add_argument("--n-following", type=int, default=128, help="frontals for the F->R following table (default 128)")
    p.add_argument("--n-image-following", type=int, default=16,
                   help="images per set of the image following tables (labels->F, T->F, view checks; twice as many "
                        "real frontals for the autoencoder); 0 skips them (default 16)")
    p.add_argument("--n-fid-following", type=int, default=64,
                   help="T->F images and real frontals per set for the Fréchet distance in the classifier's features (default 64)")
    return p


def _choices(value: str, allowed: Sequence[str], flag: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(v.strip().lower().replace("-", "_") if flag == "--backbones" else v.strip().lower()
                                for v in value.split(",") if v.strip()))
    unknown = [n for n in names if n not in allowed]
    if unknown or not names:
        raise InputError(f"{flag}: unknown or empty choice {', '.join(unknown) or value!r}; choose from {', '.join(allowed)}.")
    return names


def _check_numbers(args: argparse.Namespace) -> None:
    for flag, value in (("--n", args.n), ("--steps", args.steps), ("--batch-size", args.batch_size),
                        ("--n-retrieval", args.n_retrieval), ("--n-real", args.n_real or 1)):
        if value < 1:
            raise InputError(f"{flag} must be at least 1; got {value}.")
    if args.n_image_following < 0:
        raise InputError(f"--n-image-following must be 0 (skip the image tables) or more; got {args.n_image_following}.")
    if args.n_fid_following < 2:
        raise InputError(f"--n-fid-following must be at least 2; got {args.n_fid_following}.")


def load_model(model: str | None, device: str):
    """The pipeline on ``device`` with its progress bar off (the evaluation shows its own)."""
    from codixr.pipeline import CoDiXRPipeline

    pipe = CoDiXRPipeline.from_pretrained(model).to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _model_id(model: str | None) -> tuple[str, str]:
    """(shown name, fingerprint) of the model package."""
    import hashlib

    from codixr.pipeline import package_sha256, resolve_model_path

    name = resolve_model_path(model)
    if Path(name).expanduser().is_dir():
        return name, package_sha256(Path(name).expanduser())[:16]
    return name, hashlib.sha256(name.encode()).hexdigest()[:16]


def _settings_info(runs) -> dict[str, Any]:
    out = {}
    for run in runs:
        s, sel = run.setting, run.selection
        kinds = sorted({it.text_kind for it in sel.items if it.text_kind}) if s.reads_report else []
        notes = []
        for view in s.image_outputs:
            paired = sum(1 for it in sel.items if it.has(view))
            notes.append(f"{LETTERS[view]}: FID vs real {view.value} of the split; {paired} of {len(sel.items)} items "
                         f"have their own real {view.value}")
        if s.makes_report:
            refs = sum(1 for it in sel.items if it.impression)
            notes.append(f"T: {refs} of {len(sel.items)} items have a reference impression")
        out[s.name] = {"pool": sel.pool, "n": len(sel.items), "available": sel.available,
                       "text_kind": ", ".join(k for k in kinds if k), "note": "; ".join(notes),
                       "samples": str(run.store.folder)}
        if not sel.items:
            out[s.name]["note"] = f"n/a (no paired ground truth in this dataset): no {sel.pool} has every input of {s.name}"
    return out


def _plots(results: dict[str, Any], runs, references, bank, out: Path) -> dict[str, Any]:
    from codixr.evaluate.report import auroc_bars, sample_grid

    plots: dict[str, Any] = {"auroc": {}, "grids": {}, "notes": []}
    for reader, block in results["classification"].items():
        path = auroc_bars(block.get("rows", {}), f"AUROC per pathology — reader: {block['source']}",
                          out / "plots" / f"auroc_{reader}.png") if block["available"] else None
        if path is None:
            plots["notes"].append(f"No AUROC plot for reader {reader}: "
                                  + (block.get("reason") or "no AUROC is defined (no class with both outcomes)."))
        else:
            plots["auroc"][reader] = path.relative_to(out).as_posix()
    for run in runs:
        for view in run.setting.image_outputs:
            if not run.samples:
                continue
            generated = [bank.generated(run, s.index, view) for s in run.samples]
            own = all(it.has(view) for it in run.items)
            real_items = run.items if own else references.get(view, [])
            real = [bank.real(it.image(view)) for it in real_items]
            titles = (f"real {view.value} ({'same studies' if own else 'evaluation split'})",
                      f"generated {run.setting.slug}")  # PIL's default font has no arrow
            path = sample_grid(real, generated, titles, out / "plots" / f"grid_{run.setting.slug}_{view.value}.png")
            plots["grids"][f"{run.setting.name} ({LETTERS[view]})"] = path.relative_to(out).as_posix()
    return plots


def run(args: argparse.Namespace, argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the evaluation described by parsed ``args``; returns the results dict (also written to ``args.out``)."""
    import torch

    from codixr import __version__
    from codixr.evaluate import scoring
    from codixr.evaluate.data import load_eval_data, real_reference, select_items
    from codixr.evaluate.generation import GenerationConfig, SampleStore, generate
    from codixr.evaluate.report import write_json, write_markdown
    from codixr.pipeline import SCHEDULERS

    started = time.time()
    # 1. Check arguments
    settings: tuple[Setting, ...] = parse_settings(args.settings) if args.following != "only" else ()
    backbone_names = _choices(args.backbones, tuple(scoring.BACKBONES), "--backbones")
    reader_names = _choices(args.readers, scoring.READERS, "--readers")
    _check_numbers(args)
    if args.scheduler not in SCHEDULERS:
        raise InputError(f"--scheduler must be one of {', '.join(SCHEDULERS)}; got {args.scheduler!r}.")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")

    # 2. Load the model
    pipe = load_model(args.model, device)
    model_name, fingerprint = _model_id(args.model)

    # 3. Load the evaluation data and select the items of every setting
    data = load_eval_data(args.data, args.kind, args.split)
    selections = {s: select_items(s, data, args.n) for s in settings}
    views = [v for v in (Modality.FRONTAL, Modality.LATERAL) if any(v in s.image_outputs for s in settings)]
    references = {v: real_reference(data, v, args.n_real or args.n) for v in views}

    # 4. Generate (or reuse) the samples
    config = GenerationConfig(fingerprint, args.steps, args.guidance, args.seed, args.scheduler, args.batch_size)
    runs = []
    gen_started = time.time()
    for s in settings:
        store = SampleStore(out / "samples" / s.slug, s, config)
        samples = generate(pipe, s, selections[s].items, store, progress=not args.no_progress) if selections[s].items else []
        runs.append(scoring.SettingRun(s, selections[s], samples, store))
    generation_time = time.time() - gen_started

    # 5. Compute the metrics
    logger.info("computing metrics")
    bank = scoring.ImageBank(pipe.image_size)
    backbones = scoring.build_backbones(backbone_names, pipe, device)
    readers = scoring.build_readers(reader_names, pipe, device)
    findings = scoring.FindingsCache(bank)
    baselines = scoring.text_baselines(runs, data, pipe)
    results: dict[str, Any] = {
        "settings": _settings_info(runs),
        "fid": scoring.fid_table(runs, references, backbones, bank),
        "classification": scoring.classification_table(runs, references, readers, findings),
        "bleu": scoring.bleu_table(runs, baselines, data.describe.get("texts", "")),
        "report_labels": scoring.report_label_table(runs, baselines),
        "consistency": scoring.consistency_table(runs, readers, findings),
        "retrieval": scoring.retrieval_table(runs, data, pipe, bank, args.n_retrieval),
    }
    if args.following != "off":
        from codixr.evaluate.following import following_tables

        logger.info("does the output follow its input?")
        results["following"] = following_tables(pipe, data, n_images=args.n_following,
                                                n_image_sets=args.n_image_following, n_fid=args.n_fid_following,
                                                out_dir=out)

    # 6. Plots
    results["plots"] = _plots(results, runs, references, bank, out)

    # 7. Write results.json and results.md
    command = "python -m codixr.evaluate " + shlex.join(list(argv) if argv is not None else sys.argv[1:])
    results = {"meta": {
        "command": command, "model": model_name, "data": data.root, "kind": data.kind, "split": data.split,
        "data_sources": data.describe, "n": args.n, "generation": config.to_dict(), "device": device,
        "backbones": list(backbone_names),
        "backbone_status": {k: (v if isinstance(v, str) else "available") for k, v in backbones.items()},
        "readers": {r.name: (r.source if r.available else r.reason) for r in readers},
        "baseline_corpus_size": baselines.corpus_size if baselines else 0,
        "codixr_version": __version__, "created": datetime.datetime.now().isoformat(timespec="seconds"),
        "generation_time_s": generation_time, "wall_time_s": time.time() - started,
    }, **results}
    write_json(results, out / RESULTS_JSON)
    write_markdown(results, out / RESULTS_MD)
    logger.info("wrote %s and %s in %.1f s", out / RESULTS_JSON, out / RESULTS_MD, time.time() - started)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (2 for a problem the message explains)."""
    args = build_parser().parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        run(args, argv)
    except CoDiXRError as exc:
        logger.error("%s", exc)
        return 2
    return 0
