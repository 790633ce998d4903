"""Vertebraformer: ViT encoder, multi-scale decoder, and heads for masks, vertebra identity, lesions and domain.

- Encoder: :class:`~.blocks.ViTEncoder3D` on 16³ patches with a learnable 3D positional embedding. Tokens of
  layers L/3 and 2L/3 and the final tokens become maps at 1/4, 1/8 and 1/16 (transposed convs upsample the
  1/16 token grid, as UNETR/ViTDet do); two conv stems on the input give the 1/2 and 1/1 skips.
- Decoder: four up-blocks ``Up(F) + Conv(skip)`` (MONAI ``UnetrUpBlock``) back to full resolution; heads
  ``"seg"`` (multi-class logits) and ``"mask"`` (1-channel vertebra-vs-rest logits).
- ``identification``: 3D RoIAlign of the 1/4 decoder feature over each vertebra box, then an MLP over
  ``num_id_classes`` (default ``num_classes - 1``: id ``j`` is seg class ``j + 1``, cranio-caudal). Runs when
  ``boxes`` are passed to ``forward``: per-image (N, 6) tensors or a (K, 7) tensor (see ``roi_align3d``) in
  training, or ``boxes="mask"`` to take one box per connected component of the predicted mask (then
  ``"id_boxes"`` holds the boxes). Output ``"id_logits"`` (K, num_id_classes), rows in box order.
- ``lesion_head``: CenterNet head: ``"lesion"`` heatmap logits, ``"offset"`` (3), ``"log_size"`` (3), all at
  full resolution (the engine's contract); off: a 1×1 conv gives ``"lesion"`` only.
- ``domain_modulation``: the three pyramid maps are modulated by the domain embedding ``e_d`` (channel and
  spatial weights); ``"domain_logits"`` (B, num_domains) and ``"domain_embedding"`` (B, domain_dim, for
  InfoNCE against ``model.domain.prototypes``). ``forward(x, domain=…)`` uses the given domain's prototype,
  ``domain=None`` the classifier-weighted mix of prototypes.
All three off: a plain UNETR-like ViT segmenter (``seg``, ``mask``, ``lesion``).
"""

from __future__ import annotations

import torch
import torch.nn as nn
from monai.networks.blocks import UnetOutBlock, UnetrBasicBlock, UnetrPrUpBlock, UnetrUpBlock

from .blocks import (
    CenterNetHead,
    DomainConditioner,
    DomainModulation,
    RoIAlign3d,
    ViTEncoder3D,
    boxes_from_mask,
    init_lesion_prior,
)
from .registry import register_architecture


class Vertebraformer(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, num_lesion_classes: int, feature_size: int = 16,
                 hidden_size: int = 192, num_layers: int = 8, num_heads: int = 6, mlp_dim: int = 768,
                 img_size: int = 96, norm_name: str = "instance", dropout: float = 0.0,
                 identification: bool = True, lesion_head: bool = True, domain_modulation: bool = True,
                 num_domains: int = 4, domain_dim: int = 32, num_id_classes: int | None = None, roi_size: int = 4,
                 id_hidden: int = 256, mask_threshold: float = 0.5, min_box_voxels: int = 8):
        super().__init__()
        fs, h = feature_size, hidden_size
        self.size_divisor = 16
        self.mask_threshold = mask_threshold
        self.min_box_voxels = min_box_voxels
        self.vit = ViTEncoder3D(in_channels, 16, h, num_layers, num_heads, mlp_dim, img_size, dropout)
        self.taps = (max(num_layers // 3 - 1, 0), max(2 * num_layers // 3 - 1, 0))
        block = dict(spatial_dims=3, kernel_size=3, norm_name=norm_name, res_block=True)
        self.neck16 = UnetrBasicBlock(in_channels=h, out_channels=8 * fs, stride=1, **block)
        self.neck8 = UnetrPrUpBlock(in_channels=h, out_channels=4 * fs, num_layer=0, stride=1, upsample_kernel_size=2,
                                    conv_block=True, **block)
        self.neck4 = UnetrPrUpBlock(in_channels=h, out_channels=2 * fs, num_layer=1, stride=1, upsample_kernel_size=2,
                                    conv_block=True, **block)
        self.stem2 = UnetrBasicBlock(in_channels=in_channels, out_channels=fs, stride=2, **block)
        self.stem1 = UnetrBasicBlock(in_channels=in_channels, out_channels=fs, stride=1, **block)
        self.up = nn.ModuleList(
            UnetrUpBlock(in_channels=i, out_channels=o, upsample_kernel_size=2, **block)
            for i, o in ((8 * fs, 4 * fs), (4 * fs, 2 * fs), (2 * fs, fs), (fs, fs))
        )
        self.seg_head = UnetOutBlock(3, fs, num_classes)
        self.mask_head = UnetOutBlock(3, fs, 1)
        if lesion_head:
            self.lesion_out = CenterNetHead(fs, num_lesion_classes)
        else:
            self.lesion_out = UnetOutBlock(3, fs, num_lesion_classes)
            init_lesion_prior(self.lesion_out)

        self.roi_align = self.id_classifier = None
        if identification:
            self.roi_align = RoIAlign3d(roi_size, sampling_ratio=2)
            self.id_classifier = nn.Sequential(
                nn.Flatten(), nn.Linear(2 * fs * roi_size**3, id_hidden), nn.ReLU(inplace=True),
                nn.Linear(id_hidden, num_id_classes or num_classes - 1),
            )
        self.domain = self.modulation = None
        if domain_modulation:
            self.domain = DomainConditioner(h, num_domains, domain_dim)
            self.modulation = nn.ModuleList(DomainModulation(c * fs, domain_dim) for c in (8, 4, 2))

    def forward(self, x: torch.Tensor, boxes=None, domain=None) -> dict:
        tokens, hidden, grid = self.vit(x)
        to_map = self.vit.to_map
        pyramid = [self.neck16(to_map(tokens, grid)), self.neck8(to_map(hidden[self.taps[1]], grid)),
                   self.neck4(to_map(hidden[self.taps[0]], grid))]
        out = {}
        if self.domain is not None:
            e, out["domain_logits"], out["domain_embedding"] = self.domain(tokens.mean(dim=1), domain)
            pyramid = [mod(p, e) for mod, p in zip(self.modulation, pyramid, strict=True)]
        p16, p8, p4 = pyramid
        d4 = self.up[1](self.up[0](p16, p8), p4)
        d1 = self.up[3](self.up[2](d4, self.stem2(x)), self.stem1(x))
        out["seg"] = self.seg_head(d1)
        out["mask"] = self.mask_head(d1)
        lesion = self.lesion_out(d1)
        out.update(lesion if isinstance(lesion, dict) else {"lesion": lesion})
        if self.id_classifier is not None and boxes is not None:
            if isinstance(boxes, str):
                if boxes != "mask":
                    raise ValueError(f"boxes must be tensors or 'mask', not {boxes!r}")
                boxes = out["id_boxes"] = boxes_from_mask(out["mask"], self.mask_threshold, self.min_box_voxels)
            out["id_logits"] = self.id_classifier(self.roi_align(d4, boxes, x.shape[2:]))
        return out


@register_architecture("vertebraformer", "ViT multi-task: seg + mask, RoIAlign vertebra ID, CenterNet lesions, domain")
def build_vertebraformer(in_channels: int, num_classes: int, num_lesion_classes: int, **arch_args):
    return Vertebraformer(in_channels, num_classes, num_lesion_classes, **arch_args)
