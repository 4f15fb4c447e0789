"""Optimus-style text VAE of the report LDM G_R (paper Sec. III.B; Li et al., 2020).

A BERT encoder reads the impression; its [CLS] state is mapped to a diagonal Gaussian over a
latent vector z (768-d at the paper's scale). A GPT-2 decoder reconstructs the impression from z,
which enters the decoder as a short prefix of ``num_prefix_tokens`` embeddings (Optimus' "memory"
injection expressed as a prefix, so that ``GPT2LMHeadModel.generate`` can decode it).

The report diffusion (``TextUNet``) runs on ``scaling_factor * mean(z)``, like the image VAE latents.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from transformers import BertConfig, BertModel, GPT2Config, GPT2LMHeadModel

logger = logging.getLogger(__name__)


@dataclass
class TextVAEOutput:
    loss: torch.Tensor
    reconstruction_loss: torch.Tensor
    kl: torch.Tensor
    mean: torch.Tensor
    logvar: torch.Tensor


class OptimusTextVAE(ModelMixin, ConfigMixin):
    """BERT encoder -> latent z -> GPT-2 decoder.

    Args:
        vocab_size: tokenizer size (one WordPiece vocabulary shared with P_R).
        latent_dim: size of z (paper: 768).
        encoder_config: kwargs of ``transformers.BertConfig``.
        decoder_config: kwargs of ``transformers.GPT2Config``.
        num_prefix_tokens: how many decoder prefix embeddings z is expanded into.
        max_length: longest impression (tokens) the decoder writes.
        pad_token_id, bos_token_id, eos_token_id: special tokens of the shared tokenizer
            ([PAD], [CLS] as begin-of-text, [SEP] as end-of-text).
        scaling_factor: multiplies mean(z) before diffusion; measured on training data (like AutoKL's).
    """

    @register_to_config
    def __init__(
        self,
        vocab_size: int = 4000,
        latent_dim: int = 128,
        encoder_config: dict | None = None,
        decoder_config: dict | None = None,
        num_prefix_tokens: int = 4,
        max_length: int = 64,
        pad_token_id: int = 0,
        bos_token_id: int = 2,
        eos_token_id: int = 3,
        scaling_factor: float = 1.0,
    ):
        super().__init__()
        enc = dict(encoder_config or {})
        enc.update(vocab_size=vocab_size, pad_token_id=pad_token_id)
        dec = dict(decoder_config or {})
        dec.update(vocab_size=vocab_size, bos_token_id=bos_token_id, eos_token_id=eos_token_id,
                   pad_token_id=pad_token_id)
        dec.setdefault("n_positions", max_length + num_prefix_tokens + 2)
        # Untied output embedding: safetensors (no shared tensors on disk) and the diffusers loader need it.
        dec["tie_word_embeddings"] = False
        self.encoder = BertModel(BertConfig(**enc), add_pooling_layer=False)
        self.decoder = GPT2LMHeadModel(GPT2Config(**dec))
        self.to_moments = nn.Linear(self.encoder.config.hidden_size, 2 * latent_dim)
        self.to_prefix = nn.Linear(latent_dim, num_prefix_tokens * self.decoder.config.n_embd)

    # ------------------------------------------------------------------ encode / decode
    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Impression tokens -> (mean, logvar) of q(z | report)."""
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mean, logvar = self.to_moments(hidden[:, 0]).chunk(2, dim=-1)
        return mean, logvar.clamp(-30.0, 20.0)

    def prefix(self, z: torch.Tensor) -> torch.Tensor:
        """z (B, latent_dim) -> decoder prefix embeddings (B, num_prefix_tokens, n_embd)."""
        return self.to_prefix(z).view(z.shape[0], self.config.num_prefix_tokens, -1)

    def decoder_logits(self, z: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits for ``input_ids`` (starting with [CLS]) given z; (B, T, vocab)."""
        prefix = self.prefix(z)
        tokens = self.decoder.transformer.wte(input_ids)
        embeds = torch.cat([prefix, tokens], dim=1)
        mask = torch.cat([torch.ones(prefix.shape[:2], dtype=attention_mask.dtype, device=attention_mask.device),
                          attention_mask], dim=1)
        logits = self.decoder(inputs_embeds=embeds, attention_mask=mask).logits
        return logits[:, prefix.shape[1]:]

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, beta: float = 1.0,
                free_bits: float = 0.0, generator: torch.Generator | None = None) -> TextVAEOutput:
        """The reconstruction objective: CE(report | z) + beta * KL(q(z|report) || N(0, I)).

        ``free_bits`` (Optimus' KL thresholding, per latent dimension, in nats) avoids posterior collapse.
        """
        mean, logvar = self.encode(input_ids, attention_mask)
        eps = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        z = mean + torch.exp(0.5 * logvar) * eps
        logits = self.decoder_logits(z, input_ids, attention_mask)
        # predict token t+1 from tokens <= t; the first prediction ([CLS]) comes from the prefix alone.
        shift_logits = logits[:, :-1]
        shift_labels = input_ids[:, 1:].masked_fill(attention_mask[:, 1:] == 0, -100)
        rec = F.cross_entropy(shift_logits.reshape(-1, shift_logits.shape[-1]), shift_labels.reshape(-1),
                              ignore_index=-100)
        kl_per_dim = 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).mean(dim=0)
        kl = torch.clamp(kl_per_dim, min=free_bits).sum() if free_bits > 0 else kl_per_dim.sum()
        return TextVAEOutput(loss=rec + beta * kl, reconstruction_loss=rec, kl=kl_per_dim.sum(), mean=mean,
                             logvar=logvar)

    @torch.no_grad()
    def encode_latents(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Scaled diffusion latents of reports: ``scaling_factor * mean``."""
        mean, _ = self.encode(input_ids, attention_mask)
        return mean * self.config.scaling_factor

    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor, max_new_tokens: int | None = None) -> torch.Tensor:
        """Scaled diffusion latents -> token ids (greedy; deterministic). Includes [CLS] first."""
        z = latents / self.config.scaling_factor
        batch = z.shape[0]
        bos = torch.full((batch, 1), self.config.bos_token_id, dtype=torch.long, device=z.device)
        embeds = torch.cat([self.prefix(z.to(self.dtype)), self.decoder.transformer.wte(bos)], dim=1)
        out = self.decoder.generate(
            inputs_embeds=embeds,
            attention_mask=torch.ones(embeds.shape[:2], dtype=torch.long, device=z.device),
            max_new_tokens=max_new_tokens or self.config.max_length,
            do_sample=False,
            num_beams=1,
            eos_token_id=self.config.eos_token_id,
            pad_token_id=self.config.pad_token_id,
        )
        return torch.cat([bos, out], dim=1)

    @classmethod
    def from_pretrained_parts(cls, encoder: str, decoder: str, latent_dim: int = 768, **kwargs) -> "OptimusTextVAE":
        """Build from an existing BERT folder/hub id and GPT-2 folder/hub id (the Optimus initialisation).

        Both must share the vocabulary of the tokenizer used with the model (e.g. a BERT vocabulary
        for both, as here); pass ``vocab_size`` and special token ids in ``kwargs`` accordingly.
        """
        bert = BertModel.from_pretrained(encoder, add_pooling_layer=False)
        gpt2 = GPT2LMHeadModel.from_pretrained(decoder)
        kwargs.setdefault("vocab_size", bert.config.vocab_size)
        model = cls(latent_dim=latent_dim, encoder_config=bert.config.to_diff_dict(),
                    decoder_config=gpt2.config.to_diff_dict(), **kwargs)
        model.encoder.load_state_dict(bert.state_dict(), strict=False)
        model.decoder.load_state_dict(gpt2.state_dict(), strict=False)
        return model
