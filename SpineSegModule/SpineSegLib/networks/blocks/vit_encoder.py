"""ViT encoder on cubic patches with a learnable 3D positional embedding that works for any input size.

MONAI's ``ViT`` stores one positional embedding per patch of a fixed ``img_size``. Here the embedding is a
3D grid ``(1, C, g, g, g)`` for a reference size; other inputs (sliding-window crops of other sizes, the 128³
FLOP count) get it trilinearly resized, as ViT fine-tuning at a new resolution does. Transformer layers are
MONAI's ``TransformerBlock``.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.blocks import TransformerBlock


def transformer_block(hidden_size: int, mlp_dim: int, num_heads: int, dropout: float = 0.0) -> TransformerBlock:
    """MONAI ``TransformerBlock`` (pre-norm, fused SDPA attention) without its unused cross-attention norm.

    MONAI always creates ``norm_cross_attn`` even without cross-attention; an unused parameter breaks
    DistributedDataParallel's default and "every parameter gets a gradient" checks, so it is dropped.
    """
    block = TransformerBlock(hidden_size, mlp_dim, num_heads, dropout, qkv_bias=True, use_flash_attention=True)
    block.norm_cross_attn = nn.Identity()
    return block


class ViTEncoder3D(nn.Module):
    def __init__(self, in_channels: int, patch_size: int = 16, hidden_size: int = 192, num_layers: int = 12,
                 num_heads: int = 6, mlp_dim: int | None = None, img_size: int = 96, dropout: float = 0.0):
        super().__init__()
        if img_size % patch_size:
            raise ValueError(f"img_size {img_size} must be a multiple of patch_size {patch_size}")
        self.patch_size = patch_size
        self.hidden_size = hidden_size
        self.patch_embed = nn.Conv3d(in_channels, hidden_size, patch_size, stride=patch_size)
        grid = img_size // patch_size
        self.pos_embed = nn.Parameter(torch.zeros(1, hidden_size, grid, grid, grid))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.blocks = nn.ModuleList(
            transformer_block(hidden_size, mlp_dim or 4 * hidden_size, num_heads, dropout) for _ in range(num_layers)
        )
        self.norm = nn.LayerNorm(hidden_size)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor], tuple[int, int, int]]:
        """Returns (final normalised tokens (B, N, C), every layer's tokens, the token grid (d, h, w))."""
        f = self.patch_embed(x)
        grid = tuple(f.shape[2:])
        pos = self.pos_embed
        if tuple(pos.shape[2:]) != grid:
            pos = F.interpolate(pos, size=grid, mode="trilinear", align_corners=False)
        tokens = (f + pos).flatten(2).transpose(1, 2)
        hidden = []
        for block in self.blocks:
            tokens = block(tokens)
            hidden.append(tokens)
        return self.norm(tokens), hidden, grid

    @staticmethod
    def to_map(tokens: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
        """(B, N, C) tokens → (B, C, d, h, w) feature map."""
        return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], *grid)
