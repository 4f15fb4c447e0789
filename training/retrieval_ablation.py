"""Image-report retrieval of the stage-1 encoders, with and without AdaPatch (AdaMatch Table 5 ablation).

    python -m training.retrieval_ablation --run-dir runs/small [--without runs/small-no-adapatch] [--out FILE.md]

On the validation image-text pairs of the run's data (here: COVID-collection images and their clinical
notes), it reports Recall@1/5/10 and the median rank in both directions for
* the global embeddings (P_X pooled vs P_R pooled: CL_XR's similarity), and
* AdaMatch's fine-grained similarity (Eq. 5-6: patches vs words) when the prompt encoder has an AdaPatch head,
  or the same similarity on the fixed ViT patches when it does not.
Train the "without" run with ``stages.stage1_align.adapatch: false`` in a copy of the YAML.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch
from transformers import PreTrainedTokenizerFast

from codixr.metrics.retrieval import retrieval_from_similarity
from codixr.models.adapatch import content_word_mask, patch_word_similarity, special_token_ids
from codixr.models.prompt_encoder import PromptEncoder
from training.common import load_config, load_done
from training.data import TrainingData
from training.stage1_align import tokenize

logger = logging.getLogger("training.retrieval_ablation")


@torch.no_grad()
def retrieval_rows(run: Path, config: dict, data_dir: str | None) -> list[tuple[str, str, dict]]:
    stage1 = load_done(run / "stage1_align", f"Stage 1 of {run}")
    pe = PromptEncoder.from_pretrained(stage1 / "prompt_encoder").eval()
    tokenizer = PreTrainedTokenizerFast.from_pretrained(stage1 / "tokenizer")
    data = TrainingData(config, run, data_dir)
    pairs = [it for it in data.image_items("validate") if it.text]
    if len(pairs) < 2:
        raise RuntimeError("fewer than two validation image-text pairs")
    images = data.images(pairs, range(len(pairs)))
    enc = tokenize(tokenizer, [it.text for it in pairs])
    img, txt = pe.encode_image(images), pe.encode_text(enc["input_ids"], enc["attention_mask"])
    words = content_word_mask(enc["input_ids"], enc["attention_mask"], special_token_ids(pe))
    s_i, s_t = patch_word_similarity(img.tokens, txt.tokens, words)
    patches = "adaptive patches (AdaPatch)" if pe.adapatch is not None else "fixed ViT patches"
    return [(run.name, "global (CL_XR)", retrieval_from_similarity((img.pooled @ txt.pooled.T).numpy())),
            (run.name, f"patch-word, {patches}", retrieval_from_similarity(s_i.numpy(), s_t.numpy())),
            (run.name, "pairs", {"n": len(pairs)})]


def table(rows) -> str:
    lines = ["| run | similarity | direction | R@1 | R@5 | R@10 | median rank | n |", "|---|---|---|---:|---:|---:|---:|---:|"]
    n = {run: r["n"] for run, kind, r in rows if kind == "pairs"}
    for run, kind, result in rows:
        if kind == "pairs":
            continue
        for direction, res in result.items():
            rec = res.recall
            lines.append(f"| {run} | {kind} | {direction.replace('_', ' ')} | {rec[1]:.3f} | {rec[5]:.3f} | {rec[10]:.3f} | "
                         f"{res.median_rank:g} | {n[run]} |")
    return "\n".join(lines)


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="small")
    parser.add_argument("--run-dir", required=True, help="a run whose stage 1 trained with AdaPatch")
    parser.add_argument("--without", default=None, help="a run whose stage 1 trained without AdaPatch")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    config = load_config(args.config)
    rows = retrieval_rows(Path(args.run_dir), config, args.data_dir)
    if args.without:
        rows += retrieval_rows(Path(args.without), config, args.data_dir)
    text = table(rows)
    if args.out:
        Path(args.out).write_text(text + "\n", encoding="utf-8")
    logger.info("\n%s", text)
    return text


if __name__ == "__main__":
    main()
