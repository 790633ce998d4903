"""Training losses (plain torch).

Conventions: ``logits`` are raw network outputs (B, C, D, H, W); label maps ``target`` are integer class
indices (B, D, H, W) or (B, 1, D, H, W), class 0 = background. Every loss returns a scalar tensor.

- :class:`CEDiceLoss`: cross-entropy + λ·soft Dice (softmax, foreground classes).
- :class:`DiceFocalLoss`: soft Dice + w·focal (γ = 2, α = 0.25).
- :class:`CenterNetLoss`: penalty-reduced focal loss on lesion heatmaps + smooth-L1 on offsets and log-sizes at
  the object centres.
- :class:`IdentificationLoss`: vertebra-id cross-entropy + cranio-caudal order consistency.
- :func:`info_nce_loss` / :func:`domain_loss`: contrastive domain loss against learned prototypes.
- :class:`BDoULoss`: Boundary Difference over Union (Sun et al., MICCAI 2023).
- :class:`MultiTaskLoss`: λseg·Lseg + λid·Lid + λdet·Ldet + λdom·Ldom with a warm-up curriculum.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F


def _labels(target: torch.Tensor) -> torch.Tensor:
    """(B, 1, …) or (B, …) integer labels → (B, …) long."""
    if target.ndim == 5:  # (B, 1, D, H, W): drop the channel axis
        target = target[:, 0]
    return target.long()


def one_hot(target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(B, …) labels → (B, C, …) float one-hot."""
    return F.one_hot(_labels(target), num_classes).movedim(-1, 1).float()


# --- segmentation -------------------------------------------------------------------------------------------


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, include_background: bool = False,
                   smooth: float = 1e-5) -> torch.Tensor:
    """``1 - mean_c (2·Σ p·g + s) / (Σ p + Σ g + s)`` with ``p = softmax(logits)``.

    Sums run over the batch and all voxels ("batch Dice"): a vertebra absent from one crop does not turn into a
    0/0 per-sample term. A class absent from both target and prediction scores 1 (s/s), so it costs nothing.
    """
    probs = torch.softmax(logits.float(), dim=1)
    onehot = one_hot(target, logits.shape[1])
    if not include_background:
        probs, onehot = probs[:, 1:], onehot[:, 1:]
    dims = (0, *range(2, probs.ndim))
    intersection = (probs * onehot).sum(dims)
    dice = (2 * intersection + smooth) / (probs.sum(dims) + onehot.sum(dims) + smooth)
    return 1 - dice.mean()


def focal_loss(logits: torch.Tensor, target: torch.Tensor, gamma: float = 2.0, alpha: float = 0.25) -> torch.Tensor:
    """Multi-class focal loss ``mean(-α (1 - p_t)^γ log p_t)`` (Lin et al.), ``p_t`` = softmax prob of the true class.

    With softmax over many classes, α is a single scale (the binary α/1-α split has no multi-class meaning).
    """
    log_p = torch.log_softmax(logits.float(), dim=1).gather(1, _labels(target).unsqueeze(1)).squeeze(1)
    return (-alpha * (1 - log_p.exp()) ** gamma * log_p).mean()


def balanced_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy averaged over foreground (class > 0) and background voxels separately, then the two means
    averaged: at a coarse spacing the vertebrae are about 1 % of a patch and plain CE hardly sees them."""
    labels = _labels(target)
    per_voxel = F.cross_entropy(logits.float(), labels, reduction="none")
    foreground = labels > 0
    if foreground.all() or not foreground.any():
        return per_voxel.mean()
    return 0.5 * (per_voxel[foreground].mean() + per_voxel[~foreground].mean())


class CEDiceLoss(nn.Module):
    """``CE + dice_weight · Dice`` (λ = ``dice_weight``); ``balance_ce``: :func:`balanced_cross_entropy`."""

    def __init__(self, dice_weight: float = 1.0, include_background: bool = False, smooth: float = 1e-5,
                 balance_ce: bool = False):
        super().__init__()
        self.dice_weight = dice_weight
        self.include_background = include_background
        self.smooth = smooth
        self.balance_ce = balance_ce

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.balance_ce:
            ce = balanced_cross_entropy(logits, target)
        else:
            ce = F.cross_entropy(logits.float(), _labels(target))
        return ce + self.dice_weight * soft_dice_loss(logits, target, self.include_background, self.smooth)


def grouped_logits(logits: torch.Tensor, groups: torch.Tensor, num_groups: int) -> torch.Tensor:
    """Logits of groups of classes, ``log Σ exp`` over each group's members along axis 1: their softmax is the
    summed softmax probability of each group's classes."""
    return torch.stack([torch.logsumexp(logits[:, groups == g], dim=1) for g in range(num_groups)], dim=1)


def touching_borders(labels: torch.Tensor, radius: int = 1) -> torch.Tensor:
    """(B, …) mask of labelled voxels with a different label (not background) within ``radius`` voxels."""
    labels = _labels(labels)
    size = 2 * radius + 1
    highest = F.max_pool3d(labels[:, None].float(), size, 1, radius)[:, 0]
    others = torch.where(labels > 0, labels, torch.iinfo(torch.int32).max).float()
    lowest = -F.max_pool3d(-others[:, None], size, 1, radius)[:, 0]
    return (labels > 0) & (highest != lowest)


class GroupedSegLoss(nn.Module):
    """A segmentation loss on groups of classes (``groups[c]`` = group of class c, background group 0): the
    network keeps one output per class but is taught only which group a voxel belongs to, e.g. its region of
    the column (the segmenter then names vertebrae by counting, postprocessing ``numbering: regions``).

    ``border_voxels`` > 0: where two vertebrae touch, their voxels within that distance of each other are taught
    as background, so the segmenter finds every vertebra as a part of its own (counting needs the instances).
    """

    def __init__(self, loss: nn.Module, groups, border_voxels: int = 0):
        super().__init__()
        self.loss = loss
        self.register_buffer("groups", torch.as_tensor(groups, dtype=torch.long), persistent=False)
        self.num_groups = int(self.groups.max()) + 1
        self.border_voxels = border_voxels

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        groups = self.groups.to(logits.device)
        labels = _labels(target)
        grouped = groups[labels]
        if self.border_voxels:
            grouped = torch.where(touching_borders(labels, self.border_voxels), 0, grouped)
        return self.loss(grouped_logits(logits.float(), groups, self.num_groups), grouped)


class DiceFocalLoss(nn.Module):
    """``Dice + focal_weight · focal(γ, α)``."""

    def __init__(self, focal_weight: float = 1.0, gamma: float = 2.0, alpha: float = 0.25,
                 include_background: bool = False, smooth: float = 1e-5):
        super().__init__()
        self.focal_weight, self.gamma, self.alpha = focal_weight, gamma, alpha
        self.include_background, self.smooth = include_background, smooth

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        dice = soft_dice_loss(logits, target, self.include_background, self.smooth)
        return dice + self.focal_weight * focal_loss(logits, target, self.gamma, self.alpha)


# --- lesion detection (CenterNet) ---------------------------------------------------------------------------


def centernet_focal_loss(logits: torch.Tensor, heatmap: torch.Tensor, alpha: float = 2.0,
                         beta: float = 4.0) -> torch.Tensor:
    """Penalty-reduced pixel-wise focal loss (CenterNet, Zhou et al. 2019).

    ``heatmap`` holds Gaussian-splatted targets in [0, 1] with exactly 1 at object centres. Centres cost
    ``(1-p)^α log p``; every other voxel ``(1-Y)^β p^α log(1-p)``, so voxels near a centre (Y close to 1) are
    barely penalised. The sum is divided by the number of centres (at least 1).
    """
    logits, heatmap = logits.float(), heatmap.float()
    p = torch.sigmoid(logits)
    positive = heatmap.eq(1).float()
    # logsigmoid instead of log(sigmoid): exact and finite for large |logits|.
    pos = positive * (1 - p) ** alpha * F.logsigmoid(logits)
    neg = (1 - positive) * (1 - heatmap) ** beta * p**alpha * F.logsigmoid(-logits)
    return -(pos.sum() + neg.sum()) / positive.sum().clamp(min=1)


def gather_at_centers(maps: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
    """Values of ``maps`` (B, C, D, H, W) at ``centers`` (K, 4) = (batch, d, h, w) voxel indices → (K, C)."""
    b, d, h, w = centers.long().unbind(1)
    return maps[b, :, d, h, w]


def centernet_regression_loss(pred: torch.Tensor, centers: torch.Tensor, target: torch.Tensor,
                              beta: float = 1.0) -> torch.Tensor:
    """Smooth-L1 between ``pred`` (B, 3, …) read at the centres (K, 4) and ``target`` (K, 3); mean over K×3."""
    if centers.shape[0] == 0:
        return pred.sum() * 0
    return F.smooth_l1_loss(gather_at_centers(pred.float(), centers), target.float(), beta=beta)


class CenterNetLoss(nn.Module):
    """``focal(heatmap) + offset_weight·SmoothL1(offset) + size_weight·SmoothL1(log_size)`` (CenterNet weights).

    ``outputs`` needs ``"lesion"``, ``"offset"``, ``"log_size"``; ``centers`` (K, 4) are the integer centre
    voxels (batch, d, h, w), ``offsets`` (K, 3) the true centre minus that voxel, ``log_sizes`` (K, 3) the log
    box sizes in voxels.
    """

    def __init__(self, offset_weight: float = 1.0, size_weight: float = 0.1, alpha: float = 2.0, beta: float = 4.0):
        super().__init__()
        self.offset_weight, self.size_weight, self.alpha, self.beta = offset_weight, size_weight, alpha, beta

    def forward(self, outputs: Mapping[str, torch.Tensor], heatmap: torch.Tensor, centers: torch.Tensor,
                offsets: torch.Tensor, log_sizes: torch.Tensor) -> torch.Tensor:
        loss = centernet_focal_loss(outputs["lesion"], heatmap, self.alpha, self.beta)
        loss = loss + self.offset_weight * centernet_regression_loss(outputs["offset"], centers, offsets)
        return loss + self.size_weight * centernet_regression_loss(outputs["log_size"], centers, log_sizes)


# --- vertebra identification --------------------------------------------------------------------------------


def expected_index(logits: torch.Tensor) -> torch.Tensor:
    """Soft class index ``Σ_c softmax(logits)_c · c`` per row (differentiable, unlike argmax)."""
    idx = torch.arange(logits.shape[1], device=logits.device, dtype=torch.float32)
    return torch.softmax(logits.float(), dim=1) @ idx


def order_consistency_loss(logits: torch.Tensor, batch_index: torch.Tensor | None = None,
                           margin: float = 1.0) -> torch.Tensor:
    """Cranio-caudal order: ``mean_n max(0, margin - (E[idx_{n+1}] - E[idx_n]))`` over consecutive rows.

    ``logits`` (K, C) are the identification logits of vertebrae listed cranio-caudally (class indices increase
    caudally, as the label table does). Consecutive rows of the same image (``batch_index``, default: all one
    image) must have expected indices at least ``margin`` apart; ordered predictions cost 0, swapped ones cost
    in proportion to the inversion. Gaps (a missing vertebra) are allowed: only the lower bound is enforced.
    """
    e = expected_index(logits)
    step = e[1:] - e[:-1]
    if batch_index is not None:
        step = step[batch_index[1:] == batch_index[:-1]]
    if step.numel() == 0:
        return logits.sum() * 0
    return F.relu(margin - step).mean()


class IdentificationLoss(nn.Module):
    """``CE(id_logits, labels) + order_weight · order_consistency``; rows must be in cranio-caudal order."""

    def __init__(self, order_weight: float = 1.0, margin: float = 1.0, ignore_index: int = -100):
        super().__init__()
        self.order_weight, self.margin, self.ignore_index = order_weight, margin, ignore_index

    def forward(self, logits: torch.Tensor, labels: torch.Tensor,
                batch_index: torch.Tensor | None = None) -> torch.Tensor:
        ce = F.cross_entropy(logits.float(), labels.long(), ignore_index=self.ignore_index)
        return ce + self.order_weight * order_consistency_loss(logits, batch_index, self.margin)


# --- domain --------------------------------------------------------------------------------------------------


def info_nce_loss(query: torch.Tensor, keys: torch.Tensor, labels: torch.Tensor | None = None,
                  temperature: float = 0.1) -> torch.Tensor:
    """InfoNCE: ``CE(cos(query_i, keys) / τ, labels_i)``; ``labels`` default to ``arange`` (key i pairs query i).

    For domains: ``query`` the image embeddings (B, E), ``keys`` the domain prototypes (K, E), ``labels`` the
    domain ids: each image is pulled to its own prototype and pushed from the others.
    """
    logits = F.normalize(query.float(), dim=1) @ F.normalize(keys.float(), dim=1).T / temperature
    if labels is None:
        labels = torch.arange(query.shape[0], device=query.device)
    return F.cross_entropy(logits, labels.long())


def domain_loss(outputs: Mapping[str, torch.Tensor], domain: torch.Tensor, prototypes: torch.Tensor,
                temperature: float = 0.1, ce_weight: float = 1.0) -> torch.Tensor:
    """Domain-classifier CE on ``"domain_logits"`` + InfoNCE of ``"domain_embedding"`` against the prototypes."""
    ce = F.cross_entropy(outputs["domain_logits"].float(), domain.long())
    return ce_weight * ce + info_nce_loss(outputs["domain_embedding"], prototypes, domain, temperature)


# --- boundary ------------------------------------------------------------------------------------------------


def boundary_voxels(mask: torch.Tensor) -> torch.Tensor:
    """Voxels of a binary (B, D, H, W) mask with at least one 6-neighbour outside it (the volume edge counts)."""
    m = mask.float().unsqueeze(1)
    kernel = torch.zeros(1, 1, 3, 3, 3, device=m.device)
    kernel[0, 0, 1, 1, :] = kernel[0, 0, 1, :, 1] = kernel[0, 0, :, 1, 1] = 1
    inside = F.conv3d(m, kernel, padding=1) >= 7  # the voxel and all 6 neighbours are in the mask
    return (m.bool() & ~inside).squeeze(1)


class BDoULoss(nn.Module):
    """Boundary Difference over Union loss (Sun et al., MICCAI 2023), per foreground class, over the batch.

    ``L = (|P| + |G| - 2|P∩G|) / (|P| + |G| - (1 + α)|P∩G|)`` with soft sets (``|P| = Σp²``): the
    difference set over the union minus ``α`` of the intersection. ``α = 1 - 2C/S`` (C boundary voxels, S
    voxels of the class), capped at ``alpha_max`` = 0.8 as the authors recommend: large, compact objects
    (small C/S) focus the loss on the boundary region. Classes absent from the target are skipped (their
    term would be a constant 1); with no foreground at all the loss is 0.
    """

    def __init__(self, alpha_max: float = 0.8, include_background: bool = False, smooth: float = 1e-5):
        super().__init__()
        self.alpha_max, self.include_background, self.smooth = alpha_max, include_background, smooth

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        probs = torch.softmax(logits.float(), dim=1)
        labels = _labels(target)
        terms = []
        for c in range(0 if self.include_background else 1, logits.shape[1]):
            g = (labels == c).float()
            size = g.sum()
            if size == 0:
                continue
            alpha = (1 - 2 * (boundary_voxels(g).sum() + self.smooth) / (size + self.smooth)).clamp(max=self.alpha_max)
            p = probs[:, c]
            inter, p_sum, g_sum = (p * g).sum(), (p * p).sum(), (g * g).sum()
            terms.append((p_sum + g_sum - 2 * inter + self.smooth)
                         / (p_sum + g_sum - (1 + alpha) * inter + self.smooth))
        return torch.stack(terms).mean() if terms else probs.sum() * 0


# --- multi-task ----------------------------------------------------------------------------------------------


class MultiTaskLoss(nn.Module):
    """``λseg·Lseg + λid·Lid + λdet·Ldet + λdom·Ldom`` with a curriculum on the auxiliary tasks.

    Epochs ``0 … seg_only_epochs-1`` train segmentation only (the other weights are 0): identification and
    detection read decoder features that are meaningless before segmentation has converged somewhat. Then
    ``λid`` and ``λdet`` ramp linearly to their full value over ``ramp_epochs`` epochs
    (epoch ``e`` gets ``min(1, (e - seg_only_epochs + 1) / ramp_epochs)``) and ``λdom`` is on at full weight.
    Example with N = 10, M = 5: epoch 9 → 0, epoch 10 → 0.2·λ, epoch 14 → λ.

    ``forward(losses, epoch)`` takes the component losses by key ``"seg"``, ``"id"``, ``"det"``, ``"dom"``
    (missing keys are tasks the model does not have) and returns ``(total, weighted terms)``.
    """

    def __init__(self, seg_weight: float = 1.0, id_weight: float = 0.5, det_weight: float = 0.5,
                 dom_weight: float = 0.1, seg_only_epochs: int = 10, ramp_epochs: int = 10):
        super().__init__()
        self.base = {"seg": seg_weight, "id": id_weight, "det": det_weight, "dom": dom_weight}
        self.seg_only_epochs, self.ramp_epochs = seg_only_epochs, ramp_epochs

    def weights(self, epoch: int) -> dict[str, float]:
        after = epoch - self.seg_only_epochs + 1  # 1 on the first epoch after warm-up
        if after <= 0:
            ramp = on = 0.0
        else:
            ramp, on = (min(1.0, after / self.ramp_epochs) if self.ramp_epochs > 0 else 1.0), 1.0
        factor = {"seg": 1.0, "id": ramp, "det": ramp, "dom": on}
        return {k: self.base[k] * factor[k] for k in self.base}

    def forward(self, losses: Mapping[str, torch.Tensor], epoch: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        unknown = set(losses) - set(self.base)
        if unknown:
            raise KeyError(f"unknown loss terms {sorted(unknown)}; expected seg, id, det, dom")
        w = self.weights(epoch)
        terms = {k: w[k] * v for k, v in losses.items()}
        return sum(terms.values()), terms
