"""Stage 1 — shared latent space (paper Sec. III.A, Fig. 2a): align P_X (both views) and P_R by InfoNCE.

    python -m training.stage1_align --config small            # CPU, or:
    accelerate launch -m training.stage1_align --config paper

First trains the report tokenizer on the training texts (``<run>/tokenizer``). Then every step sums
symmetric InfoNCE terms over three kinds of real pairs, as far as the data has them:

* image <-> report text (MIMIC impressions; here the COVID collection's clinical notes), the paper's CL_XR;
* image <-> diagnosis labels (RSNA, NIH, COVID findings) and report <-> labels (IU impressions with their
  human MeSH labels): labels act as a bridge between images and the IU reports, which have no images here
  (CoDi's "bridging alignment"), and train the label encoder used for label-conditioned generation.
  Rows that share a label set are all positives of each other (supervised-contrastive targets).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from codixr.models.adapatch import content_word_mask, patch_word_loss, special_token_ids
from codixr.models.configs import build_prompt_encoder, get_config
from codixr.models.tokenizer import train_report_tokenizer
from training.common import prepare_stage, train_stage
from training.data import TrainingData, labels_multi_hot

logger = logging.getLogger("training.stage1")
STAGE = "stage1_align"


def same_labels(labels: torch.Tensor) -> torch.Tensor:
    """(B, L) multi-hot -> (B, B) 1 where two rows have the identical label set."""
    return (labels[:, None, :] == labels[None, :, :]).all(-1).float()


class AlignModule(torch.nn.Module):
    def __init__(self, prompt_encoder, adamatch_weight: float = 1.0):
        super().__init__()
        self.prompt_encoder = prompt_encoder
        self.adamatch_weight = adamatch_weight

    def forward(self, batch, generator=None):
        pe = self.prompt_encoder
        parts, total = {}, 0.0
        if "image" in batch:  # image <-> labels
            h_x = pe.encode_image(batch["image"]).pooled
            h_l = pe.encode_labels(batch["image_labels"]).pooled
            loss = pe.contrastive_loss(h_x, h_l, same_labels(batch["image_labels"]))
            parts["CL_X-labels"], total = loss.item(), total + loss
        if "report_ids" in batch:  # report <-> labels
            h_r = pe.encode_text(batch["report_ids"], batch["report_mask"]).pooled
            h_l = pe.encode_labels(batch["report_labels"]).pooled
            loss = pe.contrastive_loss(h_r, h_l, same_labels(batch["report_labels"]))
            parts["CL_R-labels"], total = loss.item(), total + loss
        if "pair_image" in batch:  # image <-> text: the paper's CL_XR (+ AdaMatch's patch-word loss, Eq. 5-9)
            img = pe.encode_image(batch["pair_image"])
            txt = pe.encode_text(batch["pair_ids"], batch["pair_mask"])
            loss = pe.contrastive_loss(img.pooled, txt.pooled)
            parts["CL_XR"], total = loss.item(), total + loss
            if pe.adapatch is not None and self.adamatch_weight > 0:
                words = content_word_mask(batch["pair_ids"], batch["pair_mask"], special_token_ids(pe))
                loss = patch_word_loss(img.tokens, txt.tokens, words, pe.logit_scale.exp().clamp(max=100.0))
                parts["AdaMatch"], total = loss.item(), total + self.adamatch_weight * loss
        parts["temperature"] = float(1 / pe.logit_scale.exp().item())
        return total, parts


def tokenize(tokenizer, texts: list[str], limit: int = 77) -> dict[str, torch.Tensor]:
    from codixr.data.reports import truncate_to_token_limit

    cut = [truncate_to_token_limit(t, tokenizer, max_tokens=limit)[0] for t in texts]
    enc = tokenizer(cut, padding=True, truncation=True, max_length=limit, return_tensors="pt")
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


def get_tokenizer(config: dict, out: Path, data: TrainingData):
    """Train the report tokenizer once on the training texts and keep it in ``<run>/tokenizer``.

    ``tokenizer.copy_from`` (a folder, relative to the run folder) reuses another run's tokenizer instead, for
    ablations that must share one vocabulary (WordPiece training breaks frequency ties in hash order).
    """
    from transformers import PreTrainedTokenizerFast

    if (out / "tokenizer.json").is_file():
        return PreTrainedTokenizerFast.from_pretrained(out)
    source = config["tokenizer"].get("copy_from")
    if source:
        tokenizer = PreTrainedTokenizerFast.from_pretrained((out.parent / source).resolve())
    else:
        tokenizer = train_report_tokenizer(data.corpus("train"), vocab_size=int(config["tokenizer"]["vocab_size"]))
        logger.info("trained a %d-token WordPiece vocabulary on %d training texts", len(tokenizer), len(data.corpus("train")))
    tokenizer.save_pretrained(out)
    return tokenizer


def main(argv=None) -> dict:
    ctx = prepare_stage(__doc__, STAGE, argv=argv)
    config, root, spec, data = ctx.config, ctx.root, ctx.spec, ctx.data
    tokenizer = get_tokenizer(config, root / "tokenizer", data)
    torch.manual_seed(spec.seed)  # the model's initialisation does not depend on whether the tokenizer was cached
    model_cfg = get_config(config["model"])
    if not spec.extra.get("adapatch", True):  # the switch: train without the AdaPatch head (Table 5 ablation)
        model_cfg["prompt_encoder"].pop("adapatch", None)
    text_cfg = dict(model_cfg["prompt_encoder"]["text_config"], vocab_size=len(tokenizer),
                    pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.cls_token_id,
                    eos_token_id=tokenizer.sep_token_id)
    prompt_encoder = build_prompt_encoder(model_cfg, text_cfg)

    labelled = [it for it in data.image_items("train") if it.has_labels]
    reports = [s for s in data.report_items("train") if any(v is not None for v in s.labels.values())]
    pairs = [it for it in data.image_items("train") if it.text]
    report_labels = np.stack([labels_multi_hot(s.labels) for s in reports]) if reports else None
    logger.info("stage 1 pairs: %d image-labels, %d report-labels, %d image-text", len(labelled), len(reports), len(pairs))
    bs = spec.batch_size

    def batch_fn(indices, generator):
        batch = {"image": data.images(labelled, indices),
                 "image_labels": torch.from_numpy(np.stack([labelled[i].labels for i in indices]))}
        if reports:
            r = torch.randint(0, len(reports), (bs,), generator=generator).numpy()
            enc = tokenize(tokenizer, [reports[i].impression for i in r])
            batch.update(report_ids=enc["input_ids"], report_mask=enc["attention_mask"],
                         report_labels=torch.from_numpy(report_labels[r]))
        if pairs:
            p = torch.randperm(len(pairs), generator=generator)[:bs].numpy()
            enc = tokenize(tokenizer, [pairs[i].text for i in p])
            batch.update(pair_image=data.images(pairs, p), pair_ids=enc["input_ids"], pair_mask=enc["attention_mask"])
        return batch

    def save_fn(module, final: Path):
        module.prompt_encoder.save_pretrained(final / "prompt_encoder")
        tokenizer.save_pretrained(final / "tokenizer")

    info = {"image_label_pairs": len(labelled), "report_label_pairs": len(reports), "image_text_pairs": len(pairs),
            "vocab_size": len(tokenizer)}
    module = AlignModule(prompt_encoder, float(spec.extra.get("adamatch_weight", 1.0)))
    return train_stage(spec, root / STAGE, module, len(labelled), batch_fn, save_fn, info=info)


if __name__ == "__main__":
    main()
