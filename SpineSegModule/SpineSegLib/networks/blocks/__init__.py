"""Reusable network parts (one file per block). Networks import what they need from here."""

from .adaptive_attention import AdaptiveWindowAttention, use_adaptive_attention
from .attention_gate import AttentionGate
from .centernet_head import CenterNetHead, init_lesion_prior
from .domain_modulation import DomainConditioner, DomainModulation
from .masag import MASAG
from .multiscale_fusion import MultiScaleFusion
from .roi_align3d import RoIAlign3d, boxes_from_mask, roi_align3d
from .unet_parts import ConvEncoder, UpStage
from .vit_encoder import ViTEncoder3D

__all__ = [
    "AdaptiveWindowAttention",
    "AttentionGate",
    "CenterNetHead",
    "ConvEncoder",
    "DomainConditioner",
    "DomainModulation",
    "MASAG",
    "MultiScaleFusion",
    "RoIAlign3d",
    "UpStage",
    "ViTEncoder3D",
    "boxes_from_mask",
    "init_lesion_prior",
    "roi_align3d",
    "use_adaptive_attention",
]
