"""CenterNet-style detection head in 3D: per-class centre heatmap, sub-voxel centre offset and log box size.

Each branch is a 3³ conv + ReLU + 1×1 conv on a shared feature. Lesions are represented by their centre (a peak
in the class heatmap), the offset of the true centre from that voxel (3 values, voxels) and the log of the box
size (3 values, log voxels; the log keeps small and large lesions on one scale).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ..registry import LESION_PRIOR_LOGIT


def init_lesion_prior(conv: nn.Module, first_channel: int = 0) -> None:
    """Set the bias of output channels ``first_channel:`` of ``conv`` (a Conv3d, or MONAI's ``UnetOutBlock``) to
    the rare-lesion prior ``LESION_PRIOR_LOGIT`` (σ ≈ 0.01), as ``SplitHeads`` does for the other networks."""
    conv = conv.conv.conv if hasattr(conv, "conv") else conv  # UnetOutBlock → its Conv3d
    with torch.no_grad():
        conv.bias[first_channel:] = LESION_PRIOR_LOGIT


def _branch(in_channels: int, hidden: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv3d(in_channels, hidden, 3, padding=1), nn.ReLU(inplace=True),
                         nn.Conv3d(hidden, out_channels, 1))


class CenterNetHead(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, hidden: int | None = None):
        super().__init__()
        hidden = hidden or in_channels
        self.heatmap = _branch(in_channels, hidden, num_classes)
        self.offset = _branch(in_channels, hidden, 3)
        self.log_size = _branch(in_channels, hidden, 3)
        # CenterNet initialisation: σ(bias) = small prior, so the almost-all-background heatmap does not start with
        # a huge focal loss that swamps the other tasks.
        init_lesion_prior(self.heatmap[-1])

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"lesion": self.heatmap(x), "offset": self.offset(x), "log_size": self.log_size(x)}
