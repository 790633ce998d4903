"""3D MASAG: multi-scale adaptive spatial attention gate (after MSA²Net, Kolahi et al. 2024), for skips.

Inputs: ``x`` the encoder skip, ``g`` the decoder feature at the same stage (resized and projected to ``x``'s
shape when needed). Steps, as in the 2D original:

1. multi-scale context: local context of ``x`` (3³ depthwise conv, then 3³ depthwise conv with dilation 2:
   a 7³ field at depthwise cost) + global context of ``g`` (channel-wise mean and max maps → 1×1 conv);
2. spatial selection: a 1×1 conv gives two maps, softmax over the two picks, per voxel, how much of ``x`` vs
   ``g`` to emphasise; residuals keep both: ``X' = x + A·x``, ``G' = g + B·g`` (A + B = 1);
3. cross-modulation: ``X'' = X'·σ(G')``, ``G'' = G'·σ(X')``;
4. recalibration: ``x · σ(norm(conv1×1(X''·G'')))`` then a 1×1 conv + norm.
The output has ``x``'s shape, so it drops into any skip connection.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def _norm(channels: int) -> nn.Module:
    # Instance norm: 3D batches are tiny (1–2 crops), so batch statistics would be noise.
    return nn.InstanceNorm3d(channels, affine=True)


class MASAG(nn.Module):
    def __init__(self, x_channels: int, g_channels: int | None = None):
        super().__init__()
        c = x_channels
        g_channels = g_channels or c
        # The selection mixes x and g element-wise, so g must have x's channel count.
        self.align_g = nn.Conv3d(g_channels, c, 1) if g_channels != c else nn.Identity()
        # Convolutions feeding an instance norm carry no bias: the normalisation removes it (and its gradient).
        self.local = nn.Sequential(
            nn.Conv3d(c, c, 3, padding=1, groups=c, bias=False), _norm(c), nn.ReLU(inplace=True),
            nn.Conv3d(c, c, 3, padding=2, dilation=2, groups=c, bias=False), _norm(c), nn.ReLU(inplace=True),
            nn.Conv3d(c, c, 1, bias=False), _norm(c),
        )
        self.global_proj = nn.Sequential(nn.Conv3d(2, 1, 1, bias=False), _norm(1))
        self.fuse_norm = _norm(c)
        self.selection = nn.Conv3d(c, 2, 1)
        self.recalibrate = nn.Sequential(nn.Conv3d(c, c, 1, bias=False), _norm(c))
        self.out = nn.Sequential(nn.Conv3d(c, c, 1, bias=False), _norm(c))

    def align(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        g = self.align_g(g)
        if g.shape[2:] != x.shape[2:]:
            g = F.interpolate(g, size=x.shape[2:], mode="trilinear", align_corners=False)
        return g

    def global_context(self, g: torch.Tensor) -> torch.Tensor:
        return self.global_proj(torch.cat([g.mean(1, keepdim=True), g.amax(1, keepdim=True)], dim=1))

    def select(self, x: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Two-way spatial selection with residuals: returns ``(X', G', weights)``, weights (B, 2, …) sum to 1."""
        fused = self.fuse_norm(self.local(x) + self.global_context(g))
        weights = torch.softmax(self.selection(fused), dim=1)
        return x + weights[:, :1] * x, g + weights[:, 1:] * g, weights

    def forward(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        g = self.align(x, g)
        x_sel, g_sel, _ = self.select(x, g)
        interaction = (x_sel * torch.sigmoid(g_sel)) * (g_sel * torch.sigmoid(x_sel))
        attention = torch.sigmoid(self.recalibrate(interaction))
        return self.out(attention * x)
