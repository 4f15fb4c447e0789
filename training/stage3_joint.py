"""Stage 3 — cross-modal alignment for joint generation (paper Sec. III.C, Fig. 2c, Eq. 3–5).

    python -m training.stage3_joint --pair FL --config small     # L_FL = L_D^F + L_D^L + CL_FL
    python -m training.stage3_joint --pair FR --config small     # L_FR = L_D^F + L_D^R + CL_FR, G_F frozen

Only the environment encoders V and the cross-attention QKV layers train; the UNets, VAEs and prompt
encoders stay frozen. FL trains V_F, V_L, QKV_F, QKV_L on studies that have both views; FR then keeps all of
G_F frozen (its V_F and QKV_F included, as in the paper) and trains V_R and QKV_R on images paired with a
report text. Both flows of a sample share its timestep. The condition is the sample's labels or text
embedding (the paper uses the report, P(I_R), for FL and the lateral view, P(I_L), for FR), read by each flow
through its frozen condition adapter where it has one (G_F, G_L and G_R trained with ``ConditionAdapter``).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from diffusers import DDPMScheduler

from codixr.models.conditioning import ConditionAdapter, condition_flow, drop_mask
from codixr.models.configs import SD_SCHEDULER, build_joint_components, get_config
from codixr.models.environment import CrossModalAttention, EnvironmentEncoder
from codixr.models.objectives import Flow, joint_diffusion_loss
from codixr.models.text_unet import TextUNet
from codixr.models.text_vae import OptimusTextVAE
from training.common import load_done, prepare_stage, train_stage
from training.conditions import ConditionBank, embed_labels, embed_texts
from training.stage2_text import tokenize_for_vae
from training.stage2_unet import encode_latents, load_frozen, load_image_flow

logger = logging.getLogger("training.stage3")


class JointModule(torch.nn.Module):
    """The flows of one pair; V and QKV of the trainable flows are the only parameters with gradients."""

    def __init__(self, unets: dict, environments: dict, attentions: dict, latents: dict, scale: dict, bank, dropout,
                 adapters: dict | None = None):
        super().__init__()
        self.unets = torch.nn.ModuleDict(unets)
        self.adapters = torch.nn.ModuleDict(adapters or {})  # frozen condition adapters of flows that have one
        self.environments = torch.nn.ModuleDict(environments)
        self.attentions = torch.nn.ModuleDict(attentions)
        for name, qkv in attentions.items():
            qkv.attach(unets[name])
        self.latents, self.scale, self.bank, self.dropout = latents, scale, bank, dropout
        self.scheduler = DDPMScheduler(**SD_SCHEDULER)

    def forward(self, batch, generator=None):
        idx = batch["indices"]
        device = next(self.environments.parameters()).device
        cond = self.bank.sample(idx, generator).to(device)
        drop = drop_mask(len(idx), self.dropout, generator, device)  # one dropout draw for all flows of a sample
        flows = {}
        for name in self.unets:
            mean, std = self.latents[name]
            z = mean[idx] + (std[idx] * torch.randn(mean[idx].shape, generator=generator) if std is not None else 0)
            conditioning = condition_flow(self.adapters[name] if name in self.adapters else None, cond, drop=drop)
            flows[name] = Flow(self.unets[name], (z * self.scale[name]).to(device), conditioning,
                               self.environments[name])
        return joint_diffusion_loss(flows, self.scheduler, generator)


def main(argv=None) -> dict:
    ctx = prepare_stage(__doc__, lambda a: f"stage3_joint_{a.pair}",
                        lambda p: p.add_argument("--pair", choices=("FL", "FR"), required=True), argv)
    args, config, root, stage, spec, data = ctx.args, ctx.config, ctx.root, ctx.stage, ctx.spec, ctx.data
    pe, tokenizer, vae = load_frozen(root)
    model_cfg = get_config(config["model"])
    # G_F (and G_L) with their condition adapters where they have one (made before the adapter existed: none)
    unet_f, adapter_f = load_image_flow(load_done(root / "stage2_unet_frontal", "G_F"), "frontal")
    frozen = {"frontal": unet_f}
    adapters = {"frontal": adapter_f}
    if args.pair == "FL":
        pairs = data.paired_views("train")
        frozen["lateral"], adapters["lateral"] = load_image_flow(load_done(root / "stage2_unet_lateral", "G_L"),
                                                                 "lateral")
        fronts, others = [p[0] for p in pairs], [p[1] for p in pairs]
        texts = [f.text for f in fronts]
    else:
        fronts = [it for it in data.image_items("train", views=("frontal",)) if it.text]
        texts = [it.text for it in fronts]
        g_r = load_done(root / "stage2_text_unet", "G_R")
        frozen["report"] = TextUNet.from_pretrained(g_r / "text_unet")
        if (g_r / "condition_report").is_dir():
            adapters["report"] = ConditionAdapter.from_pretrained(g_r / "condition_report").eval().requires_grad_(False)
        text_vae = OptimusTextVAE.from_pretrained(load_done(root / "stage2_text_vae", "text VAE") / "text_vae")
    if not fronts:
        raise RuntimeError(f"{stage}: no training pairs for {args.pair}")
    adapters = {name: a.eval().requires_grad_(False) for name, a in adapters.items() if a is not None}
    for unet in frozen.values():
        unet.eval().requires_grad_(False)
    logger.info("%s: %d training pairs", stage, len(fronts))

    # latents of both flows (mean, std of q(z|x) for images; posterior mean for reports)
    latents = {"frontal": encode_latents(vae, lambda idx: data.images(fronts, list(idx)), len(fronts))}
    scale = {"frontal": vae.config.scaling_factor}
    if args.pair == "FL":
        latents["lateral"] = encode_latents(vae, lambda idx: data.images(others, list(idx)), len(others))
        scale["lateral"] = vae.config.scaling_factor
    else:
        with torch.no_grad():
            enc = tokenize_for_vae(tokenizer, texts, text_vae.config.max_length)
            latents["report"] = (text_vae.encode(enc["input_ids"], enc["attention_mask"])[0], None)
        scale["report"] = text_vae.config.scaling_factor

    # conditions: labels or text of the study
    has_labels = np.array([it.has_labels for it in fronts])
    h_lab = embed_labels(pe, np.stack([it.labels for it in fronts]), has_labels)
    h_txt, has_txt = embed_texts(pe, tokenizer, texts)
    if not (has_labels | has_txt).all():
        keep = has_labels | has_txt
        raise RuntimeError(f"{stage}: {int((~keep).sum())} pairs have neither labels nor text to condition on")
    bank = ConditionBank([h_lab, h_txt], [has_labels, has_txt], ["labels", "text"])

    # V and QKV: FL starts fresh; FR reuses the frozen V_F/QKV_F of FL and trains those of the report flow
    fresh = build_joint_components({"unet_frontal": unet_f, "unet_lateral": frozen.get("lateral", unet_f),
                                    "text_unet": frozen.get("report") or TextUNet(**model_cfg["text_unet"])}, model_cfg)
    environments, attentions = {}, {}
    if args.pair == "FL":
        for name in ("frontal", "lateral"):
            environments[name], attentions[name] = fresh[f"environment_{name}"], fresh[f"cross_attention_{name}"]
    else:
        fl = load_done(root / "stage3_joint_FL", "Stage 3 F<->L")
        environments["frontal"] = EnvironmentEncoder.from_pretrained(fl / "environment_frontal").requires_grad_(False)
        attentions["frontal"] = CrossModalAttention.from_pretrained(fl / "cross_attention_frontal").requires_grad_(False)
        environments["report"], attentions["report"] = fresh["environment_report"], fresh["cross_attention_report"]
    module = JointModule(frozen, environments, attentions, latents, scale, bank,
                         float(spec.extra.get("condition_dropout", 0.1)), adapters)
    trained = [n for n in environments if any(p.requires_grad for p in environments[n].parameters())]

    def batch_fn(indices, generator):
        return {"indices": indices}

    def save_fn(module, final: Path):
        for name in trained:
            module.environments[name].save_pretrained(final / f"environment_{name}")
            module.attentions[name].save_pretrained(final / f"cross_attention_{name}")

    info = {"pairs": len(fronts), "trained": [f"V_{n}, QKV_{n}" for n in trained], "condition_kinds": bank.names}
    return train_stage(spec, root / stage, module, len(fronts), batch_fn, save_fn, info=info)


if __name__ == "__main__":
    main()
