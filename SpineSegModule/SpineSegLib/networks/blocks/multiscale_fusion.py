"""Multi-scale convolution fusion: parallel 3D convolutions with different receptive fields, mixed by learned weights.

Vertebrae are large (bodies) and thin (processes, endplates) at once; one kernel size sees only one of these
scales. Each branch sees a different receptive field; the fusion is ``x + Σ_i softmax(w)_i · F_i(x)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn


class MultiScaleFusion(nn.Module):
    """``branches`` are ``(kernel_size, dilation)`` pairs; every branch keeps the channel count and spatial size.

    ``fusion_logits`` start at zero, so the branches start equally weighted (softmax of zeros) and training
    decides which scale matters. The residual keeps the incoming feature intact: the module adds multi-scale
    context rather than replacing the skip.
    """

    def __init__(self, channels: int, branches: Sequence[tuple[int, int]] = ((1, 1), (3, 1), (3, 2), (3, 4))):
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Sequential(
                nn.Conv3d(channels, channels, k, padding=d * (k // 2), dilation=d, bias=False),
                nn.InstanceNorm3d(channels, affine=True),
                nn.LeakyReLU(0.01, inplace=True),
            )
            for k, d in branches
        )
        self.fusion_logits = nn.Parameter(torch.zeros(len(self.branches)))

    def branch_weights(self) -> torch.Tensor:
        return torch.softmax(self.fusion_logits, dim=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.branch_weights()
        fused = sum(w[i] * branch(x) for i, branch in enumerate(self.branches))
        return x + fused
