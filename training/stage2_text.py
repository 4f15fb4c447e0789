"""Stages 2c and 2d — the report LDM G_R (paper Sec. III.B): the Optimus text VAE, then its FCResBlock UNet.

    python -m training.stage2_text --part vae  --config small     # 2c: reconstruction round
    python -m training.stage2_text --part unet --config small     # 2d: report diffusion, VAE and P frozen

2c trains BERT encoder + GPT-2 decoder to reconstruct training impressions through the latent z
(cross-entropy summed over tokens + beta * KL, optionally with free bits or a fixed-noise latent, decoder word
dropout, batches of similar-length impressions), then measures the latent scaling factor (1 / std of the
posterior means) and how much the latent carries (``codixr.evaluate.following.text_autoencoder_table``).
2d trains the report UNet and its ``ConditionAdapter`` on those latents (Eq. 2), conditioned on frozen stage-1
embeddings of three kinds (``training.conditions.ReportConditionSampler``): the impression itself (P_R), the
findings the labeler reads in it (label encoder), and real training radiographs whose labels match it (P_X;
the bridge from images to impressions), with condition dropout to the adapter's learned null condition. It
then chooses the guidance scale on validation data and stores it in the adapter. Both report validation
numbers in DONE.json.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch
from diffusers import DDPMScheduler, DPMSolverMultistepScheduler

from codixr.evaluate.following import text_autoencoder_table
from codixr.modality import CONDITION_LABELS, NO_FINDING
from codixr.models.conditioning import condition_flow, drop_mask
from codixr.models.configs import SD_SCHEDULER, build_condition_adapter, get_config
from codixr.models.objectives import diffusion_loss, text_vae_loss
from codixr.models.text_unet import TextUNet
from codixr.models.text_vae import OptimusTextVAE, decode_reports
from codixr.pipeline import denoise_latents
from codixr.data.reports import split_sentences
from training.common import StageContext, autoencoder_dir, load_done, prepare_stage, train_stage
from training.conditions import (
    ReportConditionSampler,
    embed_images,
    embed_texts,
    impression_matches,
    positive_set,
)
from training.samples import save_texts
from training.stage1_align import get_tokenizer

logger = logging.getLogger("training.stage2_text")


def tokenize_for_vae(tokenizer, texts, max_length: int) -> dict[str, torch.Tensor]:
    enc = tokenizer(list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


class TextVAEModule(torch.nn.Module):
    def __init__(self, text_vae, tokenizer, texts, beta, beta_warmup, free_bits, word_dropout=0.0):
        super().__init__()
        self.text_vae, self.tokenizer, self.texts = text_vae, tokenizer, texts
        self.beta, self.beta_warmup, self.free_bits, self.word_dropout = beta, beta_warmup, free_bits, word_dropout
        self.register_buffer("step", torch.zeros((), dtype=torch.long))

    def forward(self, batch, generator=None):
        beta = self.beta * min(1.0, float(self.step) / max(self.beta_warmup, 1))
        self.step += 1
        loss, parts = text_vae_loss(self.text_vae, batch["input_ids"], batch["attention_mask"], beta, self.free_bits,
                                    generator, self.word_dropout)
        return loss, {**parts, "beta": beta}


def length_windows(tokenizer, texts: list[str], max_length: int) -> np.ndarray:
    """Training texts ordered by token count: a batch is a window of this order starting at a random text, so
    impressions of similar length go together and a batch is not padded to its longest member (IU impressions
    have a median of 9 tokens and a tail past 64; random batches were two-thirds padding)."""
    lengths = np.array([min(len(ids), max_length) for ids in tokenizer(list(texts))["input_ids"]])
    return np.argsort(lengths, kind="stable")


def report_spans(texts: list[str], tokenizer, max_length: int, max_sentences: int = 3) -> list[str]:
    """Every run of 1..``max_sentences`` consecutive sentences of ``texts`` that fits in ``max_length`` tokens,
    each once (first-seen order).

    Extra real text for the text autoencoder: IU has ~1,650 distinct training impressions and the first text
    VAE memorised them (held-out impressions seen verbatim in training: 97 % exact; unseen ones: 8 %, BLEU-4
    0.29). The sentences of the training reports' FINDINGS and IMPRESSION sections are written in the same
    language; every span is a contiguous excerpt of one real report section, nothing is recombined.
    """
    spans: dict[str, None] = {}
    for text in texts:
        sentences = split_sentences(text)
        for i in range(len(sentences)):
            for j in range(i + 1, min(i + max_sentences, len(sentences)) + 1):
                spans.setdefault(" ".join(sentences[i:j]), None)
    candidates = list(spans)
    if not candidates:
        return []
    lengths = [len(ids) for ids in tokenizer(candidates)["input_ids"]]
    return [t for t, n in zip(candidates, lengths) if n <= max_length]


def vae_corpus(studies: list, tokenizer, max_length: int, spans: dict | None) -> tuple[list[str], int]:
    """The text VAE's training texts: the impressions, and with ``spans`` (``{"max_sentences": k,
    "impression_share": s}``) the :func:`report_spans` of the FINDINGS and IMPRESSION sections of the same
    training studies, with the impressions repeated so that they are about a share ``s`` of the draws.
    Returns the texts and how many distinct span texts were added."""
    impressions = [s.impression for s in studies if s.impression]
    if not spans:
        return impressions, 0
    sections = [t for s in studies for t in (s.findings_text, s.impression) if t]
    extra = report_spans(sections, tokenizer, max_length, int(spans.get("max_sentences", 3)))
    share = float(spans.get("impression_share", 0.5))
    copies = max(1, round(share * len(extra) / max((1 - share) * len(impressions), 1)))
    return impressions * copies + extra, len(extra)


@torch.no_grad()
def reconstruct(text_vae, tokenizer, texts: list[str], batch: int = 64) -> list[str]:
    out = []
    for i in range(0, len(texts), batch):
        enc = tokenize_for_vae(tokenizer, texts[i:i + batch], text_vae.config.max_length)
        out += decode_reports(text_vae, tokenizer, text_vae.encode_latents(enc["input_ids"], enc["attention_mask"]))
    return out


def run_vae(ctx: StageContext) -> dict:
    config, root, stage, spec, data = ctx.config, ctx.root, ctx.stage, ctx.spec, ctx.data
    tokenizer = get_tokenizer(config, root / "tokenizer", data)
    cfg = get_config(config["model"])["text_vae"]
    if spec.extra.get("latent_noise") is not None:
        cfg["latent_noise"] = float(spec.extra["latent_noise"])
    init = ctx.args.init or spec.extra.get("init")
    if init:  # continue a finished text VAE (a package, a run's final/ or a text_vae folder) with this recipe
        init_dir = next((d for d in (Path(init) / "final" / "text_vae", Path(init) / "text_vae") if d.is_dir()),
                        Path(init))
        text_vae = OptimusTextVAE.from_pretrained(init_dir, torch_dtype=torch.float32)
        if text_vae.config.vocab_size != len(tokenizer):
            raise SystemExit(f"{init_dir} was trained with a {text_vae.config.vocab_size}-token vocabulary, the run's "
                             f"tokenizer has {len(tokenizer)}: import stage1_align from the same package first.")
        text_vae.register_to_config(latent_noise=cfg.get("latent_noise", text_vae.config.latent_noise))
        logger.info("%s: continuing the text VAE of %s", stage, init_dir)
    else:
        text_vae = OptimusTextVAE(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                                  bos_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.sep_token_id, **cfg)
    texts, n_spans = vae_corpus(data.report_items("train"), tokenizer, cfg["max_length"], spec.extra.get("spans"))
    val = [s.impression for s in data.report_items("validate")][:500]
    module = TextVAEModule(text_vae, tokenizer, texts, float(spec.extra.get("beta", 0.5)),
                           int(spec.extra.get("beta_warmup", 1000)), float(spec.extra.get("free_bits", 0.1)),
                           float(spec.extra.get("word_dropout", 0.0)))
    order = length_windows(tokenizer, texts, cfg["max_length"]) if spec.extra.get("length_windows") else None

    def batch_fn(indices, generator):
        if order is not None:  # the first index of the step's draw anchors a window of similar-length texts
            start = int(np.flatnonzero(order == indices[0])[0])
            start = min(start, max(len(order) - len(indices), 0))
            indices = order[start:start + len(indices)]
        return tokenize_for_vae(tokenizer, [texts[i] for i in indices], cfg["max_length"])

    def sample_fn(module, out: Path, step: int):
        recon = reconstruct(module.text_vae, tokenizer, val[:16])
        save_texts([f"REAL:  {a}\nRECON: {b}\n" for a, b in zip(val[:16], recon)], out / f"reconstruction-{step:06d}.txt")

    def save_fn(module, final: Path):
        tv = module.text_vae
        enc = tokenize_for_vae(tokenizer, texts[:2048], cfg["max_length"])
        with torch.no_grad():
            mean, _ = tv.encode(enc["input_ids"], enc["attention_mask"])
        tv.register_to_config(scaling_factor=float(1.0 / mean.std()),
                              no_repeat_ngram_size=int(spec.extra.get("no_repeat_ngram_size", 0)))
        tv.save_pretrained(final / "text_vae")
        table = text_autoencoder_table(tv.eval(), tokenizer, val)
        info["validation"] = {k: v for k, v in table.items() if not k.endswith("examples")}

    info: dict = {"train_impressions": len(data.report_items("train")), "training_texts": len(texts),
                  "report_spans": n_spans, "init_from": str(init) if init else None}
    if init and (Path(init) / "DONE.json").is_file():  # the training behind the weights it continues
        info["continued"] = json.loads((Path(init) / "DONE.json").read_text())
    return train_stage(spec, root / stage, module, len(texts), batch_fn, save_fn, sample_fn, info)


class TextUNetModule(torch.nn.Module):
    """G_R's denoiser and its condition adapter, trained on (impression latent, condition) pairs of every kind."""

    def __init__(self, text_unet, adapter, scheduler, latents, sampler, dropout):
        super().__init__()
        self.text_unet, self.adapter, self.scheduler = text_unet, adapter, scheduler
        self.latents, self.sampler, self.dropout = latents, sampler, dropout

    def forward(self, batch, generator=None):
        rows, cond, _ = self.sampler.draw(len(batch["indices"]), generator)
        device = self.text_unet.device
        z = self.latents[rows].to(device)
        drop = drop_mask(len(rows), self.dropout, generator, device)
        conditioning = condition_flow(self.adapter, cond.to(device), drop=drop)
        return diffusion_loss(self.text_unet, self.scheduler, z, conditioning, generator), {}


@torch.no_grad()
def sample_reports(text_unet, adapter, text_vae, tokenizer, conditions, steps: int = 20, guidance: float = 2.0,
                   seed: int = 0):
    """Impressions from (B, d) shared-space conditions, with the same conditioning path as the pipeline."""
    scheduler = DPMSolverMultistepScheduler.from_config(SD_SCHEDULER, algorithm_type="dpmsolver++")
    scheduler.set_timesteps(steps)
    z = torch.randn((conditions.shape[0], text_unet.config.latent_dim), generator=torch.Generator().manual_seed(seed))
    cond = condition_flow(adapter, conditions, guidance=guidance > 1)
    z = denoise_latents({"r": text_unet}, {"r": z * scheduler.init_noise_sigma}, {"r": cond}, {"r": scheduler},
                        guidance)["r"]
    return decode_reports(text_vae, tokenizer, z)


def bridge_matches(data, items, impression_labels, impression_normal) -> tuple[list, list[np.ndarray]]:
    """For each training image, the impressions whose labels match its labels (``impression_matches``)."""
    by_id = {s.study_id: s for s in data.studies}
    groups: dict[tuple, np.ndarray] = {}
    for i, key in enumerate(zip(impression_labels, impression_normal)):
        groups.setdefault(key, []).append(i)
    groups = {k: np.asarray(v) for k, v in groups.items()}
    kept, matches = [], []
    for item in items:
        labels = by_id[item.study_id].labels
        if not any(v is not None for v in labels.values()):
            continue
        rows = [g for (pos, normal), g in groups.items() if impression_matches(labels, pos, bool(normal))]
        if rows:
            kept.append(item)
            matches.append(np.concatenate(rows))
    return kept, matches


def report_pipeline(root: Path, pe, tokenizer, text_vae, text_unet, adapter, unet_config: dict):
    """A pipeline over the run's finished stages with this G_R, for choosing the guidance scale.

    Choosing it generates reports only (labels -> R, F -> R reads the frontal through P_X), so image UNets the
    run has not trained yet (G_F and G_R may train side by side) stand in freshly initialised: they are never run.
    """
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from codixr.pipeline import CoDiXRPipeline

    def unet(view: str):
        folder = root / f"stage2_unet_{view}"
        if (folder / "DONE.json").is_file():
            return UNet2DConditionModel.from_pretrained(folder / "final" / f"unet_{view}")
        logger.info("G_%s not trained yet: an untrained stand-in fills the pipeline (report outputs only)", view[0].upper())
        return UNet2DConditionModel(**unet_config)

    vae = autoencoder_dir(root) / "vae"
    return CoDiXRPipeline(
        prompt_encoder=pe, tokenizer=tokenizer, text_vae=text_vae, text_unet=text_unet, condition_report=adapter,
        vae=AutoencoderKL.from_pretrained(vae), unet_frontal=unet("frontal"), unet_lateral=unet("lateral"),
        scheduler=DDPMScheduler(**SD_SCHEDULER))


def choose_guidance(pipe, data, scales, n_images: int = 128, seeds=tuple(range(8))) -> tuple[float, list[dict]]:
    """The guidance scale that makes impressions follow their condition best on validation data.

    Score = mean share of seeds whose impression names a requested single label + (opacity asserted in RSNA
    positives - twice the share in RSNA negatives: positive where positives get it at least twice as often)
    - share of label impressions that repeat a word directly (strong guidance names the label by stuttering it:
    "cardiomegaly cardiomegaly"). Returns the best scale and every scale's row.
    """
    from codixr.evaluate.following import labels_to_report_table, pipeline_report_generator, xray_to_report_table

    items = data.image_items("validate", views=("frontal",), sources=("rsna-pneumonia",))[:n_images]
    images = [data.cache.get(it.row) for it in items]
    positive = [bool(it.labels[CONDITION_LABELS.index("Lung Opacity")]) for it in items]
    table = []
    for scale in scales:
        generate = pipeline_report_generator(pipe, guidance_scale=scale)
        labels = labels_to_report_table(generate, seeds=seeds)
        row = {"guidance_scale": scale, "labels_mean_names_label": labels["mean_names_label"],
               "labels_at_or_above_0.7": labels["labels_at_or_above_0.7"],
               "labels_distinct_at_one_seed": labels["distinct_at_one_seed"],
               "labels_repeated_word_share": labels["repeated_word_share"]}
        if images and any(positive) and not all(positive):
            xr = xray_to_report_table(generate, images, positive)
            row.update({k: xr[k] for k in ("asserted_in_positives", "asserted_in_negatives",
                                           "distinct_at_shared_seed", "n_positive", "n_negative")})
            # a finding asserted in positives at least twice as often as in negatives (pos - 2 neg >= 0)
            row["score"] = (row["labels_mean_names_label"] + xr["asserted_in_positives"]
                            - 2 * xr["asserted_in_negatives"])
        else:
            row["score"] = row["labels_mean_names_label"]
        row["score"] -= row["labels_repeated_word_share"]
        logger.info("guidance %.1f: %s", scale, {k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()})
        table.append(row)
    best = max(table, key=lambda r: r["score"])
    return float(best["guidance_scale"]), table


def run_unet(ctx: StageContext) -> dict:
    from codixr.metrics.labeler import label_report
    from codixr.models.prompt_encoder import PromptEncoder
    from transformers import PreTrainedTokenizerFast

    config, root, stage, spec, data = ctx.config, ctx.root, ctx.stage, ctx.spec, ctx.data
    model_cfg = get_config(config["model"])
    stage1 = load_done(root / "stage1_align", "Stage 1 (prompt encoders)")
    pe = PromptEncoder.from_pretrained(stage1 / "prompt_encoder").eval().requires_grad_(False)
    tokenizer = PreTrainedTokenizerFast.from_pretrained(stage1 / "tokenizer")
    vae_dir = load_done(root / "stage2_text_vae", "Stage 2c (text VAE)")
    text_vae = OptimusTextVAE.from_pretrained(vae_dir / "text_vae").eval().requires_grad_(False)
    studies = data.report_items("train")
    texts = [s.impression for s in studies]
    with torch.no_grad():
        latents = torch.cat([text_vae.encode_latents(**tokenize_for_vae(
            tokenizer, texts[i:i + 128], text_vae.config.max_length)) for i in range(0, len(texts), 128)])
    read = [label_report(t) for t in texts]  # what each impression says, by the project labeler
    impression_labels = [positive_set(r) for r in read]
    impression_normal = np.array([r.get(NO_FINDING) == 1 for r in read])
    h_text, _ = embed_texts(pe, tokenizer, texts)
    items = data.image_items("train")
    items, matches = bridge_matches(data, items, impression_labels, impression_normal)
    h_images = embed_images(pe, lambda idx: data.images(items, list(idx)), len(items)) if items else None
    weights = {k: float(spec.extra.get(f"{k}_weight", w)) for k, w in (("text", 0.2), ("labels", 0.3), ("image", 0.5))}
    by_id = {s.study_id: s for s in data.studies}
    # image draws balanced over groups: with a finding or not ("finding"), and also by source ("source")
    balance = spec.extra.get("balance_images", "finding")
    has_finding = np.array([bool(positive_set(by_id[it.study_id].labels)) for it in items], dtype=int)
    sources = sorted({it.source for it in items})
    groups = has_finding + 2 * np.array([sources.index(it.source) for it in items]) if balance == "source" \
        else has_finding
    # the share of image draws that go to images with a finding (0.5: as many as to images without one)
    finding_share = float(spec.extra.get("image_finding_share", 0.5))
    group_weights = None
    if balance:  # the finding share split evenly over the groups with a finding, the rest over those without
        finding_of = {int(g): bool(has_finding[groups == g][0]) for g in np.unique(groups)}
        n_with = sum(finding_of.values())
        group_weights = {g: finding_share / n_with if f else (1 - finding_share) / (len(finding_of) - n_with)
                         for g, f in finding_of.items()}
    sampler = ReportConditionSampler(h_text, impression_labels, impression_normal, h_images, matches, pe, weights,
                                     image_groups=groups if balance else None, group_weights=group_weights)
    logger.info("%s: %d impressions, %d images bridged by labels, condition kinds %s", stage, len(texts), len(items),
                dict(zip(sampler.kinds, sampler.probs.tolist())))
    text_unet = TextUNet(**model_cfg["text_unet"])
    adapter = build_condition_adapter(model_cfg, "report")
    module = TextUNetModule(text_unet, adapter, DDPMScheduler(**SD_SCHEDULER), latents, sampler,
                            float(spec.extra.get("condition_dropout", 0.1)))

    def batch_fn(indices, generator):
        return {"indices": indices}

    def sample_fn(module, out: Path, step: int):
        hot = torch.eye(len(CONDITION_LABELS))
        reports = sample_reports(module.text_unet, module.adapter, text_vae, tokenizer, pe.encode_labels(hot).pooled)
        save_texts([f"{name}: {text}" for name, text in zip(CONDITION_LABELS, reports)],
                   out / f"labels-{step:06d}.txt")

    def save_fn(module, final: Path):
        unet, adapter = module.text_unet.eval(), module.adapter.eval()
        scales = [float(s) for s in spec.extra.get("guidance_scales", (1.0, 2.0, 3.0, 5.0, 7.5))]
        pipe = report_pipeline(root, pe, tokenizer, text_vae, unet, adapter, model_cfg["unet"])
        if len(scales) > 1:
            best, table = choose_guidance(pipe, data, scales)
            adapter.register_to_config(guidance_scale=best)
            info["guidance_selection"] = table
            info["guidance_scale"] = best
        unet.save_pretrained(final / "text_unet")
        adapter.save_pretrained(final / "condition_report")

    info = {"train_impressions": len(texts), "bridged_images": len(items),
            "bridged_images_by_source": {src: sum(it.source == src for it in items) for src in
                                         sorted({it.source for it in items})},
            "bridged_images_with_a_finding": int(has_finding.sum()), "image_balance": balance,
            "impressions_per_label": {name: len(rows) for name, rows in sampler.naming.items()},
            "condition_weights": dict(zip(sampler.kinds, [round(p, 3) for p in sampler.probs.tolist()]))}
    return train_stage(spec, root / stage, module, len(texts), batch_fn, save_fn, sample_fn, info)


def main(argv=None) -> dict:
    def extra(parser):
        parser.add_argument("--part", choices=("vae", "unet"), required=True)
        parser.add_argument("--init", default=None, help="vae: continue this text VAE (package or folder)")

    ctx = prepare_stage(__doc__, lambda a: f"stage2_text_{a.part}", extra, argv)
    return (run_vae if ctx.args.part == "vae" else run_unet)(ctx)


if __name__ == "__main__":
    main()
