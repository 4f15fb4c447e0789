"""Stages 2c and 2d — the report LDM G_R (paper Sec. III.B): the Optimus text VAE, then its FCResBlock UNet.

    python -m training.stage2_text --part vae  --config small     # 2c: reconstruction round
    python -m training.stage2_text --part unet --config small     # 2d: report diffusion, VAE and P frozen

2c trains BERT encoder + GPT-2 decoder to reconstruct training impressions through the latent z
(cross-entropy + beta * KL, beta warmed up linearly, KL free bits against posterior collapse), then measures
the latent scaling factor (1 / std of the posterior means). 2d trains the report UNet on those latents
(Eq. 2), conditioned on the frozen stage-1 embeddings of the impression itself (P_R) or of its human MeSH
labels, with condition dropout for classifier-free guidance. Both report validation numbers in DONE.json.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from diffusers import DDPMScheduler, DPMSolverMultistepScheduler

from codixr.metrics.text import bleu_scores
from codixr.models.configs import SD_SCHEDULER, get_config
from codixr.models.objectives import diffusion_loss, text_vae_loss
from codixr.models.text_unet import TextUNet
from codixr.models.text_vae import OptimusTextVAE
from codixr.pipeline import denoise_latents
from training.common import StageContext, load_done, prepare_stage, train_stage
from training.conditions import ConditionBank, embed_labels, embed_texts
from training.data import labels_multi_hot
from training.samples import save_texts
from training.stage1_align import get_tokenizer

logger = logging.getLogger("training.stage2_text")


def tokenize_for_vae(tokenizer, texts, max_length: int) -> dict[str, torch.Tensor]:
    enc = tokenizer(list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


class TextVAEModule(torch.nn.Module):
    def __init__(self, text_vae, tokenizer, texts, beta, beta_warmup, free_bits):
        super().__init__()
        self.text_vae, self.tokenizer, self.texts = text_vae, tokenizer, texts
        self.beta, self.beta_warmup, self.free_bits = beta, beta_warmup, free_bits
        self.register_buffer("step", torch.zeros((), dtype=torch.long))

    def forward(self, batch, generator=None):
        beta = self.beta * min(1.0, float(self.step) / max(self.beta_warmup, 1))
        self.step += 1
        loss, parts = text_vae_loss(self.text_vae, batch["input_ids"], batch["attention_mask"], beta, self.free_bits,
                                    generator)
        return loss, {**parts, "beta": beta}


@torch.no_grad()
def decode_texts(text_vae, tokenizer, latents: torch.Tensor) -> list[str]:
    ids = text_vae.decode_latents(latents)
    return [t.strip() for t in tokenizer.batch_decode(ids, skip_special_tokens=True)]


@torch.no_grad()
def reconstruct(text_vae, tokenizer, texts: list[str], batch: int = 64) -> list[str]:
    out = []
    for i in range(0, len(texts), batch):
        enc = tokenize_for_vae(tokenizer, texts[i:i + batch], text_vae.config.max_length)
        out += decode_texts(text_vae, tokenizer, text_vae.encode_latents(enc["input_ids"], enc["attention_mask"]))
    return out


def normalise(text: str) -> str:
    return " ".join(text.lower().replace(".", " . ").replace(",", " , ").split())


def run_vae(ctx: StageContext) -> dict:
    config, root, stage, spec, data = ctx.config, ctx.root, ctx.stage, ctx.spec, ctx.data
    tokenizer = get_tokenizer(config, root / "tokenizer", data)
    cfg = get_config(config["model"])["text_vae"]
    text_vae = OptimusTextVAE(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                              bos_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.sep_token_id, **cfg)
    texts = [s.impression for s in data.report_items("train")]
    val = [s.impression for s in data.report_items("validate")][:500]
    module = TextVAEModule(text_vae, tokenizer, texts, float(spec.extra.get("beta", 0.5)),
                           int(spec.extra.get("beta_warmup", 1000)), float(spec.extra.get("free_bits", 0.1)))

    def batch_fn(indices, generator):
        return tokenize_for_vae(tokenizer, [texts[i] for i in indices], cfg["max_length"])

    def sample_fn(module, out: Path, step: int):
        recon = reconstruct(module.text_vae, tokenizer, val[:16])
        save_texts([f"REAL:  {a}\nRECON: {b}\n" for a, b in zip(val[:16], recon)], out / f"reconstruction-{step:06d}.txt")

    def save_fn(module, final: Path):
        tv = module.text_vae
        enc = tokenize_for_vae(tokenizer, texts[:2048], cfg["max_length"])
        with torch.no_grad():
            mean, _ = tv.encode(enc["input_ids"], enc["attention_mask"])
        tv.register_to_config(scaling_factor=float(1.0 / mean.std()))
        tv.save_pretrained(final / "text_vae")
        recon = reconstruct(tv, tokenizer, val)
        exact = float(np.mean([normalise(a) == normalise(b) for a, b in zip(val, recon)])) if val else None
        info["validation"] = {"impressions": len(val), "exact_reconstruction": exact,
                              **(bleu_scores(recon, val) if val else {})}

    info: dict = {"train_impressions": len(texts)}
    return train_stage(spec, root / stage, module, len(texts), batch_fn, save_fn, sample_fn, info)


class TextUNetModule(torch.nn.Module):
    def __init__(self, text_unet, scheduler, latents, bank, dropout):
        super().__init__()
        self.text_unet, self.scheduler, self.latents, self.bank, self.dropout = text_unet, scheduler, latents, bank, dropout

    def forward(self, batch, generator=None):
        idx = batch["indices"]
        z = self.latents[idx].to(self.text_unet.device)
        cond = self.bank.sample(idx, generator, self.dropout).to(z.device)
        return diffusion_loss(self.text_unet, self.scheduler, z, cond, generator), {}


@torch.no_grad()
def sample_reports(text_unet, text_vae, tokenizer, conditions, steps: int = 20, guidance: float = 2.0, seed: int = 0):
    scheduler = DPMSolverMultistepScheduler.from_config(SD_SCHEDULER, algorithm_type="dpmsolver++")
    scheduler.set_timesteps(steps)
    z = torch.randn((conditions.shape[0], text_unet.config.latent_dim), generator=torch.Generator().manual_seed(seed))
    context = torch.cat([torch.zeros_like(conditions), conditions]) if guidance > 1 else conditions
    z = denoise_latents({"r": text_unet}, {"r": z * scheduler.init_noise_sigma}, context, {"r": scheduler}, guidance)["r"]
    return decode_texts(text_vae, tokenizer, z)


def report_condition_bank(pe, tokenizer, studies) -> ConditionBank:
    h_txt, has_txt = embed_texts(pe, tokenizer, [s.impression for s in studies])
    has_labels = np.array([any(v is not None for v in s.labels.values()) for s in studies])
    h_lab = embed_labels(pe, np.stack([labels_multi_hot(s.labels) for s in studies]), has_labels)
    return ConditionBank([h_txt, h_lab], [has_txt, has_labels], ["text", "labels"])


def run_unet(ctx: StageContext) -> dict:
    from codixr.models.prompt_encoder import PromptEncoder
    from transformers import PreTrainedTokenizerFast

    config, root, stage, spec, data = ctx.config, ctx.root, ctx.stage, ctx.spec, ctx.data
    stage1 = load_done(root / "stage1_align", "Stage 1 (prompt encoders)")
    pe = PromptEncoder.from_pretrained(stage1 / "prompt_encoder").eval().requires_grad_(False)
    tokenizer = PreTrainedTokenizerFast.from_pretrained(stage1 / "tokenizer")
    vae_dir = load_done(root / "stage2_text_vae", "Stage 2c (text VAE)")
    text_vae = OptimusTextVAE.from_pretrained(vae_dir / "text_vae").eval().requires_grad_(False)
    studies = data.report_items("train")
    val = [s for s in data.report_items("validate") if any(v == 1 for v in s.labels.values())][:8]
    with torch.no_grad():
        latents = torch.cat([text_vae.encode_latents(**tokenize_for_vae(
            tokenizer, [s.impression for s in studies[i:i + 128]], text_vae.config.max_length))
            for i in range(0, len(studies), 128)])
    bank = report_condition_bank(pe, tokenizer, studies)
    text_unet = TextUNet(**get_config(config["model"])["text_unet"])
    module = TextUNetModule(text_unet, DDPMScheduler(**SD_SCHEDULER), latents, bank,
                            float(spec.extra.get("condition_dropout", 0.1)))

    def batch_fn(indices, generator):
        return {"indices": indices}

    def sample_fn(module, out: Path, step: int):
        if not val:
            return
        labels = torch.from_numpy(np.stack([labels_multi_hot(s.labels) for s in val]))
        from_labels = sample_reports(module.text_unet, text_vae, tokenizer, pe.encode_labels(labels).pooled[:, None])
        lines = []
        for s, gen in zip(val, from_labels):
            named = ", ".join(k for k, v in s.labels.items() if v == 1)
            lines.append(f"LABELS: {named}\nREAL:   {s.impression}\nGEN:    {gen}\n")
        save_texts(lines, out / f"samples-{step:06d}.txt")

    def save_fn(module, final: Path):
        module.text_unet.save_pretrained(final / "text_unet")

    info = {"train_impressions": len(studies), "condition_kinds": bank.names}
    return train_stage(spec, root / stage, module, len(studies), batch_fn, save_fn, sample_fn, info)


def main(argv=None) -> dict:
    ctx = prepare_stage(__doc__, lambda a: f"stage2_text_{a.part}",
                        lambda p: p.add_argument("--part", choices=("vae", "unet"), required=True), argv)
    return (run_vae if ctx.args.part == "vae" else run_unet)(ctx)


if __name__ == "__main__":
    main()
