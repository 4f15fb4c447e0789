"""Prompt encoders P (paper Sec. III.A, Fig. 2a).

P_X is one ViT image encoder shared by the frontal and lateral views; P_R is a masked
self-attention text transformer limited to 77 tokens. Both are CLIP towers from transformers
(``CLIPVisionModelWithProjection`` with one input channel, ``CLIPTextModelWithProjection``) whose
projection heads map into one shared space, aligned by the symmetric InfoNCE loss CL_XR.

Beyond the paper (EMIXER-style label conditioning), a label encoder maps a multi-hot vector over
``CONDITION_LABELS`` into the same space, so diagnosis labels can condition generation.
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
from transformers import (
    CLIPTextConfig,
    CLIPTextModelWithProjection,
    CLIPVisionConfig,
    CLIPVisionModelWithProjection,
)

from codixr.modality import CONDITION_LABELS
from codixr.models.adapatch import AdaPatch, vit_patch_tokens
from codixr.models.losses import info_nce

logger = logging.getLogger(__name__)

MAX_REPORT_TOKENS = 77  # the paper's (and CLIP's) text-encoder limit


@dataclass
class PromptEmbedding:
    """Output of a prompt encoder.

    Attributes:
        pooled: (batch, projection_dim) L2-normalised embedding h in the shared space.
        tokens: (batch, seq, projection_dim) per-patch (images, CLS excluded) or per-word (reports)
            embeddings projected into the same space (used by keypatch matching).
        mask: (batch, seq) 1 where ``tokens`` is a real token (padding is 0); None for images.
        boxes: (batch, seq, 4) adaptive patch boxes (x0, y0, x1, y1) as image fractions when P_X has an
            AdaPatch head; None otherwise (``tokens`` are then the fixed ViT patches).
    """

    pooled: torch.Tensor
    tokens: torch.Tensor
    mask: torch.Tensor | None = None
    boxes: torch.Tensor | None = None


class PromptEncoder(ModelMixin, ConfigMixin):
    """The prompt encoders P_X (images) and P_R (reports) plus the label encoder, in one shared space.

    Args:
        vision_config: kwargs of ``transformers.CLIPVisionConfig`` for P_X (``num_channels`` is forced to 1).
        text_config: kwargs of ``transformers.CLIPTextConfig`` for P_R (``max_position_embeddings`` 77).
        projection_dim: width of the shared space.
        num_labels: size of the multi-hot label vector (``len(CONDITION_LABELS)``).
        logit_scale_init: initial 1/tau, stored as log like CLIP (learnable temperature).
        adapatch_config: kwargs of ``AdaPatch`` (AdaMatch Eq. 1-4) for adaptive patch tokens; None keeps the
            fixed ViT patches.
    """

    config_name = "config.json"

    @register_to_config
    def __init__(
        self,
        vision_config: dict | None = None,
        text_config: dict | None = None,
        projection_dim: int = 256,
        num_labels: int = len(CONDITION_LABELS),
        logit_scale_init: float = 1 / 0.07,
        adapatch_config: dict | None = None,
    ):
        super().__init__()
        vision_kwargs = dict(vision_config or {})
        vision_kwargs["num_channels"] = 1
        vision_kwargs["projection_dim"] = projection_dim
        text_kwargs = dict(text_config or {})
        text_kwargs.setdefault("max_position_embeddings", MAX_REPORT_TOKENS)
        text_kwargs["projection_dim"] = projection_dim
        # P_X: one ViT for both views.
        self.image_encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(**vision_kwargs))
        # P_R: masked (causal) self-attention transformer, pooled at the end-of-text token.
        self.text_encoder = CLIPTextModelWithProjection(CLIPTextConfig(**text_kwargs))
        # Label encoder: multi-hot over CONDITION_LABELS -> shared space.
        self.label_encoder = nn.Sequential(
            nn.Linear(num_labels, projection_dim), nn.GELU(), nn.Linear(projection_dim, projection_dim)
        )
        self.logit_scale = nn.Parameter(torch.tensor(math.log(logit_scale_init)))
        # AdaPatch head (AdaMatch): adaptive patches for patch-word matching and keypatch overlays.
        self.adapatch = AdaPatch(**adapatch_config) if adapatch_config else None

    # ------------------------------------------------------------------ properties
    @property
    def image_size(self) -> int:
        return self.image_encoder.config.image_size

    @property
    def max_text_tokens(self) -> int:
        return self.text_encoder.config.max_position_embeddings

    @property
    def projection_dim(self) -> int:
        return self.config.projection_dim

    # ------------------------------------------------------------------ encoders
    def prepare_images(self, images: torch.Tensor) -> torch.Tensor:
        """(B,1,H,W) or (B,H,W) in [0,1] -> (B,1,S,S) in [-1,1] at the encoder's resolution."""
        if images.ndim == 3:
            images = images[:, None]
        if images.shape[-1] != self.image_size or images.shape[-2] != self.image_size:
            images = F.interpolate(images, size=(self.image_size, self.image_size), mode="bilinear",
                                   antialias=True, align_corners=False)
        return images * 2.0 - 1.0

    def encode_image(self, images: torch.Tensor) -> PromptEmbedding:
        """P_X: images (B,1,H,W) in [0,1] -> pooled h_X and patch tokens (adaptive ones with AdaPatch)."""
        pixels, patches, out = vit_patch_tokens(self, images)
        pooled = F.normalize(out.image_embeds, dim=-1)
        if self.adapatch is not None:
            ada = self.adapatch(patches, pixels)
            return PromptEmbedding(pooled=pooled, tokens=ada.embeddings, boxes=ada.boxes)
        return PromptEmbedding(pooled=pooled, tokens=self.image_encoder.visual_projection(patches))

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> PromptEmbedding:
        """P_R: token ids (B,T<=77) -> pooled h_R (at the end-of-text token) and word tokens."""
        if input_ids.shape[-1] > self.max_text_tokens:
            raise ValueError(
                f"report has {input_ids.shape[-1]} tokens; the text encoder takes at most {self.max_text_tokens}"
            )
        out = self.text_encoder(input_ids=input_ids, attention_mask=attention_mask)
        pooled = F.normalize(out.text_embeds, dim=-1)
        tokens = self.text_encoder.text_projection(out.last_hidden_state)
        return PromptEmbedding(pooled=pooled, tokens=tokens, mask=attention_mask)

    def encode_labels(self, multi_hot: torch.Tensor) -> PromptEmbedding:
        """Label encoder: (B, num_labels) multi-hot -> pooled embedding in the shared space."""
        pooled = F.normalize(self.label_encoder(multi_hot.to(self.dtype)), dim=-1)
        return PromptEmbedding(pooled=pooled, tokens=pooled[:, None])

    # ------------------------------------------------------------------ loss
    def contrastive_loss(self, h_a: torch.Tensor, h_b: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        """CL_AB = L_{A,B} + L_{B,A} (Eq. 1) with the learnable temperature tau = 1/exp(logit_scale)."""
        return info_nce(h_a, h_b, self.logit_scale.exp().clamp(max=100.0), targets)

    # ------------------------------------------------------------------ initialisation from CLIP
    @classmethod
    def from_clip(cls, pretrained_model_name_or_path: str, projection_dim: int | None = None, **hub_kwargs) -> "PromptEncoder":
        """Initialise P_X and P_R from a pretrained CLIP folder or hub id (e.g. ``openai/clip-vit-large-patch14``).

        The RGB patch embedding is summed over its three input channels to take one-channel X-rays.
        The text tokenizer of that CLIP must then be used with P_R. Label encoder starts fresh.
        """
        from transformers import CLIPModel

        clip = CLIPModel.from_pretrained(pretrained_model_name_or_path, **hub_kwargs)
        vision = clip.config.vision_config.to_dict()
        text = clip.config.text_config.to_dict()
        proj = projection_dim or clip.config.projection_dim
        keep = set(CLIPVisionConfig().to_dict()) | set(CLIPTextConfig().to_dict())
        model = cls(
            vision_config={k: v for k, v in vision.items() if k in keep},
            text_config={k: v for k, v in text.items() if k in keep},
            projection_dim=proj,
        )
        state = {}
        for key, value in clip.vision_model.state_dict().items():
            if key.endswith("patch_embedding.weight"):
                value = value.sum(dim=1, keepdim=True)
            state[f"image_encoder.vision_model.{key}"] = value
        for key, value in clip.text_model.state_dict().items():
            state[f"text_encoder.text_model.{key}"] = value
        if proj == clip.config.projection_dim:
            state["image_encoder.visual_projection.weight"] = clip.visual_projection.weight
            state["text_encoder.text_projection.weight"] = clip.text_projection.weight
            state["logit_scale"] = clip.logit_scale.data
        missing, unexpected = model.load_state_dict(state, strict=False)
        logger.info("initialised PromptEncoder from %s (%d tensors fresh)", pretrained_model_name_or_path, len(missing))
        return model
