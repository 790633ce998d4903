"""Baseline: MONAI SwinUNETR (the improved variant with both switches off, so the two share one code path)."""

from __future__ import annotations

from .registry import register_architecture
from .swin_unetr_msf_aa import SwinUNETRMSFAA


@register_architecture("swin_unetr", "SwinUNETR (MONAI), Swin transformer encoder + conv decoder")
def build_swin_unetr(in_channels: int, num_classes: int, num_lesion_classes: int, **arch_args):
    return SwinUNETRMSFAA(in_channels, num_classes, num_lesion_classes, multiscale_fusion=False,
                          adaptive_attention=False, **arch_args)
