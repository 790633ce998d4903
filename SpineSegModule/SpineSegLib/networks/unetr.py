"""Baseline: UNETR (ViT encoder, conv decoder; MONAI blocks), i.e. ``unetr_ag`` without gates."""

from __future__ import annotations

from .registry import register_architecture
from .unetr_ag import GatedUNETR


@register_architecture("unetr", "UNETR: ViT encoder (patch 16) + conv decoder with skips")
def build_unetr(in_channels: int, num_classes: int, num_lesion_classes: int, **arch_args):
    return GatedUNETR(in_channels, num_classes, num_lesion_classes, gate=None, **arch_args)
