"""AdaPatch and the patch-word alignment of AdaMatch (Chen et al., Sec. 3.1, Eq. 1-9).

AdaMatch's image encoder is a PVT whose stages 2-4 carry an Adaptive Patch extraction module; ours is
P_X, a plain ViT (CLIP vision tower), so one AdaPatch head sits on top of its last-layer patch tokens
z^(i), i = 1..N, which lie on a fixed g x g grid (row-major, as the ViT flattens its patches):

1. **Offsets and sizes (Eq. 1-2).** A fully connected layer (+ GELU) on z^(i), then four FC heads:
   delta_x, delta_y = tanh(f1(.)), tanh(f2(.)) and s_w, s_h = ReLU(tanh(f3(.))), ReLU(tanh(f4(.))).
   **Units: fractions of the image side** (the image is [0, 1] x [0, 1]), so an adaptive patch may move
   anywhere and grow up to the whole image. f1..f4 start at zero weight, and f3/f4's bias at
   atanh(1/g), so every adaptive patch starts as its fixed patch (offset 0, size one grid cell).
2. **Corners (Eq. 3-4).** a = c + delta - s/2, b = c + delta + s/2 around the fixed patch centre c.
   The centre c + delta is clamped into the image first, then both corners, so every box lies inside
   the image (a box may shrink where it meets the border).
3. **Sampling.** m x m points uniformly inside each box (cell centres of an m x m split of the box) are
   read by bilinear interpolation (``grid_sample``, ``align_corners=False``, border padding) from the
   feature map(s) named by ``feature_source``:

   * ``"pixels"``: the input image itself, first area-averaged to (g m) x (g m) pixels so that the
     m x m samples of a fixed-size patch see every pixel once (the paper's a^(i,j): image features at
     the sampled pixels);
   * ``"tokens"``: the ViT's last-layer patch-token map, (hidden, g, g), token i at its cell centre;
   * ``"tokens+pixels"`` (default): both, concatenated per sample point. A plain ViT has no early
     pyramid stage to sample, unlike the paper's PVT (whose stage-3 inputs are already deep features);
     the token map carries that semantic content and the pixels carry the detail inside the box.
4. **Embedding (f5), position, R.** The samples are flattened, mapped by FC f5 to the hidden width,
   a learned position embedding of the fixed patch is added, and one transformer encoder layer R
   (attention + feed-forward) mixes the N adaptive patches. A LayerNorm and a linear projection
   map them into the shared space of dimension d (the word tokens of P_R live there too).

Patch-word alignment (Eq. 5-9): :func:`patch_word_similarity` and :func:`patch_word_loss`.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Iterable

import torch
import torch.nn as nn
import torch.nn.functional as F

from codixr.errors import InputError

logger = logging.getLogger(__name__)

FEATURE_SOURCES = ("tokens", "pixels", "tokens+pixels")


@dataclass
class AdaPatchOutput:
    """What :class:`AdaPatch` returns.

    Attributes:
        embeddings: (B, N, d) adaptive patch embeddings z^I in the shared space (not normalised).
        boxes: (B, N, 4) adaptive patches as (x0, y0, x1, y1) fractions of the image side, inside [0, 1].
        centres: (B, N, 2) centres (x, y) of the fixed patches they were shifted from, image fractions.
    """

    embeddings: torch.Tensor
    boxes: torch.Tensor
    centres: torch.Tensor


class AdaPatch(nn.Module):
    """Adaptive Patch extraction (AdaMatch Eq. 1-4) on a ViT's patch tokens, projected into the shared space.

    Args:
        grid_size: g, fixed patches per side (ViT image_size // patch_size); N = g * g tokens.
        hidden_size: width of the ViT tokens z^(i) (and of f5, R).
        projection_dim: d, width of the shared space the adaptive patch embeddings are projected to.
        num_samples: m, sample points per side inside each adaptive patch (m * m points in all).
        num_heads: attention heads of the transformer encoder layer R.
        feature_source: what is sampled: "tokens", "pixels" or "tokens+pixels" (see the module docstring).
        image_channels: channels of the pixel image (1 for X-rays).
        dropout: dropout inside R.

    Every argument is a plain value, so ``AdaPatch(**adapatch.config)`` rebuilds the module (the dict can
    live in ``PromptEncoder``'s config).
    """

    def __init__(self, grid_size: int, hidden_size: int, projection_dim: int, num_samples: int = 4,
                 num_heads: int = 4, feature_source: str = "tokens+pixels", image_channels: int = 1,
                 dropout: float = 0.0):
        super().__init__()
        if feature_source not in FEATURE_SOURCES:
            raise ValueError(f"feature_source must be one of {', '.join(FEATURE_SOURCES)}, not {feature_source!r}")
        if grid_size < 1 or num_samples < 1:
            raise ValueError("AdaPatch needs grid_size >= 1 and num_samples >= 1")
        self.config: dict[str, Any] = dict(
            grid_size=grid_size, hidden_size=hidden_size, projection_dim=projection_dim, num_samples=num_samples,
            num_heads=num_heads, feature_source=feature_source, image_channels=image_channels, dropout=dropout)
        self.grid_size, self.num_samples, self.feature_source = grid_size, num_samples, feature_source
        n = grid_size * grid_size
        channels = ((hidden_size if "tokens" in feature_source else 0)
                    + (image_channels if "pixels" in feature_source else 0))
        # Eq. 1-2: a shared FC layer, then f1..f4.
        self.fc = nn.Sequential(nn.Linear(hidden_size, hidden_size), nn.GELU())
        self.f1, self.f2, self.f3, self.f4 = (nn.Linear(hidden_size, 1) for _ in range(4))
        # f5: flattened m x m samples -> adaptive patch embedding.
        self.f5 = nn.Linear(num_samples * num_samples * channels, hidden_size)
        self.position_embedding = nn.Parameter(torch.randn(1, n, hidden_size) * 0.02)
        # R: one transformer encoder layer (attention + feed-forward).
        self.encoder = nn.TransformerEncoderLayer(hidden_size, num_heads, dim_feedforward=4 * hidden_size,
                                                  dropout=dropout, activation="gelu", batch_first=True,
                                                  norm_first=True)
        self.norm = nn.LayerNorm(hidden_size)
        self.projection = nn.Linear(hidden_size, projection_dim, bias=False)
        self.reset_box_heads()
        # Fixed patch centres (x, y), row-major like the ViT's flattened patches; and the m x m sample layout.
        cells = (torch.arange(grid_size, dtype=torch.float32) + 0.5) / grid_size
        cy, cx = torch.meshgrid(cells, cells, indexing="ij")
        self.register_buffer("fixed_centres", torch.stack([cx.flatten(), cy.flatten()], -1), persistent=False)
        unit = (torch.arange(num_samples, dtype=torch.float32) + 0.5) / num_samples
        uy, ux = torch.meshgrid(unit, unit, indexing="ij")
        self.register_buffer("sample_layout", torch.stack([ux, uy], -1), persistent=False)  # (m, m, 2)

    def reset_box_heads(self) -> None:
        """Start every adaptive patch at its fixed patch: zero offset, size of one grid cell."""
        size_bias = math.atanh(min(1.0 / self.grid_size, 0.999))
        for head, bias in ((self.f1, 0.0), (self.f2, 0.0), (self.f3, size_bias), (self.f4, size_bias)):
            nn.init.zeros_(head.weight)
            nn.init.constant_(head.bias, bias)

    @property
    def num_patches(self) -> int:
        return self.grid_size * self.grid_size

    def predict_boxes(self, patch_tokens: torch.Tensor) -> torch.Tensor:
        """Eq. 1-4: (B, N, hidden) tokens -> (B, N, 4) boxes (x0, y0, x1, y1), image fractions inside [0, 1]."""
        h = self.fc(patch_tokens)
        delta = torch.cat([torch.tanh(self.f1(h)), torch.tanh(self.f2(h))], -1)
        size = torch.cat([F.relu(torch.tanh(self.f3(h))), F.relu(torch.tanh(self.f4(h)))], -1)
        centre = (self.fixed_centres.to(h.dtype) + delta).clamp(0.0, 1.0)
        a = (centre - size / 2).clamp(0.0, 1.0)
        b = (centre + size / 2).clamp(0.0, 1.0)
        return torch.cat([a, b], -1)

    def sample_points(self, boxes: torch.Tensor) -> torch.Tensor:
        """(B, N, 4) boxes -> (B, N, m*m, 2) sample points (x, y) in image fractions, uniform inside each box."""
        a, b = boxes[..., None, None, :2], boxes[..., None, None, 2:]
        points = a + self.sample_layout.to(boxes.dtype) * (b - a)  # (B, N, m, m, 2)
        return points.flatten(2, 3)

    def sample_features(self, points: torch.Tensor, patch_tokens: torch.Tensor,
                        images: torch.Tensor | None) -> torch.Tensor:
        """Bilinear samples at ``points`` from the chosen feature maps: (B, N, m*m * channels)."""
        bsz, n, k, _ = points.shape
        grid = points * 2.0 - 1.0  # image fractions -> grid_sample's [-1, 1] (align_corners=False)
        maps = []
        if "tokens" in self.feature_source:
            g = self.grid_size
            maps.append(patch_tokens.transpose(1, 2).reshape(bsz, -1, g, g))
        if "pixels" in self.feature_source:
            if images is None:
                raise InputError("This AdaPatch head samples the image itself: pass the encoder's pixel input.")
            side = self.grid_size * self.num_samples
            if images.shape[-1] > side or images.shape[-2] > side:
                images = F.adaptive_avg_pool2d(images, (side, side))
            maps.append(images.to(patch_tokens.dtype))
        samples = [F.grid_sample(m, grid.to(m.dtype), mode="bilinear", padding_mode="border", align_corners=False)
                   for m in maps]  # each (B, C, N, m*m)
        features = torch.cat(samples, 1).permute(0, 2, 3, 1)  # (B, N, m*m, C)
        return features.reshape(bsz, n, -1)

    def forward(self, patch_tokens: torch.Tensor, images: torch.Tensor | None = None) -> AdaPatchOutput:
        """Adaptive patch embeddings of a ViT's patch tokens.

        Args:
            patch_tokens: (B, N, hidden) last-layer patch tokens of P_X (CLS excluded), N = grid_size**2.
            images: (B, C, H, W) the pixels P_X saw (needed when ``feature_source`` samples pixels).
        """
        if patch_tokens.ndim != 3 or patch_tokens.shape[1] != self.num_patches:
            raise InputError(f"AdaPatch expects (batch, {self.num_patches}, hidden) patch tokens for a "
                             f"{self.grid_size}x{self.grid_size} grid, got {tuple(patch_tokens.shape)}.")
        boxes = self.predict_boxes(patch_tokens)
        features = self.sample_features(self.sample_points(boxes), patch_tokens, images)
        z = self.f5(features) + self.position_embedding.to(features.dtype)
        z = self.encoder(z)
        embeddings = self.projection(self.norm(z))
        centres = self.fixed_centres.to(boxes.dtype).expand(boxes.shape[0], -1, -1)
        return AdaPatchOutput(embeddings=embeddings, boxes=boxes, centres=centres)


def adapatch_config(vision_config: dict, projection_dim: int, **overrides: Any) -> dict[str, Any]:
    """AdaPatch constructor kwargs matching a CLIP vision config (grid, width and heads of P_X)."""
    image_size, patch_size = vision_config.get("image_size", 224), vision_config.get("patch_size", 32)
    config = dict(grid_size=image_size // patch_size, hidden_size=vision_config.get("hidden_size", 768),
                  projection_dim=projection_dim, num_heads=vision_config.get("num_attention_heads", 12),
                  image_channels=1)
    config.update(overrides)
    return config


def vit_patch_tokens(prompt_encoder, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, Any]:
    """Run P_X once: images (B,1,H,W) in [0,1] -> (pixels in [-1,1], post-LN patch tokens (B,N,hidden), raw output)."""
    pixels = prompt_encoder.prepare_images(images).to(prompt_encoder.dtype)
    out = prompt_encoder.image_encoder(pixel_values=pixels)
    tokens = prompt_encoder.image_encoder.vision_model.post_layernorm(out.last_hidden_state[:, 1:])
    return pixels, tokens, out


def encode_adaptive_patches(prompt_encoder, images: torch.Tensor) -> AdaPatchOutput:
    """Adaptive patches of X-rays through a prompt encoder that carries an AdaPatch head (``.adapatch``).

    Args:
        prompt_encoder: a ``PromptEncoder`` (or anything with ``prepare_images``, ``image_encoder`` and
            ``adapatch``).
        images: (B, 1, H, W) in [0, 1].
    """
    head = getattr(prompt_encoder, "adapatch", None)
    if head is None:
        raise InputError("This model has no AdaPatch head (prompt_encoder.adapatch is None): train stage 1 with "
                         "AdaPatch enabled, or use the fixed ViT patches.")
    pixels, tokens, _ = vit_patch_tokens(prompt_encoder, images)
    return head(tokens, pixels)


# ---------------------------------------------------------------------------------- patch-word alignment
def content_word_mask(input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                      special_ids: Iterable[int | None]) -> torch.Tensor:
    """(B, K) mask of the word tokens that take part in Eq. 5-6: not padding, not [CLS]/[SEP]/other specials."""
    mask = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
    for token_id in {i for i in special_ids if i is not None}:
        mask = mask & (input_ids != token_id)
    return mask


def special_token_ids(prompt_encoder) -> tuple[int, ...]:
    """The pad/bos/eos ids of P_R's config (the report tokenizer's [PAD], [CLS], [SEP])."""
    cfg = prompt_encoder.text_encoder.config
    return tuple(i for i in (cfg.pad_token_id, cfg.bos_token_id, cfg.eos_token_id) if i is not None)


def patch_word_similarity(patch_emb: torch.Tensor, word_emb: torch.Tensor, word_mask: torch.Tensor | None = None,
                          normalize: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Image-to-report and report-to-image similarities of every image/report pair (AdaMatch Eq. 5-6).

    s^I[i, j] = 1/N sum_n max_k <z_n^I, z_k^T>   (each patch's best word, averaged over the N patches)
    s^T[i, j] = 1/K_j sum_k max_n <z_n^I, z_k^T>  (each word's best patch, averaged over the K_j real words)

    Masked tokens (padding, and the special tokens excluded by :func:`content_word_mask`) are never a
    patch's best word and are left out of the average over words.

    Args:
        patch_emb: (B_i, N, d) adaptive patch embeddings of B_i images.
        word_emb: (B_t, K, d) word embeddings of B_t reports.
        word_mask: (B_t, K), true/1 for the words to use; None uses every token.
        normalize: L2-normalise both sides first (cosine similarity, as CL_XR does); False uses raw dot products.

    Returns:
        (s_I, s_T), both (B_i, B_t): row i is image i, column j is report j.
    """
    if patch_emb.ndim != 3 or word_emb.ndim != 3 or patch_emb.shape[-1] != word_emb.shape[-1]:
        raise InputError(f"patch_word_similarity needs (B_i, N, d) patches and (B_t, K, d) words, got "
                         f"{tuple(patch_emb.shape)} and {tuple(word_emb.shape)}.")
    if word_mask is None:
        word_mask = torch.ones(word_emb.shape[:2], dtype=torch.bool, device=word_emb.device)
    word_mask = word_mask.bool()
    counts = word_mask.sum(-1)
    if bool((counts == 0).any()):
        raise InputError("A report has no word tokens left after masking padding and special tokens.")
    if normalize:
        patch_emb, word_emb = F.normalize(patch_emb, dim=-1), F.normalize(word_emb, dim=-1)
    sim = torch.einsum("ind,jkd->ijnk", patch_emb, word_emb)  # (B_i, B_t, N, K)
    mask = word_mask[None, :, None, :]
    s_image = sim.masked_fill(~mask, float("-inf")).amax(-1).mean(-1)
    best_patch = sim.amax(2)  # (B_i, B_t, K)
    s_text = (best_patch * word_mask[None].to(sim.dtype)).sum(-1) / counts[None].to(sim.dtype)
    return s_image, s_text


def patch_word_loss(patch_emb: torch.Tensor, word_emb: torch.Tensor, word_mask: torch.Tensor | None,
                    logit_scale: torch.Tensor | float, normalize: bool = True) -> torch.Tensor:
    """The adaptive patch-word contrastive loss of a batch of b paired images and reports (Eq. 7-9).

    L^I2T_i = -1/b log softmax_j(s^I[i, j] / tau)[i]       (image i against every report j, Eq. 7)
    L^T2I_i = -1/b log softmax_j(s^T[j, i] / tau)[i]       (report i against every image j, Eq. 8)
    L = 1/2 sum_i (L^I2T_i + L^T2I_i)                        (Eq. 9)

    Normalisation, as written in the paper: the 1/b inside each term and the sum over i make each direction
    a batch-mean cross-entropy, and the 1/2 averages the two directions. (CL_XR in ``losses.info_nce`` sums
    its two directions instead, so this loss is half as large as an info_nce of the same logits.)

    Args:
        patch_emb: (b, N, d) adaptive patch embeddings; row i pairs with report i.
        word_emb: (b, K, d) word embeddings; word_mask: (b, K) words to use (see :func:`content_word_mask`).
        logit_scale: 1/tau (a float, or the prompt encoder's ``logit_scale.exp()``).
    """
    if patch_emb.shape[0] != word_emb.shape[0]:
        raise InputError(f"patch_word_loss needs as many images as reports, got {patch_emb.shape[0]} and "
                         f"{word_emb.shape[0]}.")
    s_image, s_text = patch_word_similarity(patch_emb, word_emb, word_mask, normalize=normalize)
    target = torch.arange(patch_emb.shape[0], device=patch_emb.device)
    return 0.5 * (F.cross_entropy(logit_scale * s_image, target) + F.cross_entropy(logit_scale * s_text.t(), target))


def adamatch_loss(prompt_encoder, images: torch.Tensor, input_ids: torch.Tensor,
                  attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Stage-1 AdaMatch term: Eq. 9 between the adaptive patches of ``images`` and the words of their reports.

    Uses the prompt encoder's learnable temperature (``logit_scale``, clamped at 100 like CL_XR).
    """
    patches = encode_adaptive_patches(prompt_encoder, images).embeddings
    words = prompt_encoder.encode_text(input_ids, attention_mask).tokens
    mask = content_word_mask(input_ids, attention_mask, special_token_ids(prompt_encoder))
    return patch_word_loss(patches, words, mask, prompt_encoder.logit_scale.exp().clamp(max=100.0))
