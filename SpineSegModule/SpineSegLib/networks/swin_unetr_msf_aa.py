"""Improved SwinUNETR: multi-scale convolution fusion on the skips and adaptive attention in the Swin windows.

``multiscale_fusion``: a :class:`~.blocks.MultiScaleFusion` on the skips at 1/2, 1/4 and 1/8 resolution (the
ones built from Swin stages, which have only window-sized context; full resolution is left alone for cost).
``adaptive_attention``: every Swin window attention becomes :class:`~.blocks.AdaptiveWindowAttention`.
Both off gives exactly MONAI's SwinUNETR (same modules and parameter names as ``swin_unetr``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
from monai.networks.nets import SwinUNETR

from .blocks import MultiScaleFusion, init_lesion_prior, use_adaptive_attention
from .registry import register_architecture


class SwinUNETRMSFAA(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, num_lesion_classes: int, feature_size: int = 12,
                 depths: Sequence[int] = (2, 2, 2, 2), num_heads: Sequence[int] = (3, 6, 12, 24),
                 window_size: int = 7, norm_name: str = "instance", dropout_path_rate: float = 0.0,
                 multiscale_fusion: bool = True, adaptive_attention: bool = True,
                 fusion_branches: Sequence[tuple[int, int]] = ((1, 1), (3, 1), (3, 2), (3, 4))):
        super().__init__()
        self.num_classes = num_classes
        self.size_divisor = 32  # patch size 2, then four 2× patch mergings
        # One output conv for both heads, as in SplitHeads: seg and lesion share the decoder.
        self.net = SwinUNETR(in_channels, num_classes + num_lesion_classes, depths=depths, num_heads=num_heads,
                             window_size=window_size, feature_size=feature_size, norm_name=norm_name,
                             dropout_path_rate=dropout_path_rate)
        init_lesion_prior(self.net.out, num_classes)
        if adaptive_attention:
            use_adaptive_attention(self.net.swinViT)
        if multiscale_fusion:
            self.fusion = nn.ModuleList(MultiScaleFusion(c * feature_size, fusion_branches) for c in (1, 2, 4))
        else:
            self.fusion = None

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        n = self.net
        n._check_input_size(x.shape[2:])
        hidden = n.swinViT(x, n.normalize)
        enc0 = n.encoder1(x)
        skips = [n.encoder2(hidden[0]), n.encoder3(hidden[1]), n.encoder4(hidden[2])]
        if self.fusion is not None:
            skips = [fuse(s) for fuse, s in zip(self.fusion, skips, strict=True)]
        enc1, enc2, enc3 = skips
        dec3 = n.decoder5(n.encoder10(hidden[4]), hidden[3])
        dec2 = n.decoder4(dec3, enc3)
        dec1 = n.decoder3(dec2, enc2)
        dec0 = n.decoder2(dec1, enc1)
        logits = n.out(n.decoder1(dec0, enc0))
        return {"seg": logits[:, : self.num_classes], "lesion": logits[:, self.num_classes :]}


@register_architecture("swin_unetr_msf_aa", "SwinUNETR + multi-scale conv fusion on skips + adaptive window attention")
def build_swin_unetr_msf_aa(in_channels: int, num_classes: int, num_lesion_classes: int, **arch_args):
    return SwinUNETRMSFAA(in_channels, num_classes, num_lesion_classes, **arch_args)
