"""The training objective: ``λseg·Lseg + λid·Lid + λdet·Ldet + λdom·Ldom`` (``losses.MultiTaskLoss``), with
each term built from what the network outputs, and the extra ``forward`` arguments the network takes.

- ``Lseg``: the configured segmentation loss (``seg_loss``: ``ce_dice`` = CE + λ·Dice, ``dice_focal``,
  ``bdou`` = CE + BDoU, ``ce_dice_bdou``) on the vertebra classes, or with ``seg_target: regions`` on their
  regions (cervical, thoracic, lumbar, sacral; :class:`.losses.GroupedSegLoss`), where touching
  vertebrae meet taught as background over ``border_voxels``; a network with a ``"mask"`` head (Vertebraformer) adds
  ``mask_weight`` · (BCE + soft Dice) of spine-vs-background.
- ``Ldet``: CenterNet: penalty-reduced focal loss on the lesion heatmap, plus smooth-L1 on offsets and log sizes
  at the lesion centres when the network outputs ``"offset"`` and ``"log_size"``. Networks without those
  heads get the focal term only.
- ``Lid`` (networks with an identification head): vertebra-id cross-entropy + order consistency on the
  ground-truth boxes of the augmented patch (:func:`.targets.vertebra_boxes`).
- ``Ldom`` (networks with domain modulation, when images carry a domain id): domain-classifier CE + InfoNCE of
  the image embedding against the domain prototypes at temperature τ.

Curriculum (``MultiTaskLoss``): epochs of ``epoch_steps`` steps; segmentation only for ``seg_only_epochs``, then
λid and λdet ramp linearly over ``ramp_epochs`` and λdom is on. Terms whose weight is currently 0 are still
computed (multiplied by 0): every parameter stays in the graph each step, which DistributedDataParallel needs.
"""

from __future__ import annotations

import inspect

import torch
import torch.nn as nn
import torch.nn.functional as F

from SpineSegLib.labels import load_label_table

from .config import TrainConfig
from .losses import (
    BDoULoss,
    CEDiceLoss,
    CenterNetLoss,
    DiceFocalLoss,
    GroupedSegLoss,
    IdentificationLoss,
    MultiTaskLoss,
    centernet_focal_loss,
    domain_loss,
)
from .targets import lesion_targets, vertebra_boxes


class _CEPlus(nn.Module):
    """``CE + λ·Dice·[dice] + w·BDoU``."""

    def __init__(self, dice_weight: float, bdou_weight: float, with_dice: bool):
        super().__init__()
        self.ce_dice = CEDiceLoss(dice_weight if with_dice else 0.0)
        self.bdou, self.bdou_weight = BDoULoss(), bdou_weight

    def forward(self, logits, target):
        return self.ce_dice(logits, target) + self.bdou_weight * self.bdou(logits, target)


def build_seg_loss(config: TrainConfig) -> nn.Module:
    loss = _build_class_loss(config)
    if config.seg_target == "regions":
        return GroupedSegLoss(loss, load_label_table().class_to_region_lut(), config.border_voxels)
    return loss


def _build_class_loss(config: TrainConfig) -> nn.Module:
    if config.seg_loss == "ce_dice":
        return CEDiceLoss(config.dice_weight, balance_ce=config.ce_balance)
    if config.seg_loss == "dice_focal":
        return DiceFocalLoss(config.focal_weight, config.focal_gamma, config.focal_alpha)
    if config.seg_loss == "bdou":
        return _CEPlus(config.dice_weight, config.bdou_weight, with_dice=False)
    if config.seg_loss == "ce_dice_bdou":
        return _CEPlus(config.dice_weight, config.bdou_weight, with_dice=True)
    raise ValueError(f"unknown seg_loss {config.seg_loss!r}")


def _binary_dice_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1e-5) -> torch.Tensor:
    p = torch.sigmoid(logits.float())
    return 1 - (2 * (p * target).sum() + smooth) / (p.sum() + target.sum() + smooth)


class Objective:
    """Builds the network's extra inputs and the weighted loss for one batch."""

    def __init__(self, config: TrainConfig, model: nn.Module):
        self.config = config
        self.seg_loss = build_seg_loss(config)
        self.det_loss = CenterNetLoss(config.offset_weight, config.size_weight)
        self.id_loss = IdentificationLoss(config.order_weight, config.order_margin)
        self.multitask = MultiTaskLoss(config.seg_weight, config.id_weight, config.det_weight, config.dom_weight,
                                       config.seg_only_epochs, config.ramp_epochs)
        accepted = inspect.signature(model.forward).parameters
        self.identification = "boxes" in accepted and getattr(model, "id_classifier", None) is not None
        conditioner = getattr(model, "domain", None)
        self.domain_conditioner = conditioner if "domain" in accepted and isinstance(conditioner, nn.Module) else None

    @property
    def num_domains(self) -> int | None:
        return None if self.domain_conditioner is None else int(self.domain_conditioner.num_domains)

    def epoch(self, step: int) -> int:
        return step // self.config.epoch_steps

    def weights(self, step: int) -> dict[str, float]:
        return self.multitask.weights(self.epoch(step))

    def forward_kwargs(self, batch: dict) -> dict:
        """``boxes`` (ground-truth vertebra boxes) and ``domain`` (when every image's domain is known)."""
        kwargs = {}
        if self.identification:
            boxes, ids = vertebra_boxes(batch["seg"], self.config.min_box_voxels)
            batch["id_boxes"], batch["id_labels"] = boxes.to(batch["seg"].device), ids.to(batch["seg"].device)
            kwargs["boxes"] = batch["id_boxes"]
        if self.domain_conditioner is not None and "domain" in batch and bool((batch["domain"] >= 0).all()):
            kwargs["domain"] = batch["domain"]
        return kwargs

    def __call__(self, out: dict, batch: dict, step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``(total, components)``: components hold the unweighted ``seg``, ``det``, ``id``, ``dom`` terms."""
        config = self.config
        seg = self.seg_loss(out["seg"], batch["seg"])
        if "mask" in out and config.mask_weight:
            foreground = (batch["seg"] > 0).float()
            mask = out["mask"].float()
            seg = seg + config.mask_weight * (F.binary_cross_entropy_with_logits(mask, foreground)
                                              + _binary_dice_loss(mask, foreground))
        losses = {"seg": seg}
        if "offset" in out and "log_size" in out:
            centers, offsets, log_sizes = lesion_targets(batch["lesions"], batch["seg"].shape[2:])
            device = out["lesion"].device
            losses["det"] = self.det_loss(out, batch["heat"], centers.to(device), offsets.to(device),
                                          log_sizes.to(device))
        else:
            losses["det"] = centernet_focal_loss(out["lesion"], batch["heat"])
        if "id_logits" in out:
            logits, labels = out["id_logits"], batch.get("id_labels")
            if labels is None or labels.numel() == 0:
                losses["id"] = logits.sum() * 0  # no vertebra in the patch: keep the head in the graph
            else:
                losses["id"] = self.id_loss(logits, labels, batch["id_boxes"][:, 0])
        if "domain_embedding" in out and self.domain_conditioner is not None and "domain" in batch:
            known = batch["domain"] >= 0
            if bool(known.any()):
                subset = {k: out[k][known] for k in ("domain_logits", "domain_embedding")}
                losses["dom"] = domain_loss(subset, batch["domain"][known], self.domain_conditioner.prototypes,
                                            config.domain_temperature)
            else:
                losses["dom"] = out["domain_logits"].sum() * 0
        total, _ = self.multitask(losses, self.epoch(step))
        return total, losses
