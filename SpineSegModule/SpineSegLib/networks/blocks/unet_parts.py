"""Convolutional encoder and decoder stage shared by the U-Net style baselines (cnn3d, unet_masag, …).

Built from MONAI's ``UnetBasicBlock`` (conv-norm-LeakyReLU ×2). A decoder stage upsamples by a transposed
convolution, optionally passes the skip through a gate (any ``gate(skip, upsampled)`` module, e.g. MASAG or
an attention gate), concatenates, and convolves. ``skip_channels=0`` gives a stage without skip (plain CNN).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
from monai.networks.blocks import UnetBasicBlock


def conv_block(in_channels: int, out_channels: int, stride: int = 1, norm: str = "instance") -> UnetBasicBlock:
    return UnetBasicBlock(3, in_channels, out_channels, kernel_size=3, stride=stride, norm_name=norm)


class ConvEncoder(nn.Module):
    """Stage 0 at full resolution, each later stage halves the size; returns every stage's output."""

    def __init__(self, in_channels: int, channels: Sequence[int], norm: str = "instance"):
        super().__init__()
        ins = [in_channels, *channels[:-1]]
        self.stages = nn.ModuleList(
            conv_block(i, o, stride=1 if s == 0 else 2, norm=norm)
            for s, (i, o) in enumerate(zip(ins, channels, strict=True))
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features


class UpStage(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, skip_channels: int, gate: nn.Module | None = None,
                 norm: str = "instance"):
        super().__init__()
        self.up = nn.ConvTranspose3d(in_channels, out_channels, 2, stride=2, bias=False)
        self.gate = gate
        self.conv = conv_block(out_channels + skip_channels, out_channels, norm=norm)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        x = self.up(x)
        if skip is not None:
            if self.gate is not None:
                skip = self.gate(skip, x)
            x = torch.cat([x, skip], dim=1)
        return self.conv(x)
