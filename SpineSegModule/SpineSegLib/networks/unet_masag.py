"""U-Net whose skip connections pass through 3D MASAG gates (MSA²Net's multi-scale adaptive spatial attention).

At each decoder stage the encoder skip ``x`` is recalibrated by MASAG with the upsampled decoder feature as
``g`` before concatenation. ``masag=False`` gives the same U-Net with plain skips (for ablations).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
from monai.networks.blocks import UnetOutBlock

from .blocks import MASAG, ConvEncoder, UpStage, init_lesion_prior
from .registry import register_architecture


class MASAGUNet(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, num_lesion_classes: int,
                 channels: Sequence[int] = (16, 32, 64, 128, 192), norm: str = "instance", masag: bool = True):
        super().__init__()
        channels = tuple(channels)
        self.num_classes = num_classes
        self.size_divisor = 2 ** (len(channels) - 1)
        self.encoder = ConvEncoder(in_channels, channels, norm)
        self.decoder = nn.ModuleList(
            UpStage(channels[i + 1], channels[i], channels[i], MASAG(channels[i]) if masag else None, norm)
            for i in reversed(range(len(channels) - 1))
        )
        self.out = UnetOutBlock(3, channels[0], num_classes + num_lesion_classes)
        init_lesion_prior(self.out, num_classes)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        *skips, x = self.encoder(x)
        for stage, skip in zip(self.decoder, reversed(skips), strict=True):
            x = stage(x, skip)
        logits = self.out(x)
        return {"seg": logits[:, : self.num_classes], "lesion": logits[:, self.num_classes :]}


@register_architecture("unet_masag", "U-Net with 3D MASAG gates on the skip connections")
def build_unet_masag(in_channels: int, num_classes: int, num_lesion_classes: int, **arch_args):
    return MASAGUNet(in_channels, num_classes, num_lesion_classes, **arch_args)
