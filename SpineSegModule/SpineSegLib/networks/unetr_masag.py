"""UNETR whose skips (enc1, enc2 by default) pass through MASAG gates: ``unetr_ag`` with ``gate="masag"``."""

from __future__ import annotations

from .registry import register_architecture
from .unetr_ag import GatedUNETR


@register_architecture("unetr_masag", "UNETR with MASAG multi-scale adaptive spatial attention gates on skips")
def build_unetr_masag(in_channels: int, num_classes: int, num_lesion_classes: int, **arch_args):
    arch_args.setdefault("version", 2)
    return GatedUNETR(in_channels, num_classes, num_lesion_classes, gate="masag", **arch_args)
