"""Architecture registry: architecture id -> builder.

Every network takes ``(in_channels, num_classes, num_lesion_classes, **arch_args)`` and its ``forward(x)``
returns a dict with at least:

- ``"seg"``: vertebra class logits, shape (B, num_classes, D, H, W), class 0 = background, class i = the
  i-th entry of the label table (cranio-caudal order);
- ``"lesion"``: lesion heatmap logits, shape (B, num_lesion_classes, D, H, W) (sigmoid gives the heatmap).

Extra heads (identification, offsets, sizes, domain) add their own keys; the inference engine uses only these
two, so any registered architecture runs in ``spineseg segment``, Slicer and the web front end unchanged.
Input spatial sizes must be multiples of ``network.size_divisor`` (an int attribute every network sets).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn

_BUILDERS: dict[str, Callable[..., nn.Module]] = {}
_DESCRIPTIONS: dict[str, str] = {}


def register_architecture(arch_id: str, description: str = ""):
    """Decorator: ``@register_architecture("unet3d")`` on a builder function or class."""

    def decorator(builder):
        if arch_id in _BUILDERS:
            raise ValueError(f"architecture {arch_id!r} registered twice")
        _BUILDERS[arch_id] = builder
        _DESCRIPTIONS[arch_id] = description or (builder.__doc__ or "").strip().split("\n")[0]
        return builder

    return decorator


def available_architectures() -> dict[str, str]:
    """Architecture id -> one-line description."""
    return dict(sorted(_DESCRIPTIONS.items()))


def build_network(arch_id: str, in_channels: int, num_classes: int, num_lesion_classes: int, **arch_args) -> nn.Module:
    try:
        builder = _BUILDERS[arch_id]
    except KeyError:
        raise KeyError(
            f"unknown architecture {arch_id!r}; known: {', '.join(sorted(_BUILDERS))}"
        ) from None
    return builder(in_channels=in_channels, num_classes=num_classes, num_lesion_classes=num_lesion_classes, **arch_args)


LESION_PRIOR_LOGIT = -4.6  # sigmoid = 0.01: lesions are rare, so heatmaps start near zero (as in CenterNet)


class SplitHeads(nn.Module):
    """Wraps a backbone with ``num_classes + num_lesion_classes`` output channels into the dict contract."""

    def __init__(self, backbone: nn.Module, num_classes: int, num_lesion_classes: int, size_divisor: int):
        super().__init__()
        self.backbone = backbone
        self.num_classes = num_classes
        self.size_divisor = size_divisor
        # A separate bias on the lesion logits lets every backbone start from the rare-lesion prior.
        self.lesion_bias = nn.Parameter(torch.full((1, num_lesion_classes, 1, 1, 1), LESION_PRIOR_LOGIT))

    def forward(self, x):
        out = self.backbone(x)
        return {"seg": out[:, : self.num_classes], "lesion": out[:, self.num_classes :] + self.lesion_bias}
