"""Baseline: plain 3D encoder-decoder CNN without skip connections (what the skips of a U-Net buy)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
from monai.networks.blocks import UnetOutBlock

from .blocks import ConvEncoder, UpStage, init_lesion_prior
from .registry import register_architecture


class PlainCNN3D(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, num_lesion_classes: int,
                 channels: Sequence[int] = (16, 32, 64, 128, 192), norm: str = "instance"):
        super().__init__()
        channels = tuple(channels)
        self.num_classes = num_classes
        self.size_divisor = 2 ** (len(channels) - 1)
        self.encoder = ConvEncoder(in_channels, channels, norm)
        self.decoder = nn.Sequential(
            *(UpStage(channels[i + 1], channels[i], 0, norm=norm) for i in reversed(range(len(channels) - 1)))
        )
        self.out = UnetOutBlock(3, channels[0], num_classes + num_lesion_classes)
        init_lesion_prior(self.out, num_classes)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = self.out(self.decoder(self.encoder(x)[-1]))
        return {"seg": logits[:, : self.num_classes], "lesion": logits[:, self.num_classes :]}


@register_architecture("cnn3d", "Plain 3D encoder-decoder CNN, no skip connections")
def build_cnn3d(in_channels: int, num_classes: int, num_lesion_classes: int, **arch_args):
    return PlainCNN3D(in_channels, num_classes, num_lesion_classes, **arch_args)
