"""UNETR (MONAI layout) with gated skip connections: attention gates or MASAG.

Skips in UNETR naming: ``enc1`` (full resolution, conv on the input), ``enc2`` (1/2, from ViT layer L/4),
``enc3`` (1/4), ``enc4`` (1/8); decoder outputs ``dec3`` (1/8), ``dec2`` (1/4), ``dec1`` (1/2).

- ``version=1``: ``enc2`` is gated by ``dec2`` before ``decoder3`` (a plain attention gate, ``x · a``).
- ``version=2``: ``enc2`` gated by ``dec2`` and ``enc1`` by ``dec1``, with residual gating
  ``x · (1 + γ·a)``, γ = 0 at init: the untrained v2 network computes exactly what plain UNETR computes.
- ``gate="masag"``: the same skips go through :class:`~.blocks.MASAG` instead (version picks the skips).
- ``gate=None``: plain UNETR (the ``unetr`` baseline).

Unlike MONAI's ``UNETR`` the ViT accepts any input size that is a multiple of 16 (see ``ViTEncoder3D``).
"""

from __future__ import annotations

import torch
import torch.nn as nn
from monai.networks.blocks import UnetOutBlock, UnetrBasicBlock, UnetrPrUpBlock, UnetrUpBlock

from .blocks import MASAG, AttentionGate, ViTEncoder3D, init_lesion_prior
from .registry import register_architecture


class GatedUNETR(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, num_lesion_classes: int, feature_size: int = 16,
                 hidden_size: int = 192, num_layers: int = 8, num_heads: int = 6, mlp_dim: int = 768,
                 img_size: int = 96, norm_name: str = "instance", dropout: float = 0.0,
                 gate: str | None = "ag", version: int = 2):
        super().__init__()
        if gate not in (None, "ag", "masag"):
            raise ValueError(f"gate must be None, 'ag' or 'masag', not {gate!r}")
        if version not in (1, 2):
            raise ValueError(f"version must be 1 or 2, not {version!r}")
        fs, h = feature_size, hidden_size
        self.num_classes = num_classes
        self.size_divisor = 16
        self.vit = ViTEncoder3D(in_channels, 16, h, num_layers, num_heads, mlp_dim, img_size, dropout)
        # Skip taps at 1/4, 1/2, 3/4 depth (hidden[3], [6], [9] of 12 layers, as MONAI UNETR; 8 by default here to keep
        # the model small).
        self.taps = (num_layers // 4, num_layers // 2, 3 * num_layers // 4)
        up = dict(spatial_dims=3, kernel_size=3, upsample_kernel_size=2, norm_name=norm_name, res_block=True)
        self.encoder1 = UnetrBasicBlock(3, in_channels, fs, kernel_size=3, stride=1, norm_name=norm_name,
                                        res_block=True)
        self.encoder2 = UnetrPrUpBlock(in_channels=h, out_channels=2 * fs, num_layer=2, stride=1, conv_block=True, **up)
        self.encoder3 = UnetrPrUpBlock(in_channels=h, out_channels=4 * fs, num_layer=1, stride=1, conv_block=True, **up)
        self.encoder4 = UnetrPrUpBlock(in_channels=h, out_channels=8 * fs, num_layer=0, stride=1, conv_block=True, **up)
        self.decoder5 = UnetrUpBlock(in_channels=h, out_channels=8 * fs, **up)
        self.decoder4 = UnetrUpBlock(in_channels=8 * fs, out_channels=4 * fs, **up)
        self.decoder3 = UnetrUpBlock(in_channels=4 * fs, out_channels=2 * fs, **up)
        self.decoder2 = UnetrUpBlock(in_channels=2 * fs, out_channels=fs, **up)
        self.out = UnetOutBlock(3, fs, num_classes + num_lesion_classes)
        init_lesion_prior(self.out, num_classes)
        self.gate2 = self.gate1 = None
        if gate == "ag":
            self.gate2 = AttentionGate(2 * fs, 4 * fs, residual=version == 2)
            if version == 2:
                self.gate1 = AttentionGate(fs, 2 * fs, residual=True)
        elif gate == "masag":
            self.gate2 = MASAG(2 * fs, 4 * fs)
            if version == 2:
                self.gate1 = MASAG(fs, 2 * fs)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        tokens, hidden, grid = self.vit(x)
        to_map = self.vit.to_map
        enc1 = self.encoder1(x)
        enc2 = self.encoder2(to_map(hidden[self.taps[0]], grid))
        enc3 = self.encoder3(to_map(hidden[self.taps[1]], grid))
        enc4 = self.encoder4(to_map(hidden[self.taps[2]], grid))
        dec3 = self.decoder5(to_map(tokens, grid), enc4)
        dec2 = self.decoder4(dec3, enc3)
        if self.gate2 is not None:
            enc2 = self.gate2(enc2, dec2)
        dec1 = self.decoder3(dec2, enc2)
        if self.gate1 is not None:
            enc1 = self.gate1(enc1, dec1)
        logits = self.out(self.decoder2(dec1, enc1))
        return {"seg": logits[:, : self.num_classes], "lesion": logits[:, self.num_classes :]}


@register_architecture("unetr_ag", "UNETR with attention-gated skips (v1: enc2; v2: enc1+enc2, residual gates)")
def build_unetr_ag(in_channels: int, num_classes: int, num_lesion_classes: int, **arch_args):
    arch_args.setdefault("gate", "ag")
    return GatedUNETR(in_channels, num_classes, num_lesion_classes, **arch_args)
