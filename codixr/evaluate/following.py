"""Does the output follow its input? Tables that tell a conditional model from an unconditional one.

A metric that averages over outputs (BLEU against a corpus, FID) can score well for a model that writes the
same impression whatever it is given. These tables ask instead whether *different* inputs at the *same*
seed give different outputs, and whether the outputs move in the direction of their input:

* ``text_autoencoder_table``: how much of an impression the text VAE's latent carries (exact reconstruction,
  BLEU, active dimensions, distinct decodes of prior samples);
* ``labels_to_report_table``: for each single diagnosis label, how often the generated impression names it
  (the project labeler; No Finding: names no pathology) across seeds, and how many distinct impressions the
  eleven labels give at one seed;
* ``xray_to_report_table``: impressions generated from frontal radiographs with and without a finding (e.g.
  RSNA lung opacity): how often the finding is asserted in each group, and how many distinct impressions
  different radiographs give at one shared seed;
* ``conditioning_gap``: the relative difference between a flow's noise prediction with its condition and
  with the null condition, as a function of the timestep (G_R, G_F and G_L; with or without a condition adapter).

The image tables (autoencoder, labels→F, T→F, Fréchet distance in the findings classifier's features, view
checks, grids) are in :mod:`codixr.evaluate.image_following`; ``following_tables`` runs both.
"""

from __future__ import annotations

import logging
import re
from typing import Any, Callable, Sequence

import numpy as np
import torch

from codixr.modality import CONDITION_LABELS, NO_FINDING, PATHOLOGIES, Modality

logger = logging.getLogger(__name__)

# Findings that count as "lung opacity" in an impression (RSNA's "lung opacity suggestive of pneumonia").
OPACITY_FAMILY = ("Lung Opacity", "Pneumonia", "Consolidation")


def normalise_text(text: str) -> str:
    """Case and spacing around punctuation normalised, for counting exact matches and distinct impressions."""
    return " ".join(text.lower().replace(".", " . ").replace(",", " , ").split())


def distinct(texts: Sequence[str]) -> int:
    return len({normalise_text(t) for t in texts})


def asserts(text: str, labels: Sequence[str]) -> bool:
    """Whether the project labeler reads ``text`` as positive for any of ``labels``."""
    from codixr.metrics.labeler import label_report

    found = label_report(text)
    return any(found.get(name) == 1 for name in labels)


def repeats_a_word(text: str) -> bool:
    """Whether a word directly follows itself ("cardiomegaly cardiomegaly"; punctuation between them counts too,
    "atelectasis. atelectasis."): real impressions almost never do, over-guided generated ones do."""
    words = re.findall(r"[a-z]+", text.lower())
    return any(a == b for a, b in zip(words, words[1:]))


def names_label(text: str, label: str) -> bool:
    """Whether an impression names ``label`` (for No Finding: names no pathology and reads as normal)."""
    from codixr.metrics.labeler import label_report

    found = label_report(text)
    if label == NO_FINDING:
        return found.get(NO_FINDING) == 1 and not any(found.get(p) in (1, -1) for p in PATHOLOGIES)
    return found.get(label) == 1


# ---------------------------------------------------------------------------------------------- text VAE
@torch.no_grad()
def text_autoencoder_table(text_vae, tokenizer, texts: Sequence[str], n_prior: int = 64, seed: int = 0,
                           batch: int = 64) -> dict[str, Any]:
    """Reconstruction and latent usage of the text VAE on held-out impressions.

    * exact reconstruction (normalised) and BLEU-1..4 of greedy decodes of the posterior mean;
    * active dimensions: latent dimensions whose posterior-mean variance across impressions exceeds the mean
      posterior variance (the noise), and the share of the variance on the top principal direction;
    * ``n_prior`` samples z ~ N(0, I) of the VAE's prior, decoded: how many distinct impressions they give.
    """
    from codixr.metrics.text import bleu_scores
    from codixr.models.text_vae import decode_reports

    texts = list(texts)
    if not texts:
        return {"impressions": 0}
    means, logvars, recon = [], [], []
    for i in range(0, len(texts), batch):
        enc = tokenizer(texts[i:i + batch], padding=True, truncation=True, max_length=text_vae.config.max_length,
                        return_tensors="pt")
        enc = {k: enc[k].to(text_vae.device) for k in ("input_ids", "attention_mask")}
        mean, logvar = text_vae.encode(enc["input_ids"], enc["attention_mask"])
        means.append(mean.float().cpu())
        logvars.append(logvar.float().cpu())
        recon += decode_reports(text_vae, tokenizer, mean * text_vae.config.scaling_factor)
    mean, logvar = torch.cat(means), torch.cat(logvars)
    active = int((mean.var(dim=0) > logvar.exp().mean(dim=0)).sum())
    eigen = torch.linalg.eigvalsh(torch.cov(mean.T.double())).clamp(min=0)
    z = torch.randn((n_prior, text_vae.config.latent_dim), generator=torch.Generator().manual_seed(seed))
    prior = decode_reports(text_vae, tokenizer, (z * text_vae.config.scaling_factor).to(text_vae.device))
    return {"impressions": len(texts),
            "exact_reconstruction": float(np.mean([normalise_text(a) == normalise_text(b)
                                                   for a, b in zip(texts, recon)])),
            **bleu_scores(recon, texts), "active_dimensions": active, "latent_dim": int(mean.shape[1]),
            "top_direction_variance_share": float(eigen[-1] / eigen.sum()),
            "prior_samples": n_prior, "prior_distinct": distinct(prior),
            "examples": [{"impression": a, "reconstruction": b} for a, b in list(zip(texts, recon))[:8]],
            "prior_examples": prior[:8]}


# ---------------------------------------------------------------------------------------------- labels -> R
def labels_to_report_table(generate: Callable[..., list[str]], labels: Sequence[str] = CONDITION_LABELS,
                           seeds: Sequence[int] = tuple(range(8))) -> dict[str, Any]:
    """Single-label requests: the share of seeds whose impression names the label, and distinct impressions.

    ``generate(labels=[[l1], [l2], ...], seeds=[...])`` returns one impression per row (e.g. a pipeline call).
    """
    rows = {}
    per_seed: dict[int, list[str]] = {}
    for seed in seeds:
        texts = generate(labels=[[name] for name in labels], seeds=[seed] * len(labels))
        per_seed[seed] = texts
    for i, name in enumerate(labels):
        texts = [per_seed[s][i] for s in seeds]
        rows[name] = {"names_label": float(np.mean([names_label(t, name) for t in texts])),
                      "distinct_over_seeds": distinct(texts), "example": texts[0]}
    first = per_seed[seeds[0]]
    hit = [rows[name]["names_label"] for name in labels]
    every = [t for texts in per_seed.values() for t in texts]
    return {"labels": rows, "seeds": list(seeds), "mean_names_label": float(np.mean(hit)),
            "repeated_word_share": float(np.mean([repeats_a_word(t) for t in every])),
            "labels_at_or_above_0.7": int(sum(h >= 0.7 for h in hit)),
            "distinct_at_one_seed": distinct(first), "n_labels": len(labels)}


# ---------------------------------------------------------------------------------------------- X-ray -> R
def xray_to_report_table(generate: Callable[..., list[str]], images: Sequence, positive: Sequence[bool],
                         finding: Sequence[str] = OPACITY_FAMILY, shared_seed: int = 0,
                         n_shared: int = 48) -> dict[str, Any]:
    """Impressions from radiographs with (``positive``) and without a finding.

    Each image gets its own seed (its index) for the rates; the first ``n_shared`` images are also generated at
    one shared seed, to count how many distinct impressions different radiographs give.
    ``generate(images=[...], seeds=[...])`` returns one impression per image.
    """
    positive = np.asarray(positive, dtype=bool)
    texts = generate(images=list(images), seeds=list(range(len(images))))
    said = np.array([asserts(t, finding) for t in texts])
    shared = generate(images=list(images[:n_shared]), seeds=[shared_seed] * min(n_shared, len(images)))
    pos_rate = float(said[positive].mean()) if positive.any() else float("nan")
    neg_rate = float(said[~positive].mean()) if (~positive).any() else float("nan")
    auroc = float("nan")
    if positive.any() and (~positive).any():
        from sklearn.metrics import roc_auc_score

        auroc = float(roc_auc_score(positive, said))
    return {"finding": list(finding), "n_positive": int(positive.sum()), "n_negative": int((~positive).sum()),
            "asserted_in_positives": pos_rate, "asserted_in_negatives": neg_rate,
            "ratio": pos_rate / neg_rate if neg_rate > 0 else float("inf"), "auroc_of_assertion": auroc,
            "distinct_at_shared_seed": distinct(shared), "n_shared": len(shared),
            "examples": [{"positive": bool(p), "impression": t} for p, t in list(zip(positive, texts))[:6]]}


# ---------------------------------------------------------------------------------------------- gap
@torch.no_grad()
def conditioning_gap(pipe, modality: Modality, latents: torch.Tensor, conditions: torch.Tensor,
                     timesteps: Sequence[int] = (50, 200, 400, 600, 800, 950), seed: int = 0) -> dict[str, Any]:
    """|| eps(z_t, c) - eps(z_t, null) || / || eps(z_t, c) || per timestep, averaged over samples.

    Also the gap to a *swapped* condition (each sample with another sample's condition), which says whether
    the flow tells conditions apart, not only condition from no condition.
    """
    from codixr.models.conditioning import condition_flow

    flow, adapter = pipe.flow(modality), pipe.condition_adapter(modality)
    device = pipe.device
    latents, conditions = latents.to(device, flow.dtype), conditions.to(device, flow.dtype)
    generator = torch.Generator().manual_seed(seed)
    swapped = conditions.roll(1, dims=0)
    rows = []
    for t in timesteps:
        noise = torch.randn(latents.shape, generator=generator).to(device, latents.dtype)
        steps = torch.full((latents.shape[0],), int(t), device=device, dtype=torch.long)
        z_t = pipe.scheduler.add_noise(latents, noise, steps)
        both = condition_flow(adapter, conditions, guidance=True)
        eps = flow(torch.cat([z_t] * 2), steps.repeat(2), **both.kwargs()).sample.float()
        eps_null, eps_cond = eps.chunk(2)
        eps_swap = flow(z_t, steps, **condition_flow(adapter, swapped).kwargs()).sample.float()
        norm = eps_cond.flatten(1).norm(dim=1).clamp(min=1e-8)
        rows.append({"t": int(t),
                     "null_gap": float(((eps_cond - eps_null).flatten(1).norm(dim=1) / norm).mean()),
                     "swap_gap": float(((eps_cond - eps_swap).flatten(1).norm(dim=1) / norm).mean())})
    return {"modality": modality.value, "n": int(latents.shape[0]), "adapter": adapter is not None, "rows": rows}


# ---------------------------------------------------------------------------------------------- adapters
def pipeline_report_generator(pipe, guidance_scale: float | None = None, steps: int = 20,
                              batch_size: int = 32) -> Callable[..., list[str]]:
    """A ``generate(labels=..., images=..., seeds=...)`` for the tables above, from a ``CoDiXRPipeline``."""

    def generate(labels=None, images=None, seeds=()):
        out: list[str] = []
        n = len(labels if labels is not None else images)
        for i in range(0, n, batch_size):
            kwargs: dict[str, Any] = {}
            if labels is not None:
                kwargs["labels"] = [list(x) for x in labels[i:i + batch_size]]
            if images is not None:
                kwargs["frontal"] = list(images[i:i + batch_size])
            reports = pipe(outputs=(Modality.REPORT,), seed=[int(s) for s in seeds[i:i + batch_size]],
                           guidance_scale=guidance_scale, num_inference_steps=steps, **kwargs).report
            out += list(reports)
        return out

    return generate


# ---------------------------------------------------------------------------------------------- all of them
def following_tables(pipe, data, n_images: int = 128, seeds: Sequence[int] = tuple(range(8)),
                     n_text: int = 384, n_gap: int = 64, n_image_sets: int = 16, n_fid: int = 64,
                     out_dir=None) -> dict[str, Any]:
    """Every table above, and the image tables of ``codixr.evaluate.image_following`` (``n_image_sets`` images
    per set, ``n_fid`` for the Fréchet distance; 0 skips them; grids under ``out_dir``), on an evaluation split
    (``codixr.evaluate.data.EvalData``); "n/a" with a reason where the data lacks what a table needs."""
    from codixr.evaluate.image_following import image_following_tables, image_latents_and_conditions

    out: dict[str, Any] = {}
    impressions = [it.impression for it in data.texts if it.impression][:n_text]
    out["text_autoencoder"] = (text_autoencoder_table(pipe.text_vae, pipe.tokenizer, impressions) if impressions
                               else {"na": "no held-out impressions in this split"})
    generate = pipeline_report_generator(pipe)
    out["labels_to_report"] = labels_to_report_table(generate, seeds=seeds)
    frontals = [it for it in data.studies if it.frontal and it.labels.get("Lung Opacity") in (0, 1)]
    if any(it.source == "rsna-pneumonia" for it in frontals):  # RSNA: the labels are about opacity, by design
        frontals = [it for it in frontals if it.source == "rsna-pneumonia"]
    frontals = frontals[:n_images]
    positive = [it.labels.get("Lung Opacity") == 1 for it in frontals]
    if frontals and any(positive) and not all(positive):
        out["frontal_to_report"] = xray_to_report_table(generate, [it.frontal for it in frontals], positive)
        out["frontal_to_report"]["sources"] = sorted({it.source for it in frontals})
    else:
        out["frontal_to_report"] = {"na": "no frontal images with and without lung opacity labels in this split"}
    gaps: dict[str, Any] = {}
    if impressions:
        with torch.no_grad():
            enc = pipe.tokenize(impressions[:n_gap])
            latents = pipe.text_vae.encode_latents(**{k: v[:, :pipe.text_vae.config.max_length] for k, v in enc.items()})
            conditions = pipe.prompt_encoder.encode_text(**enc).pooled
        gaps["report"] = conditioning_gap(pipe, Modality.REPORT, latents, conditions)
    # G_F on the frontals above, G_L on the split's laterals; each conditioned on its own image's P_X
    views = {Modality.FRONTAL: [it.frontal for it in frontals] or [it.frontal for it in data.studies if it.frontal],
             Modality.LATERAL: [it.lateral for it in data.studies if it.lateral]}
    for modality, paths in views.items():
        if len(paths[:n_gap]) < 2:
            gaps[modality.value] = {"na": f"needs at least 2 real validation {modality.value} images; have {len(paths)}"}
            continue
        gaps[modality.value] = conditioning_gap(pipe, modality, *image_latents_and_conditions(pipe, paths[:n_gap]))
    out["conditioning_gap"] = gaps
    out["guidance_scales"] = {m.value: pipe.default_guidance_scale(m) for m in Modality}
    if n_image_sets > 0:
        out["image"] = image_following_tables(pipe, data, n=n_image_sets, n_fid=n_fid, out_dir=out_dir)
    else:
        out["image"] = {"na": "not run (--n-image-following 0)"}
    return out


def following_markdown(block: dict[str, Any]) -> list[str]:
    """The Markdown section of ``following_tables``."""
    if not block:
        return []
    lines = ["### Does the output follow its input?", "",
             "Different inputs at the same seed must give different outputs, moving in the direction of the input "
             "(`codixr.evaluate.following`). Default guidance per output: " +
             ", ".join(f"{k} {v:g}" for k, v in block.get("guidance_scales", {}).items()) + ".", ""]
    ae = block.get("text_autoencoder", {})
    if "exact_reconstruction" in ae:
        lines += ["**Text autoencoder** on held-out impressions:", "",
                  "| impressions | exact reconstruction | BLEU-1 | BLEU-2 | BLEU-3 | BLEU-4 | active dims | top direction share | distinct of prior samples |",
                  "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
                  f"| {ae['impressions']} | {ae['exact_reconstruction']:.3f} | {ae['BLEU-1']:.3f} | {ae['BLEU-2']:.3f} | "
                  f"{ae['BLEU-3']:.3f} | {ae['BLEU-4']:.3f} | {ae['active_dimensions']} of {ae['latent_dim']} | "
                  f"{ae['top_direction_variance_share']:.3f} | {ae['prior_distinct']} of {ae['prior_samples']} |", ""]
    lab = block.get("labels_to_report", {})
    if lab.get("labels"):
        lines += [f"**labels→R**: share of {len(lab['seeds'])} seeds whose impression names the requested label "
                  f"(mean {lab['mean_names_label']:.2f}; {lab['labels_at_or_above_0.7']} of {lab['n_labels']} labels "
                  f"at ≥ 0.7); the {lab['n_labels']} labels give {lab['distinct_at_one_seed']} distinct impressions "
                  f"at seed {lab['seeds'][0]}" + (f"; {lab['repeated_word_share']:.0%} of them repeat a word "
                                                   "directly (\"cardiomegaly cardiomegaly\")"
                                                   if "repeated_word_share" in lab else "") + ".",
                  "", "| label | names it | distinct over seeds | impression at the first seed |",
                  "|---|---:|---:|---|"]
        for name, row in lab["labels"].items():
            lines.append(f"| {name} | {row['names_label']:.2f} | {row['distinct_over_seeds']} | "
                         f"{row['example'].replace('|', '/')} |")
        lines.append("")
    xr = block.get("frontal_to_report", {})
    if "asserted_in_positives" in xr:
        lines += ["**F→R** on frontals with and without lung opacity (" + ", ".join(xr.get("sources", [])) + "): "
                  f"opacity, pneumonia or consolidation asserted in {xr['asserted_in_positives']:.1%} of "
                  f"{xr['n_positive']} positives and {xr['asserted_in_negatives']:.1%} of {xr['n_negative']} negatives "
                  f"(ratio {xr['ratio']:.2f}, AUROC {xr['auroc_of_assertion']:.3f}); {xr['distinct_at_shared_seed']} "
                  f"distinct impressions from {xr['n_shared']} different frontals at one shared seed.", ""]
    elif "na" in xr:
        lines += [f"**F→R**: n/a ({xr['na']}).", ""]
    for name, gap in block.get("conditioning_gap", {}).items():
        if "na" in gap:
            lines += [f"**Conditioning gap of the {name} flow**: n/a ({gap['na']}).", ""]
            continue
        adapter = ("its condition adapter (learned null)" if gap.get("adapter")
                   else "no condition adapter (one pooled token, zero null)")
        lines += [f"**Conditioning gap of the {name} flow** (n = {gap['n']}, {adapter}; relative difference of the "
                  "noise prediction with the condition vs the null condition, and vs another sample's condition):", "",
                  "| t | " + " | ".join(str(r["t"]) for r in gap["rows"]) + " |",
                  "|---|" + "---:|" * len(gap["rows"]),
                  "| vs null | " + " | ".join(f"{r['null_gap']:.3f}" for r in gap["rows"]) + " |",
                  "| vs swapped | " + " | ".join(f"{r['swap_gap']:.3f}" for r in gap["rows"]) + " |", ""]
    from codixr.evaluate.image_following import image_following_markdown

    lines += image_following_markdown(block.get("image", {}))
    return lines
