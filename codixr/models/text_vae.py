"""Optimus-style text VAE of the report LDM G_R (paper Sec. III.B; Li et al., 2020).

A BERT encoder reads the impression; its pooled state ([CLS] or the mean over tokens) is mapped to a
diagonal Gaussian over a latent vector z (768-d at the paper's scale). A GPT-2 decoder reconstructs the
impression from z, which reaches the decoder in both of Optimus' ways: as a short prefix of
``num_prefix_tokens`` embeddings that every layer attends to (the "memory" injection), and, with
``inject_embeddings``, added to the embedding of every input position (the "embedding" injection), so
that the decoder cannot cheaply ignore it.

The objective is balanced as in Optimus: the reconstruction term is the cross-entropy *summed* over the
tokens of an impression (a log-likelihood of the whole sentence, like the KL it is weighed against), and
the KL is thresholded per latent dimension (free bits), so each dimension may carry ``free_bits`` nats at
no cost. (A per-token mean against a KL summed over dimensions lets the KL dominate and the latent
collapse: the first bundled model's text latent had one informative direction.)

The report diffusion (``TextUNet``) runs on ``scaling_factor * mean(z)``, like the image VAE latents.
"""

from __future__ import annotations

import logging
import math
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
        inject_embeddings: also add a projection of z to every decoder input embedding (Optimus).
        pooling: how the encoder summarises the impression: "cls" or "mean" (masked mean over tokens).
        reconstruction: "sum" (cross-entropy summed over the tokens of each impression; Optimus) or "mean"
            (per-token mean, the first bundled model's objective; kept to load that package).
        latent_noise: when set, q(z | report) has this fixed standard deviation around a learned mean (a
            "deterministic latent with fixed noise"): z carries the sentence from the first step on, and the KL to
            N(0, I) reduces to a pull of the means towards 0. None: the variance is learned too (Optimus).
        no_repeat_ngram_size: decoding never repeats an n-gram of this size within an impression, nor a token
            directly after itself (``RepeatBlocker``); 0 turns both off. Chosen on validation reconstructions.
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
        inject_embeddings: bool = False,
        pooling: str = "cls",
        reconstruction: str = "mean",
        latent_noise: float | None = None,
        no_repeat_ngram_size: int = 0,
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
        if pooling not in ("cls", "mean") or reconstruction not in ("sum", "mean"):
            raise ValueError(f"pooling must be 'cls' or 'mean' and reconstruction 'sum' or 'mean'; got {pooling!r}, "
                             f"{reconstruction!r}")
        self.to_embedding = nn.Linear(latent_dim, self.decoder.config.n_embd) if inject_embeddings else None

    # ------------------------------------------------------------------ encode / decode
    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Impression tokens -> (mean, logvar) of q(z | report)."""
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        if self.config.pooling == "mean":
            weights = attention_mask.to(hidden.dtype)[..., None]
            pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)
        else:
            pooled = hidden[:, 0]
        mean, logvar = self.to_moments(pooled).chunk(2, dim=-1)
        if self.config.latent_noise is not None:
            logvar = torch.full_like(mean, 2.0 * math.log(self.config.latent_noise))
        return mean, logvar.clamp(-30.0, 20.0)

    def prefix(self, z: torch.Tensor) -> torch.Tensor:
        """z (B, latent_dim) -> decoder prefix embeddings (B, num_prefix_tokens, n_embd)."""
        return self.to_prefix(z).view(z.shape[0], self.config.num_prefix_tokens, -1)

    def token_embeddings(self, input_ids: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Decoder input embeddings of ``input_ids``, with z added at every position when ``inject_embeddings``."""
        tokens = self.decoder.transformer.wte(input_ids)
        if self.to_embedding is not None:
            tokens = tokens + self.to_embedding(z)[:, None]
        return tokens

    def decoder_hidden(self, z: torch.Tensor, tokens: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Decoder hidden states at the token positions (B, T, n_embd), after z's prefix, for input embeddings
        ``tokens`` (from ``token_embeddings``) whose first token is [CLS]."""
        prefix = self.prefix(z)
        embeds = torch.cat([prefix, tokens], dim=1)
        mask = torch.cat([torch.ones(prefix.shape[:2], dtype=attention_mask.dtype, device=attention_mask.device),
                          attention_mask], dim=1)
        return self.decoder.transformer(inputs_embeds=embeds, attention_mask=mask).last_hidden_state[:, prefix.shape[1]:]

    def decoder_logits(self, z: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits for ``input_ids`` (starting with [CLS]) given z; (B, T, vocab)."""
        return self.decoder.lm_head(self.decoder_hidden(z, self.token_embeddings(input_ids, z), attention_mask))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, beta: float = 1.0,
                free_bits: float = 0.0, generator: torch.Generator | None = None,
                word_dropout: float = 0.0) -> TextVAEOutput:
        """The reconstruction objective: CE(report | z) + beta * KL(q(z|report) || N(0, I)).

        CE is summed over each impression's tokens (``reconstruction="sum"``) or averaged per token ("mean");
        ``free_bits`` (Optimus' KL thresholding, per latent dimension, in nats) avoids posterior collapse.
        ``reconstruction_loss`` is always reported per token, comparable across objectives. ``word_dropout``
        blanks that fraction of the decoder's input words (Bowman et al., 2016), so that the words to come must
        be read from z rather than guessed from the words before.
        """
        mean, logvar = self.encode(input_ids, attention_mask)
        eps = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        z = mean + torch.exp(0.5 * logvar) * eps
        tokens = self.token_embeddings(input_ids, z)
        if word_dropout > 0:
            drop = torch.rand(input_ids.shape, generator=generator, device=input_ids.device) < word_dropout
            drop[:, 0] = False  # keep [CLS]
            blank = self.to_embedding(z)[:, None] if self.to_embedding is not None else torch.zeros_like(tokens)
            tokens = torch.where(drop[..., None], blank.expand_as(tokens), tokens)
        # predict token t+1 from tokens <= t (the prefix and [CLS] predict the first word). The vocabulary
        # projection runs only where there is a token to predict (padding is most of a batch).
        hidden = self.decoder_hidden(z, tokens, attention_mask)[:, :-1]
        targets = input_ids[:, 1:]
        valid = attention_mask[:, 1:] == 1
        token_ce = F.cross_entropy(self.decoder.lm_head(hidden[valid]), targets[valid], reduction="none")
        n_tokens = valid.sum().clamp(min=1)
        per_token = token_ce.sum() / n_tokens
        rec = token_ce.sum() / input_ids.shape[0] if self.config.reconstruction == "sum" else per_token
        kl_per_dim = 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).mean(dim=0)
        kl = torch.clamp(kl_per_dim, min=free_bits).sum() if free_bits > 0 else kl_per_dim.sum()
        return TextVAEOutput(loss=rec + beta * kl, reconstruction_loss=per_token, kl=kl_per_dim.sum(), mean=mean,
                             logvar=logvar)

    @torch.no_grad()
    def encode_latents(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Scaled diffusion latents of reports: ``scaling_factor * mean``."""
        mean, _ = self.encode(input_ids, attention_mask)
        return mean * self.config.scaling_factor

    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor, max_new_tokens: int | None = None, do_sample: bool = False,
                       temperature: float = 1.0, top_p: float = 0.9,
                       generator: torch.Generator | None = None,
                       no_repeat_ngram_size: int | None = None,
                       placeholder_token_id: int | None = None) -> torch.Tensor:
        """Scaled diffusion latents -> token ids, [CLS] first and [PAD] after each impression's [SEP].

        Greedy by default (deterministic); ``do_sample`` draws each token from the nucleus (``top_p``) of the
        tempered distribution, with ``generator`` for repeatable draws. z enters every step (prefix memory and,
        with ``inject_embeddings``, the embedding of each new token), which ``GPT2LMHeadModel.generate`` cannot
        express, so the loop runs here on the decoder's key/value cache. ``no_repeat_ngram_size`` (default: the
        config's) blocks repeated n-grams except runs of ``placeholder_token_id`` up to three (``RepeatBlocker``).
        """
        z = (latents / self.config.scaling_factor).to(self.dtype)
        batch, device = z.shape[0], z.device
        cfg = self.config
        bos = torch.full((batch, 1), cfg.bos_token_id, dtype=torch.long, device=device)
        embeds = torch.cat([self.prefix(z), self.token_embeddings(bos, z)], dim=1)
        tokens, finished, past = [bos], torch.zeros(batch, dtype=torch.bool, device=device), None
        length = embeds.shape[1]
        n = no_repeat_ngram_size if no_repeat_ngram_size is not None else cfg.get("no_repeat_ngram_size", 0)
        block_repeats = RepeatBlocker(int(n), placeholder_token_id) if n else None
        for _ in range(max_new_tokens or cfg.max_length):
            out = self.decoder(inputs_embeds=embeds, cache=past, use_cache=True,
                               attention_mask=torch.ones((batch, length), dtype=torch.long, device=device))
            past, logits = out.cache, out.logits[:, -1].float()
            if block_repeats is not None:
                logits = block_repeats(torch.cat(tokens, dim=1), logits)
            if do_sample:
                probs = torch.softmax(logits / max(temperature, 1e-4), dim=-1)
                sorted_p, order = probs.sort(dim=-1, descending=True)
                outside = sorted_p.cumsum(-1) - sorted_p > top_p  # keep the smallest set reaching top_p
                sorted_p = sorted_p.masked_fill(outside, 0.0)
                pick = torch.multinomial(sorted_p, 1, generator=generator)
                next_ids = order.gather(-1, pick)[:, 0]
            else:
                next_ids = logits.argmax(dim=-1)
            next_ids = next_ids.masked_fill(finished, cfg.pad_token_id)
            tokens.append(next_ids[:, None])
            finished |= next_ids == cfg.eos_token_id
            if bool(finished.all()):
                break
            embeds = self.token_embeddings(next_ids[:, None], z)
            length += 1
        return torch.cat(tokens, dim=1)

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


PLACEHOLDER = "_"  # IU's de-identification mark "___" is three of these tokens


class RepeatBlocker:
    """No n-gram twice in an impression (as transformers' ``NoRepeatNGramLogitsProcessor``), except around the
    de-identification placeholder: IU writes "___" (three "_" tokens) wherever a word was removed, so n-grams
    that contain it may recur ("No ___ of effusion. No ___ of pneumothorax."), but never as a run of more than
    three. Nor does a token follow itself ("cardiomegaly cardiomegaly"), which real impressions never do and
    strongly guided latents otherwise produce."""

    def __init__(self, ngram_size: int, placeholder_id: int | None = None, placeholder_run: int = 3):
        self.n, self.placeholder_id, self.run = ngram_size, placeholder_id, placeholder_run

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        n, p = self.n, self.placeholder_id
        scores = scores.clone()
        for row, ids in enumerate(input_ids.tolist()):
            if ids and ids[-1] != p:
                scores[row, ids[-1]] = -float("inf")
            if len(ids) + 1 < n:
                continue
            prefix = tuple(ids[len(ids) - n + 1:]) if n > 1 else ()
            if p is not None and len(ids) >= self.run and all(t == p for t in ids[-self.run:]):
                scores[row, p] = -float("inf")
            if p is not None and p in prefix:
                continue
            banned = {ids[i + n - 1] for i in range(len(ids) - n + 1) if tuple(ids[i:i + n - 1]) == prefix}
            banned.discard(p)
            if banned:
                scores[row, list(banned)] = -float("inf")
        return scores


@torch.no_grad()
def decode_reports(text_vae: OptimusTextVAE, tokenizer, latents: torch.Tensor, **decode_kwargs) -> list[str]:
    """Scaled report latents -> impressions as text (``decode_latents``, then the tokenizer, special tokens off)."""
    placeholder = tokenizer.convert_tokens_to_ids(PLACEHOLDER) if PLACEHOLDER in tokenizer.get_vocab() else None
    decode_kwargs.setdefault("placeholder_token_id", placeholder)
    ids = text_vae.decode_latents(latents, **decode_kwargs)
    return [t.strip() for t in tokenizer.batch_decode(ids, skip_special_tokens=True)]
