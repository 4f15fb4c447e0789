"""Training objectives of every stage (paper Sec. III), shared by ``training/`` and the tests.

* Stage 1, shared latent space: ``contrastive_loss`` -- CL_XR between P_X(images) and P_R(reports)
  (and, beyond the paper, between label embeddings and either side).
* Stage 2, single-modality generation: ``vae_loss`` (AutoKL on X-rays), ``adversarial_decoder_loss`` (its
  decoder sharpened against a patch discriminator), ``diffusion_loss`` (Eq. 2 for
  G_F, G_L and G_R), ``text_vae_loss`` (Optimus reconstruction round).
* Stage 3, cross-modal alignment: ``joint_diffusion_loss`` -- L_D of each flow attending to the
  other flows' V(z_t) (Eq. 3-5) plus the InfoNCE term between the V outputs (CL_FL, CL_FR).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from codixr.models.losses import info_nce

if TYPE_CHECKING:
    from codixr.models.conditioning import Conditioning


def add_noise(scheduler, latents: torch.Tensor, generator: torch.Generator | None = None
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Forward process q(z_t | z): returns (z_t, epsilon, t) with t ~ U[0, T)."""
    noise = torch.randn(latents.shape, generator=generator, device=latents.device, dtype=latents.dtype)
    t = torch.randint(0, scheduler.config.num_train_timesteps, (latents.shape[0],), generator=generator,
                      device=latents.device)
    return scheduler.add_noise(latents, noise, t), noise, t


def drop_condition(condition: torch.Tensor, probability: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Condition dropout for classifier-free guidance: replace whole rows by zeros with ``probability``."""
    if probability <= 0:
        return condition
    keep = torch.rand(condition.shape[0], generator=generator, device=condition.device) >= probability
    return condition * keep.view(-1, *([1] * (condition.ndim - 1))).to(condition.dtype)


def contrastive_loss(prompt_encoder, images: torch.Tensor | None = None, input_ids: torch.Tensor | None = None,
                     attention_mask: torch.Tensor | None = None, labels: torch.Tensor | None = None) -> torch.Tensor:
    """Stage 1: the sum of symmetric InfoNCE terms between every pair of the given sides.

    Images and reports give CL_XR (Sec. III.A); multi-hot labels add CL between the label encoder and
    the other sides (label conditioning, beyond the paper).
    """
    pooled = []
    if images is not None:
        pooled.append(prompt_encoder.encode_image(images).pooled)
    if input_ids is not None:
        pooled.append(prompt_encoder.encode_text(input_ids, attention_mask).pooled)
    if labels is not None:
        pooled.append(prompt_encoder.encode_labels(labels).pooled)
    if len(pooled) < 2:
        raise ValueError("contrastive_loss needs at least two of images, reports and labels")
    return sum(prompt_encoder.contrastive_loss(a, b) for i, a in enumerate(pooled) for b in pooled[i + 1:])


def image_gradients(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Horizontal and vertical finite differences of (B, C, H, W) images."""
    return images[..., :, 1:] - images[..., :, :-1], images[..., 1:, :] - images[..., :-1, :]


def vae_loss(vae, images: torch.Tensor, kl_weight: float = 1e-6, generator: torch.Generator | None = None,
             gradient_weight: float = 0.0) -> tuple[torch.Tensor, dict[str, float]]:
    """Stage 2a: AutoKL on X-rays in [-1, 1]: L1 reconstruction + kl_weight * KL (LDM's autoencoder recipe,
    without its adversarial and perceptual terms, which need pretrained networks we do not have here), plus
    ``gradient_weight`` * L1 between the image gradients of the reconstruction and of the input: an edge term
    that pixel L1 alone underweights (rib and vessel borders are a small share of the pixels), against blur."""
    posterior = vae.encode(images).latent_dist
    z = posterior.sample(generator=generator)
    rec, parts = reconstruction_loss(vae.decode(z).sample, images, gradient_weight)
    kl = posterior.kl().float().mean()  # summed over latent elements, averaged over the batch
    parts["kl"] = kl.item()
    return rec + kl_weight * kl, parts


def reconstruction_loss(recon: torch.Tensor, images: torch.Tensor, gradient_weight: float = 0.0
                        ) -> tuple[torch.Tensor, dict[str, float]]:
    """The autoencoder's reconstruction term: L1 + ``gradient_weight`` * L1 between the image gradients (an edge
    term) of a reconstruction and its input, in float32; with its parts for the log."""
    recon, images = recon.float(), images.float()
    loss = F.l1_loss(recon, images)
    parts = {"l1": loss.item()}
    if gradient_weight > 0:
        (rx, ry), (ix, iy) = image_gradients(recon), image_gradients(images)
        grad = F.l1_loss(rx, ix) + F.l1_loss(ry, iy)
        loss = loss + gradient_weight * grad
        parts["gradient_l1"] = grad.item()
    return loss, parts


def hinge_discriminator_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """The discriminator's hinge loss: real patches pushed above +1, reconstructed ones below -1."""
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())


def adaptive_adversarial_weight(reconstruction_loss: torch.Tensor, generator_loss: torch.Tensor,
                                last_layer: torch.Tensor, maximum: float = 1e4) -> torch.Tensor:
    """Taming Transformers' balance: the adversarial term is scaled so that its gradient at the decoder's last layer
    is as large as the reconstruction's (``|grad rec| / |grad adv|``), whatever the two losses' magnitudes."""
    rec_grad = torch.autograd.grad(reconstruction_loss, last_layer, retain_graph=True)[0]
    adv_grad = torch.autograd.grad(generator_loss, last_layer, retain_graph=True)[0]
    return (rec_grad.norm() / (adv_grad.norm() + 1e-4)).clamp(0.0, maximum).detach()


def adversarial_decoder_loss(vae, discriminator, images: torch.Tensor, generator: torch.Generator | None = None,
                             gradient_weight: float = 0.0, adversarial_weight: float = 0.5,
                             adversarial: bool = True) -> tuple[torch.Tensor, dict[str, float]]:
    """Stage 2a': fine-tune the decoder of a frozen-encoder AutoKL against a patch discriminator.

    Returns the sum of the decoder's loss (L1 + ``gradient_weight`` * edge L1 + lambda * adversarial hinge, lambda
    set by ``adaptive_adversarial_weight`` times ``adversarial_weight``) and the discriminator's hinge loss. The two
    share no parameters and each term only reaches its own network: the decoder's adversarial term is computed with
    the discriminator's parameters frozen, the discriminator's on a detached reconstruction. With
    ``adversarial=False`` (the warm-up) the decoder learns from L1 alone while the discriminator starts learning.
    """
    with torch.no_grad():
        z = vae.encode(images).latent_dist.sample(generator=generator)
    recon = vae.decode(z).sample.float()
    images = images.float()
    rec, parts = reconstruction_loss(recon, images, gradient_weight)
    loss = rec
    parts.update(generator_adversarial=0.0, adversarial_weight=0.0)  # every row of the log has the same columns
    if adversarial:
        discriminator.requires_grad_(False)
        g_loss = -discriminator(recon).mean()
        discriminator.requires_grad_(True)
        weight = adversarial_weight * adaptive_adversarial_weight(rec, g_loss, vae.decoder.conv_out.weight)
        loss = loss + weight * g_loss
        parts.update(generator_adversarial=g_loss.item(), adversarial_weight=float(weight))
    d_loss = hinge_discriminator_loss(discriminator(images), discriminator(recon.detach()))
    parts["discriminator"] = d_loss.item()
    return loss + d_loss, parts


def diffusion_loss(unet, scheduler, latents: torch.Tensor, condition,
                   generator: torch.Generator | None = None, cross_attention_kwargs: dict | None = None,
                   noisy: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """Eq. 2: || eps - eps_theta(z_t, t, P(I)) ||^2 for one flow (image UNet or the report ``TextUNet``).

    ``condition`` is a ``Conditioning`` (from ``codixr.models.conditioning.condition_flow``) or a (B, S, d)
    cross-attention context; ``noisy`` reuses a (z_t, eps, t) triple.
    """
    from codixr.models.conditioning import Conditioning

    cond = condition if isinstance(condition, Conditioning) else Conditioning(condition)
    z_t, noise, t = noisy if noisy is not None else add_noise(scheduler, latents, generator)
    pred = unet(z_t, t, cross_attention_kwargs=cross_attention_kwargs, **cond.kwargs()).sample
    return F.mse_loss(pred.float(), noise.float())


def text_vae_loss(text_vae, input_ids: torch.Tensor, attention_mask: torch.Tensor, beta: float = 0.5,
                  free_bits: float = 0.05, generator: torch.Generator | None = None,
                  word_dropout: float = 0.0) -> tuple[torch.Tensor, dict[str, float]]:
    """Stage 2c: the Optimus reconstruction round (cross-entropy + beta * KL with free bits, word dropout)."""
    out = text_vae(input_ids, attention_mask, beta=beta, free_bits=free_bits, generator=generator,
                   word_dropout=word_dropout)
    return out.loss, {"reconstruction": out.reconstruction_loss.item(), "kl": out.kl.item()}


@dataclass
class Flow:
    """One generative flow taking part in stage 3: its denoiser, latents, condition, V and whether it learns."""

    unet: torch.nn.Module
    latents: torch.Tensor
    condition: "torch.Tensor | Conditioning"  # a (B, S, d) context or a Conditioning (codixr.models.conditioning)
    environment: torch.nn.Module


def joint_diffusion_loss(flows: dict[str, Flow], scheduler, generator: torch.Generator | None = None,
                         logit_scale: float = 1 / 0.07) -> tuple[torch.Tensor, dict[str, float]]:
    """Stage 3: sum over flows of L_D^m (each attending to the other flows' V(z_t), Eq. 3-5) + CL between V outputs.

    All flows share the timestep t of a sample, so the environment each flow sees is as noisy as its own.
    Returns the total and its parts (e.g. ``{"L_D^frontal": ..., "CL": ...}``).
    """
    names = list(flows)
    first = flows[names[0]].latents
    t = torch.randint(0, scheduler.config.num_train_timesteps, (first.shape[0],), generator=generator, device=first.device)
    noisy = {}
    for name in names:
        lat = flows[name].latents
        noise = torch.randn(lat.shape, generator=generator, device=lat.device, dtype=lat.dtype)
        noisy[name] = (scheduler.add_noise(lat, noise, t), noise, t)
    env = {name: flows[name].environment(noisy[name][0]) for name in names}  # (tokens, pooled)
    parts: dict[str, float] = {}
    total = torch.zeros((), device=first.device)
    for name in names:
        others = torch.cat([env[o][0] for o in names if o != name], dim=1)
        loss = diffusion_loss(flows[name].unet, scheduler, flows[name].latents, flows[name].condition,
                              cross_attention_kwargs={"environment": others}, noisy=noisy[name])
        parts[f"L_D^{name}"] = loss.item()
        total = total + loss
    cl = sum(info_nce(env[a][1], env[b][1], logit_scale) for i, a in enumerate(names) for b in names[i + 1:])
    parts["CL"] = float(cl.detach())
    return total + cl, parts
