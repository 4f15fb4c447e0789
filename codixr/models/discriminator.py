"""The patch discriminator that sharpens the X-ray autoencoder's decoder (training only; not part of a package).

L1 (and an edge term) alone teach a decoder the mean of what a latent could have been: a blur. Latent-diffusion
autoencoders add an adversarial term from a PatchGAN discriminator (Isola et al., 2017; Esser et al., 2021)
that scores overlapping patches of an image as real or reconstructed, so the decoder is pushed to draw the
texture and edges real radiographs have. We use it to fine-tune only the decoder of an existing X-ray
autoencoder (``training.stage2_vae --decoder-only``), which keeps the latent space every UNet was trained on.

GroupNorm instead of BatchNorm: the CPU recipe trains on batches of a few crops.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin


class PatchDiscriminator(ModelMixin, ConfigMixin):
    """(B, C, H, W) images in [-1, 1] -> (B, 1, h, w) logits, one per overlapping patch.

    Args:
        in_channels: image channels (1 for radiographs).
        base_channels: width of the first convolution; each strided layer doubles it (up to 8x).
        num_layers: strided 4x4 convolutions after the first; the receptive field is 70 px at 3.
        norm_groups: GroupNorm groups of the inner layers.
    """

    @register_to_config
    def __init__(self, in_channels: int = 1, base_channels: int = 32, num_layers: int = 3, norm_groups: int = 8):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, base_channels, 4, 2, 1), nn.LeakyReLU(0.2)]
        width = base_channels
        for i in range(1, num_layers + 1):
            out = base_channels * min(2 ** i, 8)
            stride = 2 if i < num_layers else 1
            layers += [nn.Conv2d(width, out, 4, stride, 1, bias=False), nn.GroupNorm(norm_groups, out), nn.LeakyReLU(0.2)]
            width = out
        layers.append(nn.Conv2d(width, 1, 4, 1, 1))
        self.layers = nn.Sequential(*layers)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.layers(images)
