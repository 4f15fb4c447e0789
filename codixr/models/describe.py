"""Parameter counts per component, beside the paper's (Sec. IV.A).

    python -m codixr.models.describe paper     # built on the meta device: no memory, no weights
    python -m codixr.models.describe small

The paper counts CLIP 737M, AutoKL 101M (x2), Optimus 241M, X-ray UNet 1.77B (x2), report UNet
2.04B; 6.77B in all. See docs/architecture.md for why our ``paper`` configuration differs.
"""

from __future__ import annotations

import argparse
import sys

import torch

# Component groups as the paper counts them: name -> (our components, paper's count, instances in the paper's total)
PAPER_COUNTS: dict[str, tuple[tuple[str, ...], float | None, int]] = {
    "Prompt encoders P (CLIP towers + AdaPatch head)": (("prompt_encoder",), 737e6, 1),
    "AutoKL (X-ray VAE)": (("vae",), 101e6, 2),
    "Optimus (text VAE)": (("text_vae",), 241e6, 1),
    "X-ray UNet G_F": (("unet_frontal",), 1.77e9, 1),
    "X-ray UNet G_L": (("unet_lateral",), 1.77e9, 1),
    "Report UNet G_R": (("text_unet",), 2.04e9, 1),
    "Environment encoders V + QKV (stage 3)": (
        ("environment_frontal", "environment_lateral", "environment_report",
         "cross_attention_frontal", "cross_attention_lateral", "cross_attention_report"), None, 1),
}
PAPER_TOTAL = 6.77e9


def count_parameters(config: str = "paper") -> dict[str, int]:
    """Parameters of every component of a configuration, built on the meta device (no memory used)."""
    from codixr.models.configs import build_components

    with torch.device("meta"):
        components = build_components(config, vocab_size=None if config == "paper" else 4000)
    return {name: sum(p.numel() for p in module.parameters())
            for name, module in components.items() if isinstance(module, torch.nn.Module)}


def _fmt(n: float | None) -> str:
    if n is None:
        return "—"
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.1f}M"


def parameter_table(config: str = "paper") -> str:
    """A Markdown table of our parameter counts beside the paper's."""
    counts = count_parameters(config)
    rows = ["| component | ours | paper | paper instances |", "|---|---:|---:|---:|"]
    for label, (names, paper, instances) in PAPER_COUNTS.items():
        ours = sum(counts.get(n, 0) for n in names)
        rows.append(f"| {label} | {_fmt(ours)} | {_fmt(paper)} | {instances} |")
    # The paper counts two AutoKL instances; we share one VAE between the two views.
    total = sum(counts.values())
    rows.append(f"| **total** (ours: one shared VAE) | **{_fmt(total)}** | **{_fmt(PAPER_TOTAL)}** | |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", nargs="?", default="paper", choices=("tiny", "small", "paper"))
    args = parser.parse_args(argv)
    sys.stdout.write(f"CoDiXR `{args.config}` configuration, parameters per component:\n\n")
    sys.stdout.write(parameter_table(args.config) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
