"""Adaptive window attention for MONAI's Swin transformer: an input-conditioned, per-head attention temperature.

Plain window attention uses one fixed ``1/sqrt(d)`` scale everywhere. Windows that straddle a vertebra
boundary (bone / disc / soft tissue) have heterogeneous tokens; sharper attention there lets a token attend to
its own side of the boundary instead of averaging across it. So the logits ``q·k/sqrt(d)`` of each head are
multiplied by an inverse temperature ``exp(t_h + tanh(g_h(mean, std of the window tokens)))``: ``t_h`` is a
learned per-head base, ``g`` a small context network. The token standard deviation is the boundary cue.
The relative position bias and the shift mask are added after the scaling, as in Swin, so they stay exact.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
from monai.networks.nets.swin_unetr import SwinTransformer, SwinTransformerBlock, WindowAttention


class AdaptiveWindowAttention(WindowAttention):
    def __init__(self, dim: int, num_heads: int, window_size: Sequence[int], qkv_bias: bool = False,
                 attn_drop: float = 0.0, proj_drop: float = 0.0, context_dim: int | None = None):
        # The fused SDPA path cannot scale logits per window, so it is never used here.
        super().__init__(dim, num_heads, window_size, qkv_bias, attn_drop, proj_drop, use_flash_attention=False)
        hidden = context_dim or max(dim // 4, 8)
        self.log_temperature = nn.Parameter(torch.zeros(num_heads))
        self.context = nn.Sequential(nn.Linear(2 * dim, hidden), nn.GELU(), nn.Linear(hidden, num_heads))
        # Small last layer: starts close to plain attention (temperature ≈ 1) but every weight gets gradients.
        nn.init.normal_(self.context[-1].weight, std=1e-3)
        nn.init.zeros_(self.context[-1].bias)

    def inverse_temperature(self, x: torch.Tensor) -> torch.Tensor:
        """(windows, heads) multiplier of the attention logits, from the window's token statistics."""
        stats = torch.cat([x.mean(dim=1), x.std(dim=1, unbiased=False)], dim=-1)
        # tanh bounds the input-dependent part to a factor in [1/e, e]: no runaway sharpening.
        return torch.exp(self.log_temperature + torch.tanh(self.context(stats)))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = (q * self.scale) @ k.transpose(-2, -1)
        attn = attn * self.inverse_temperature(x)[:, :, None, None]
        bias = self.relative_position_bias_table[self.relative_position_index[:n, :n].reshape(-1)]
        attn = attn + bias.reshape(n, n, -1).permute(2, 0, 1).unsqueeze(0)
        if mask is not None:
            nw = mask.shape[0]
            attn = attn.view(b // nw, nw, self.num_heads, n, n) + mask.unsqueeze(1).unsqueeze(0)
            attn = attn.view(-1, self.num_heads, n, n)
        attn = self.attn_drop(self.softmax(attn)).to(v.dtype)
        x = (attn @ v).transpose(1, 2).reshape(b, n, c)
        return self.proj_drop(self.proj(x))


def use_adaptive_attention(swin: SwinTransformer) -> int:
    """Replace every window attention of ``swin`` by :class:`AdaptiveWindowAttention`, keeping existing weights
    (so it also works after ``load_from`` of pretrained Swin weights). Returns the number of blocks changed."""
    changed = 0
    for block in swin.modules():
        if isinstance(block, SwinTransformerBlock) and not isinstance(block.attn, AdaptiveWindowAttention):
            old = block.attn
            new = AdaptiveWindowAttention(old.dim, old.num_heads, old.window_size, qkv_bias=old.qkv.bias is not None,
                                          attn_drop=old.attn_drop.p, proj_drop=old.proj_drop.p)
            new.load_state_dict(old.state_dict(), strict=False)
            block.attn = new.to(old.qkv.weight.device)
            changed += 1
    return changed
