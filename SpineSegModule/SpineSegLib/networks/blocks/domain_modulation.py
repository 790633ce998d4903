"""Domain conditioning: a domain embedding ``e_d`` and the feature modulation it drives.

Scanners, protocols and sites (domains) shift CT intensities and noise. Instead of forcing one feature set to
fit all, features are re-weighted per domain:

- :class:`DomainConditioner` gives ``e_d``: the learned prototype of the given domain in training, or, when the
  domain is unknown (inference), the mix ``Σ_k softmax(domain_logits)_k · prototype_k`` from a domain
  classifier on the image's pooled encoder feature. It also returns an embedding ``z`` of the image, for a
  contrastive (InfoNCE) loss against the prototypes.
- :class:`DomainModulation` applies ``x · 2σ(FC_c(e_d)) · 2σ(<x, FC_k(e_d)>/√C + b(e_d))``: channel weights and
  a spatial map from a domain-specific 1×1 kernel. The factor 2 keeps the neutral weight at 1 (σ(0) = ½), so
  switching modulation on does not shrink activations.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn


class DomainConditioner(nn.Module):
    def __init__(self, in_features: int, num_domains: int, embed_dim: int = 32):
        super().__init__()
        self.num_domains = num_domains
        self.prototypes = nn.Parameter(torch.randn(num_domains, embed_dim))
        self.project = nn.Sequential(nn.Linear(in_features, embed_dim), nn.GELU(), nn.Linear(embed_dim, embed_dim))
        self.classifier = nn.Linear(embed_dim, num_domains)

    def forward(self, pooled: torch.Tensor, domain: torch.Tensor | int | None = None):
        """``pooled`` (B, in_features); ``domain`` None, an int or (B,) ints. Returns ``(e_d, logits, z)``."""
        z = self.project(pooled)
        logits = self.classifier(z)
        if domain is None:
            e = torch.softmax(logits, dim=1) @ self.prototypes
        else:
            domain = torch.as_tensor(domain, device=pooled.device, dtype=torch.long).expand(pooled.shape[0])
            e = self.prototypes[domain]
        return e, logits, z


class DomainModulation(nn.Module):
    def __init__(self, channels: int, embed_dim: int):
        super().__init__()
        self.channel_fc = nn.Linear(embed_dim, channels)
        self.spatial_fc = nn.Linear(embed_dim, channels + 1)  # a 1×1 kernel over the channels, plus its bias

    def forward(self, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        b, c = x.shape[:2]
        channel = 2 * torch.sigmoid(self.channel_fc(e)).view(b, c, 1, 1, 1)
        kernel = self.spatial_fc(e)
        logit = torch.einsum("bc,bc...->b...", kernel[:, :c], x) / math.sqrt(c) + kernel[:, c].view(b, 1, 1, 1)
        spatial = 2 * torch.sigmoid(logit).unsqueeze(1)
        return x * channel * spatial
