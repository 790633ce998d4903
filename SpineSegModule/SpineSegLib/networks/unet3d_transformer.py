"""Baseline: 3D U-Net with a transformer bottleneck (global context at the coarsest level, TransUNet-style).

The deepest feature map (1/16) is flattened into tokens and passed through MONAI ``TransformerBlock`` layers.
Positions are encoded by a depthwise 3³ convolution added to the map (a conditional positional encoding):
unlike a learned table it fits any input size, which sliding-window crops and the FLOP count need.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
from monai.networks.blocks import UnetOutBlock

from .blocks import ConvEncoder, UpStage, init_lesion_prior
from .blocks.vit_encoder import transformer_block
from .registry import register_architecture


class TransformerUNet(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, num_lesion_classes: int,
                 channels: Sequence[int] = (16, 32, 64, 128, 192), num_layers: int = 4, num_heads: int = 6,
                 mlp_ratio: float = 2.0, norm: str = "instance", dropout: float = 0.0):
        super().__init__()
        channels = tuple(channels)
        c = channels[-1]
        self.num_classes = num_classes
        self.size_divisor = 2 ** (len(channels) - 1)
        self.encoder = ConvEncoder(in_channels, channels, norm)
        self.pos_conv = nn.Conv3d(c, c, 3, padding=1, groups=c)
        self.transformer = nn.ModuleList(
            transformer_block(c, int(mlp_ratio * c), num_heads, dropout) for _ in range(num_layers)
        )
        self.norm = nn.LayerNorm(c)
        self.decoder = nn.ModuleList(
            UpStage(channels[i + 1], channels[i], channels[i], norm=norm) for i in reversed(range(len(channels) - 1))
        )
        self.out = UnetOutBlock(3, channels[0], num_classes + num_lesion_classes)
        init_lesion_prior(self.out, num_classes)

    def bottleneck(self, x: torch.Tensor) -> torch.Tensor:
        b, c, *grid = x.shape
        tokens = (x + self.pos_conv(x)).flatten(2).transpose(1, 2)
        for block in self.transformer:
            tokens = block(tokens)
        # Residual around the whole transformer: the conv features stay available to the decoder.
        return x + self.norm(tokens).transpose(1, 2).reshape(b, c, *grid)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        *skips, x = self.encoder(x)
        x = self.bottleneck(x)
        for stage, skip in zip(self.decoder, reversed(skips), strict=True):
            x = stage(x, skip)
        logits = self.out(x)
        return {"seg": logits[:, : self.num_classes], "lesion": logits[:, self.num_classes :]}


@register_architecture("unet3d_transformer", "3D U-Net with a transformer bottleneck at 1/16 resolution")
def build_unet3d_transformer(in_channels: int, num_classes: int, num_lesion_classes: int, **arch_args):
    return TransformerUNet(in_channels, num_classes, num_lesion_classes, **arch_args)
