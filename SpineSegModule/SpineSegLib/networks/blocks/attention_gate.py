"""Additive attention gate (Oktay et al., Attention U-Net) for a skip connection, with an optional residual form.

The decoder feature ``g`` (coarser, more semantic) decides where the encoder skip ``x`` is relevant:
``a = σ(ψ(ReLU(θ(x) + φ(g))))``, one weight per voxel. ``g`` is projected at its own resolution, then
trilinearly resized to ``x`` (cheaper than resizing ``g`` itself, and works for any resolution ratio).

- ``residual=False``: ``x · a`` (the original gate; it halves the skip at initialisation, a ≈ 0.5).
- ``residual=True``: ``x · (1 + γ · a)`` with ``γ`` initialised to 0, so the untrained gate is exactly the
  identity and a network built from pretrained (ungated) weights behaves the same until γ is learned.
  The alternative "gate bias ≈ 2" (σ(2) ≈ 0.88) only approximates the identity, so γ = 0 was chosen.
  Consequence: at γ = 0 the gate's own convolutions receive zero gradient; they start learning once the
  first step has moved γ (γ itself always gets a gradient).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class AttentionGate(nn.Module):
    def __init__(self, x_channels: int, g_channels: int, inter_channels: int | None = None, residual: bool = False):
        super().__init__()
        inter = inter_channels or max(x_channels // 2, 1)
        self.theta_x = nn.Conv3d(x_channels, inter, 1, bias=False)
        self.phi_g = nn.Conv3d(g_channels, inter, 1)
        self.psi = nn.Conv3d(inter, 1, 1)
        self.residual = residual
        self.gamma = nn.Parameter(torch.zeros(1)) if residual else None

    def attention(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """(B, 1, *x.shape[2:]) gate in (0, 1)."""
        g = self.phi_g(g)
        if g.shape[2:] != x.shape[2:]:
            g = F.interpolate(g, size=x.shape[2:], mode="trilinear", align_corners=False)
        return torch.sigmoid(self.psi(F.relu(self.theta_x(x) + g)))

    def forward(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        a = self.attention(x, g)
        if self.residual:
            return x * (1 + self.gamma * a)
        return x * a
