"""Assemble the trained components of every stage into one model package folder, with its model card.

    python -m training.build_package --config small --out assets/codixr-default

The package is a diffusers-style folder (``model_index.json``, one subfolder per component with
``config.json`` + safetensors, the tokenizer) loadable with ``CoDiXRPipeline.from_pretrained(folder)``.
Weights are stored as float16 by default (loaded back as float32 on the CPU). The model card
(``README.md``) lists the data, each stage's steps, wall time and hardware, the validation numbers the
stages measured, the evaluation results when ``<run>/evaluation/results.md`` exists, the speed table when
``<run>/benchmark.json`` (``python -m bench.pipeline --json``) exists, ``<run>/NOTES.md`` (the operator's notes on
the run) when present, limitations and licences.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import shutil
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from transformers import PreTrainedTokenizerFast

from codixr.models.configs import SD_SCHEDULER
from codixr.models.environment import CrossModalAttention, EnvironmentEncoder
from codixr.models.prompt_encoder import PromptEncoder
from codixr.models.text_unet import TextUNet
from codixr.models.conditioning import ConditionAdapter
from codixr.models.text_vae import OptimusTextVAE
from codixr.pipeline import CoDiXRPipeline
from training.common import REPO, autoencoder_dir, load_config, load_done, run_dir
from training.run_all import OPTIONAL_STAGES

logger = logging.getLogger("training.build_package")

STAGES = ("stage1_align", "stage2_vae", "stage2_vae_decoder", "stage2_unet_frontal", "stage2_unet_lateral", "stage2_text_vae",
          "stage2_text_unet", "stage3_joint_FL", "stage3_joint_FR")

DATA_AND_LICENCES = """\
- **Images**: RSNA Pneumonia Detection Challenge (1,350 frontal radiographs, research and non-commercial use,
  cite RSNA/NIH); the COVID-19 image data collection (Cohen et al., 2020; frontal and the only lateral views,
  with clinical notes; per-image licences CC BY, CC BY-SA, CC BY-NC-SA, Apache 2.0 or unspecified, including
  non-commercial share-alike parts); NIH ChestX-ray14 at 64 px (stage 1, G_R's image bridge and, flagged low
  resolution, G_F; public, Wang et al., 2017).
- **Reports**: Indiana University chest X-ray collection / OpenI impressions with their MeSH labels, as shipped
  inside torchxrayvision (CC BY-NC-ND 4.0).
- Because of this mix, the weights are for **non-commercial research use**; derived outputs should carry the
  same notices. Nothing synthetic or invented was used for training."""

LIMITATIONS = """\
- **Not a medical device.** Outputs are synthetic and must never be used for diagnosis.
- **Thin data.** A few thousand real images and ~3.5k impressions instead of MIMIC-CXR's 150k triplets. Lateral
  views are very few (the lateral UNet is the frontal one fine-tuned on them), and studies with both views even
  fewer, so frontal-lateral consistency (stage 3 F-L) rests on a few dozen pairs.
- **No real image-impression pairs.** The IU reports come without images here, and the COVID collection's notes
  are case descriptions, not impressions. G_R learns X-ray to report from real radiographs paired with real
  impressions *by their labels* (an RSNA opacity image with impressions that assert opacity, pneumonia or
  consolidation, and only those; a normal image with normal impressions; see the notes), so X-ray to report
  generation follows the findings an image's P_X embedding evokes, not its fine detail, and it can only say
  what the images' labels cover.
- **Small and fast.** The `small` configuration (16x16x8 image latents, 128-d text latents) is sized for a
  2-core CPU; images are blurrier and reports more formulaic than the paper's 6.77B-parameter model."""


def assemble(root: Path) -> CoDiXRPipeline:
    """A pipeline from the ``final/`` folders of a run's finished stages."""
    s1 = load_done(root / "stage1_align", "Stage 1")
    fl, fr = root / "stage3_joint_FL" / "final", root / "stage3_joint_FR" / "final"
    joint = {}
    if (root / "stage3_joint_FR" / "DONE.json").is_file() and (root / "stage3_joint_FL" / "DONE.json").is_file():
        for name, folder in (("frontal", fl), ("lateral", fl), ("report", fr)):
            joint[f"environment_{name}"] = EnvironmentEncoder.from_pretrained(folder / f"environment_{name}")
            joint[f"cross_attention_{name}"] = CrossModalAttention.from_pretrained(folder / f"cross_attention_{name}")
    else:
        logger.warning("stage 3 is not finished: the package will generate several outputs independently")
    g_r = load_done(root / "stage2_text_unet", "G_R")
    for name, folder in (("condition_report", g_r / "condition_report"),
                         ("condition_frontal", root / "stage2_unet_frontal" / "final" / "condition_frontal"),
                         ("condition_lateral", root / "stage2_unet_lateral" / "final" / "condition_lateral")):
        if folder.is_dir():
            joint[name] = ConditionAdapter.from_pretrained(folder)
    return CoDiXRPipeline(
        prompt_encoder=PromptEncoder.from_pretrained(s1 / "prompt_encoder"),
        tokenizer=PreTrainedTokenizerFast.from_pretrained(s1 / "tokenizer"),
        vae=AutoencoderKL.from_pretrained(autoencoder_dir(root) / "vae"),
        unet_frontal=UNet2DConditionModel.from_pretrained(load_done(root / "stage2_unet_frontal", "G_F") / "unet_frontal"),
        unet_lateral=UNet2DConditionModel.from_pretrained(load_done(root / "stage2_unet_lateral", "G_L") / "unet_lateral"),
        text_vae=OptimusTextVAE.from_pretrained(load_done(root / "stage2_text_vae", "Stage 2c") / "text_vae"),
        text_unet=TextUNet.from_pretrained(g_r / "text_unet"),
        scheduler=DDPMScheduler(**SD_SCHEDULER),
        **joint,
    )


def model_card(config: dict, root: Path, out: Path) -> str:
    rows = ["| stage | steps | batch | lr | wall time | hardware | final loss |", "|---|---:|---:|---:|---:|---|---:|"]
    total = 0.0
    details = []
    for stage in STAGES:
        path = root / stage / "DONE.json"
        if not path.is_file():
            if stage not in OPTIONAL_STAGES:
                rows.append(f"| {stage} | not run | | | | | |")
            continue
        d = json.loads(path.read_text())
        total += d["seconds"]
        loss = d.get("final_metrics", {}).get("loss")
        rows.append(f"| {stage} | {d['steps']} | {d['batch_size']} | {d['learning_rate']:g} | "
                    f"{d['seconds'] / 60:.1f} min | {d['hardware']} | {loss if loss is not None else '—'} |")
        extra = {k: v for k, v in d.items() if k not in ("stage", "steps", "batch_size", "learning_rate", "seconds",
                                                          "hardware", "final_metrics", "weight_decay", "processes",
                                                          "device", "mixed_precision")}
        details.append(f"- `{stage}`: " + json.dumps(extra))
    size_mb = sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) / 1e6
    evaluation = root / "evaluation" / "results.md"
    benchmark = root / "benchmark.json"
    parts = [
        "---", "license: other", "library_name: diffusers", "tags: [chest-x-ray, any-to-any, codi-xr, medical]", "---", "",
        f"# CoDiXR `{config['model']}` — any-to-any chest X-ray and report impression model", "",
        "Generates frontal and lateral chest X-rays (256x256) and report impressions from any subset of them "
        "(and/or diagnosis labels), after CoDi-XR (Molino et al.). Load it with "
        "`CoDiXRPipeline.from_pretrained(path)`.", "",
        "## Training data and licences", "", DATA_AND_LICENCES, "",
        "## Training", "", *rows, "", f"Sum of the stages' wall times: {total / 3600:.2f} h. Package size on disk: {size_mb:.1f} MB "
        "(float16 safetensors).", "", "Per-stage details (sample counts, validation numbers measured by the stage):", "",
        *details, "",
    ]
    notes = root / "NOTES.md"  # the operator's account of the run (parallel chains, interruptions, changed steps)
    if notes.is_file():
        parts += ["### Notes on this run", "", notes.read_text(encoding="utf-8").strip(), ""]
    if benchmark.is_file():
        parts += ["## Speed", "", *speed_table(json.loads(benchmark.read_text())), ""]
    if evaluation.is_file():  # its plots are copied next to the card by main()
        parts += ["## Evaluation", "", evaluation.read_text(), ""]
        parts += report_samples(root / "evaluation" / "samples")
    parts += ["## Limitations", "", LIMITATIONS, ""]
    return "\n".join(parts)


def report_samples(samples: Path, per_setting: int = 6) -> list[str]:
    """The card's X-ray -> impression samples (the evaluation's F->T, L->T, F+L->T outputs), with how varied they are."""
    lines = []
    for folder in sorted(samples.glob("*-to-T")):
        manifest = folder / "manifest.json"
        if not manifest.is_file():
            continue
        items = sorted(json.loads(manifest.read_text())["samples"].values(), key=lambda item: item["index"])
        reports = [item["report"] for item in items if item.get("report")]
        if not reports:
            continue
        setting = folder.name.replace("-to-", "→")
        lines += [f"**{setting}** ({len(reports)} generated, {len(set(reports))} distinct; the first {per_setting}, "
                  "with the dataset each case comes from):", "", "| case | generated impression |", "|---|---|"]
        for item in items[:per_setting]:
            lines.append(f"| {item['key'].split(':')[0]} | {item['report'].replace('|', '/')} |")
        lines.append("")
    return ["### Generated impressions from X-rays", "", *lines] if lines else []


def _scales(value) -> str:
    """A benchmark's guidance: one scale, or the package's default per output."""
    if isinstance(value, dict):
        return "per output (" + ", ".join(f"{k} {v:g}" for k, v in value.items()) + ")"
    return f"{value:g}"


def speed_table(b: dict) -> list[str]:
    """The card's speed section from ``python -m bench.pipeline --json <run>/benchmark.json``."""
    m = b["machine"]
    lines = [f"Measured with `python -m bench.pipeline --model <package>` on {m['cpus']} CPU core(s) "
             f"({m['processor']}, {m['torch_threads']} torch thread(s), torch {m['torch']}, load average "
             f"{m['load_average_before'][0]:.2f} before), {b['steps']} {b['sampler']} steps, guidance "
             f"{_scales(b['guidance_scale'])}, joint cross-modal generation {'on' if b['joint'] else 'off'}; "
             f"{b['repeats']} timed runs after one warm-up.", "",
             f"| request | median s | min s | max s | within {b['target_s']:g} s |", "|---|---:|---:|---:|---|"]
    for r in b["results"]:
        lines.append(f"| {r['request']} | {r['median_s']:.2f} | {r['min_s']:.2f} | {r['max_s']:.2f} | "
                     f"{'yes' if r['within_target'] else 'no'} |")
    return lines


def _plot_priority(f: Path) -> tuple:
    """The issue-13 grids (real validation frontals beside generated ones, per label) first, then the charts,
    then the text-to-image grids (the paper's main settings), then the other grids."""
    name = f.name
    return (not name.startswith("following_"), name.startswith("grid_"), not name.startswith("grid_T-"), name)


def copy_plots(plots: Path, out: Path, budget_bytes: float, card_reserve: float = 80e3,
               jpeg_quality: int = 75) -> tuple[dict[str, str], list[str]]:
    """Copy the evaluation's plots next to the card (order: ``_plot_priority``) while the package stays within
    ``budget_bytes`` (``card_reserve`` kept for the card). A plot that does not fit as PNG goes as a greyscale
    or RGB JPEG (``jpeg_quality``) when that fits. Returns ({PNG name: shipped name} for plots shipped under
    another name, the names left out)."""
    from PIL import Image

    if not plots.is_dir():
        return {}, []
    used = sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) + card_reserve
    renamed: dict[str, str] = {}
    omitted = []
    (out / "plots").mkdir(exist_ok=True)
    for f in sorted(plots.glob("*.png"), key=_plot_priority):
        if used + f.stat().st_size <= budget_bytes:
            shutil.copy2(f, out / "plots" / f.name)
            used += f.stat().st_size
            continue
        target = out / "plots" / f"{f.stem}.jpg"
        with Image.open(f) as image:
            image.convert("L" if image.mode in ("L", "LA", "I", "I;16") else "RGB").save(
                target, "JPEG", quality=jpeg_quality, optimize=True)
        if used + target.stat().st_size <= budget_bytes:
            renamed[f.name] = target.name
            used += target.stat().st_size
        else:
            target.unlink()
            omitted.append(f.name)
    if renamed:
        logger.info("shipped %d plot(s) as JPEG (quality %d) to stay within %.1f MB: %s", len(renamed), jpeg_quality,
                    budget_bytes / 1e6, ", ".join(renamed.values()))
    if omitted:
        logger.warning("left %d plot(s) out of the package to stay within %.1f MB: %s", len(omitted), budget_bytes / 1e6,
                       ", ".join(omitted))
    return renamed, omitted


def main(argv=None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="small")
    parser.add_argument("--run-dir", default=None)
    parser.add_argument("--out", default=None, help="default: assets/codixr-default for small, else <run>/package")
    parser.add_argument("--dtype", default="float16", choices=("float16", "float32"))
    parser.add_argument("--max-mb", type=float, default=60.0,
                        help="size budget of the package; evaluation plots that would exceed it are left out")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    config = load_config(args.config)
    root = run_dir(config, args.run_dir)
    out = Path(args.out or (REPO / "assets" / "codixr-default" if config["name"] == "small" else root / "package"))
    pipe = assemble(root)
    if out.exists():
        shutil.rmtree(out)
    pipe.to(getattr(torch, args.dtype)).save_pretrained(out)
    renamed, omitted = copy_plots(root / "evaluation" / "plots", out, args.max_mb * 1e6)
    card = model_card(config, root, out)
    for name, shipped in renamed.items():
        card = card.replace(f"](plots/{name})", f"](plots/{shipped})")
    for name in omitted:  # a plot left out for the size budget: say where it is instead of a broken link
        card = re.sub(r"!\[([^\]]*)\]\(plots/" + re.escape(name) + r"\)",
                      rf"(plot `{name}` not shipped, to keep the package under {args.max_mb:g} MB: "
                      rf"see the run's evaluation/plots)", card)
    (out / "README.md").write_text(card, encoding="utf-8")
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    if size > args.max_mb * 1e6:
        raise SystemExit(f"the package is {size / 1e6:.2f} MB, over the {args.max_mb:g} MB budget: the weights alone "
                         "do not fit; make a component smaller or raise --max-mb")
    logger.info("model package written to %s (%.2f MB)", out, size / 1e6)
    return out


if __name__ == "__main__":
    main()
