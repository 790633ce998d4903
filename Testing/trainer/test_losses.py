"""Losses against values computed by hand on tiny cases."""

from __future__ import annotations

import math

import pytest
import torch

from spineseg_train.losses import (
    BDoULoss,
    CEDiceLoss,
    CenterNetLoss,
    DiceFocalLoss,
    GroupedSegLoss,
    IdentificationLoss,
    MultiTaskLoss,
    balanced_cross_entropy,
    boundary_voxels,
    centernet_focal_loss,
    centernet_regression_loss,
    domain_loss,
    focal_loss,
    info_nce_loss,
    order_consistency_loss,
    soft_dice_loss,
    touching_borders,
)

# A 2×2×2 volume, two classes. Foreground probabilities p1 per voxel; the first two voxels are foreground.
P1 = torch.tensor([0.75, 0.5, 0.25, 0.25, 0.25, 0.25, 0.25, 0.25])
TARGET = torch.tensor([1, 1, 0, 0, 0, 0, 0, 0]).view(1, 2, 2, 2)


def logits_from_probs(p1: torch.Tensor, shape=(1, 2, 2, 2)) -> torch.Tensor:
    """Two-class logits whose softmax is exactly (1 - p1, p1)."""
    return torch.stack([torch.log(1 - p1), torch.log(p1)]).view(2, *shape[1:]).unsqueeze(0)


def approx(value):
    return pytest.approx(value, rel=1e-5, abs=1e-6)


def test_soft_dice_by_hand():
    logits = logits_from_probs(P1)
    # foreground: intersection 0.75 + 0.5 = 1.25, Σp = 2.75, Σg = 2 → Dice = 2.5 / 4.75 = 10/19
    assert soft_dice_loss(logits, TARGET, smooth=0).item() == approx(1 - 10 / 19)
    # background: intersection 6·0.75 = 4.5, Σp = 5.25, Σg = 6 → Dice = 9 / 11.25 = 0.8
    assert soft_dice_loss(logits, TARGET, include_background=True, smooth=0).item() == approx(1 - (0.8 + 10 / 19) / 2)
    # (B, 1, D, H, W) targets are accepted too
    assert soft_dice_loss(logits, TARGET.unsqueeze(1), smooth=0).item() == approx(1 - 10 / 19)


def test_dice_absent_class_costs_nothing():
    logits = torch.zeros(1, 3, 2, 2, 2)
    logits[:, 2] = -30  # class 2 absent from target, predicted ~never
    target = TARGET
    with_absent = soft_dice_loss(logits, target)
    probs = torch.softmax(logits, 1)
    dice1 = (2 * probs[0, 1].flatten()[:2].sum() + 1e-5) / (probs[0, 1].sum() + 2 + 1e-5)
    assert with_absent.item() == approx(1 - (dice1.item() + 1.0) / 2)


def test_ce_dice_by_hand():
    logits = logits_from_probs(P1)
    # p of the true class: 0.75, 0.5, then 0.75 for the six background voxels
    ce = -(7 * math.log(0.75) + math.log(0.5)) / 8
    assert CEDiceLoss(dice_weight=0.5, smooth=0)(logits, TARGET).item() == approx(ce + 0.5 * (1 - 10 / 19))


def test_balanced_ce_weighs_foreground_and_background_equally():
    logits = logits_from_probs(P1)
    # foreground voxels: -log 0.75, -log 0.5; the six background voxels: -log 0.75 each
    balanced = 0.5 * (-(math.log(0.75) + math.log(0.5)) / 2 - math.log(0.75))
    assert balanced_cross_entropy(logits, TARGET).item() == approx(balanced)
    assert CEDiceLoss(dice_weight=0.5, smooth=0, balance_ce=True)(logits, TARGET).item() == \
        approx(balanced + 0.5 * (1 - 10 / 19))
    # one kind of voxel only: the plain mean
    assert balanced_cross_entropy(logits, torch.zeros_like(TARGET)).item() == approx(
        -(math.log(0.25) + math.log(0.5) + 6 * math.log(0.75)) / 8)


def test_grouped_loss_is_the_loss_of_the_groups_summed_probabilities():
    """Regions: the loss sees each group's summed probability, so how a group's mass is spread over its classes
    costs nothing."""
    probs = torch.tensor([[0.1, 0.6, 0.3], [0.5, 0.2, 0.3]]).T.reshape(1, 3, 1, 1, 2)  # classes 1 and 2: group 1
    target = torch.tensor([2, 0]).reshape(1, 1, 1, 1, 2)
    grouped = GroupedSegLoss(CEDiceLoss(dice_weight=0.0), groups=[0, 1, 1])
    assert grouped(probs.log(), target).item() == approx(-(math.log(0.9) + math.log(0.5)) / 2)
    spread = torch.tensor([[0.1, 0.0, 0.9], [0.5, 0.5, 0.0]]).T.reshape(1, 3, 1, 1, 2).clamp_min(1e-12)
    assert grouped(spread.log(), target).item() == approx(grouped(probs.log(), target).item())


def test_touching_vertebrae_are_taught_a_seam_of_background():
    labels = torch.tensor([0, 3, 3, 3, 4, 4, 4, 0, 5, 5]).reshape(1, 1, 1, 10).expand(1, 3, 3, 10)
    seam = touching_borders(labels, radius=1)[0, 1, 1]
    assert seam.tolist() == [False, False, False, True, True, False, False, False, False, False]
    grouped = GroupedSegLoss(CEDiceLoss(dice_weight=0.0), groups=[0, 1, 1, 1, 1, 1], border_voxels=1)
    logits = torch.zeros(1, 6, 3, 3, 10)
    logits[:, 1, :, :, [1, 2, 5, 6, 8, 9]] = 20.0  # sure of bone where there is bone ...
    logits[:, 0, :, :, [0, 3, 4, 7]] = 20.0  # ... and of background at the seam: nothing to learn
    assert grouped(logits, labels).item() < 1e-6


def test_focal_and_dice_focal_by_hand():
    logits = logits_from_probs(P1)
    focal = -0.25 * (7 * 0.25**2 * math.log(0.75) + 0.5**2 * math.log(0.5)) / 8
    assert focal_loss(logits, TARGET).item() == approx(focal)
    assert DiceFocalLoss(focal_weight=2.0, smooth=0)(logits, TARGET).item() == approx(1 - 10 / 19 + 2 * focal)


def test_centernet_focal_by_hand():
    heatmap = torch.tensor([1.0, 0.5, 0.0]).view(1, 1, 1, 1, 3)
    logits = torch.zeros_like(heatmap)  # p = 0.5 everywhere
    # centre: (1-p)^2 log p; Y=0.5: (1-Y)^4 p^2 log(1-p); Y=0: p^2 log(1-p); one centre → divide by 1
    expected = -(0.25 + 0.0625 * 0.25 + 0.25) * math.log(0.5)
    assert centernet_focal_loss(logits, heatmap).item() == approx(expected)
    # two centres: the sum is divided by 2
    two = torch.tensor([1.0, 1.0, 0.0]).view(1, 1, 1, 1, 3)
    assert centernet_focal_loss(logits, two).item() == approx(-(0.25 + 0.25 + 0.25) * math.log(0.5) / 2)
    # a confident correct prediction costs ~nothing
    good = torch.tensor([20.0, -20.0, -20.0]).view(1, 1, 1, 1, 3)
    assert centernet_focal_loss(good, heatmap).item() < 1e-6


def test_centernet_regression_and_total_by_hand():
    offset = torch.zeros(1, 3, 1, 1, 3)
    offset[0, :, 0, 0, 1] = torch.tensor([0.5, 2.0, 0.0])
    centers = torch.tensor([[0, 0, 0, 1]])
    target = torch.zeros(1, 3)
    # smooth-L1 (β=1): 0.5 → 0.5·0.5² = 0.125; 2 → 2 - 0.5 = 1.5; 0 → 0
    reg = (0.125 + 1.5) / 3
    assert centernet_regression_loss(offset, centers, target).item() == approx(reg)
    heatmap = torch.tensor([0.0, 1.0, 0.0]).view(1, 1, 1, 1, 3)
    outputs = {"lesion": torch.zeros(1, 1, 1, 1, 3), "offset": offset, "log_size": offset}
    focal = -(0.25 + 0.25 + 0.25) * math.log(0.5)
    total = CenterNetLoss(offset_weight=1.0, size_weight=0.1)(outputs, heatmap, centers, target, target)
    assert total.item() == approx(focal + reg + 0.1 * reg)
    empty = centernet_regression_loss(offset, torch.zeros(0, 4, dtype=torch.long), torch.zeros(0, 3))
    assert empty.item() == 0


def one_hot_logits(classes, num_classes=6, margin=50.0):
    logits = torch.zeros(len(classes), num_classes)
    logits[torch.arange(len(classes)), torch.tensor(classes)] = margin
    return logits


def test_order_consistency():
    assert order_consistency_loss(one_hot_logits([2, 3, 5])).item() == approx(0.0)  # ordered (gap allowed)
    assert order_consistency_loss(one_hot_logits([3, 2])).item() == approx(2.0)  # step -1: hinge 1 - (-1)
    assert order_consistency_loss(one_hot_logits([3, 3])).item() == approx(1.0)  # duplicate id
    # uniform logits over 3 classes: E = 1 for every row, step 0 → margin
    assert order_consistency_loss(torch.zeros(2, 3)).item() == approx(1.0)
    # rows of different images are not compared
    assert order_consistency_loss(one_hot_logits([5, 2]), batch_index=torch.tensor([0, 1])).item() == 0


def test_identification_loss_by_hand():
    logits = torch.zeros(2, 3)
    labels = torch.tensor([0, 1])
    # CE of uniform logits = log 3; order term = 1 (see above)
    assert IdentificationLoss(order_weight=0.5)(logits, labels).item() == approx(math.log(3) + 0.5)


def test_info_nce_two_samples_by_hand():
    query = torch.tensor([[1.0, 0.0], [0.0, 2.0]])  # norms do not matter (cosine)
    keys = torch.tensor([[3.0, 0.0], [1.0, 1.0]])
    tau = 0.5
    s = 1 / math.sqrt(2)
    # cosines: q1·k1 = 1, q1·k2 = s; q2·k1 = 0, q2·k2 = s; positives on the diagonal
    l1 = -math.log(math.exp(1 / tau) / (math.exp(1 / tau) + math.exp(s / tau)))
    l2 = -math.log(math.exp(s / tau) / (math.exp(0) + math.exp(s / tau)))
    assert info_nce_loss(query, keys, temperature=tau).item() == approx((l1 + l2) / 2)
    # explicit labels: both samples belong to prototype 0
    l2_as_0 = -math.log(1 / (1 + math.exp(s / tau)))
    assert info_nce_loss(query, keys, torch.tensor([0, 0]), tau).item() == approx((l1 + l2_as_0) / 2)


def test_domain_loss_is_ce_plus_info_nce():
    outputs = {"domain_logits": torch.zeros(2, 2), "domain_embedding": torch.tensor([[1.0, 0.0], [0.0, 2.0]])}
    prototypes = torch.tensor([[3.0, 0.0], [1.0, 1.0]])
    domain = torch.tensor([0, 1])
    expected = math.log(2) + info_nce_loss(outputs["domain_embedding"], prototypes, domain, 0.5).item()
    assert domain_loss(outputs, domain, prototypes, temperature=0.5).item() == approx(expected)


def cube_target(size: int, cube: int) -> torch.Tensor:
    target = torch.zeros(1, size, size, size, dtype=torch.long)
    lo = (size - cube) // 2
    target[0, lo:lo + cube, lo:lo + cube, lo:lo + cube] = 1
    return target


def test_boundary_voxels_of_a_cube():
    boundary = boundary_voxels(cube_target(5, 3) == 1)
    assert boundary.sum().item() == 26 and not boundary[0, 2, 2, 2]  # all but the centre


def test_bdou_by_hand():
    target = cube_target(5, 3)  # S = 27, C = 26 → α = 1 - 52/27 = -25/27, so 1 + α = 2/27
    logits = torch.zeros(1, 2, 5, 5, 5)  # p = 0.5 everywhere
    # Σp² = 125·0.25 = 31.25, Σg² = 27, Σpg = 13.5
    expected = (31.25 + 27 - 27) / (31.25 + 27 - 2 / 27 * 13.5)
    assert BDoULoss(smooth=0)(logits, target).item() == approx(expected)
    # a class absent from the target is skipped
    three = torch.cat([logits, torch.zeros(1, 1, 5, 5, 5)], 1)
    p = 1 / 3
    expected3 = (125 * p * p + 27 - 2 * 27 * p) / (125 * p * p + 27 - 2 / 27 * 27 * p)
    assert BDoULoss(smooth=0)(three, target).item() == approx(expected3)
    # no foreground at all: zero, and differentiable
    empty = BDoULoss()(logits.requires_grad_(), torch.zeros(1, 5, 5, 5, dtype=torch.long))
    assert empty.item() == 0
    empty.backward()


def test_bdou_alpha_is_capped():
    target = cube_target(66, 64)  # C/S = (64³ - 62³) / 64³ ≈ 0.091 → α ≈ 0.818, capped at 0.8
    logits = torch.zeros(1, 2, 66, 66, 66)
    n, s = 66**3, 64**3
    p_sum, g_sum, inter = n * 0.25, float(s), 0.5 * s
    capped = (p_sum + g_sum - 2 * inter) / (p_sum + g_sum - 1.8 * inter)
    alpha = 1 - 2 * (64**3 - 62**3) / 64**3
    uncapped = (p_sum + g_sum - 2 * inter) / (p_sum + g_sum - (1 + alpha) * inter)
    assert BDoULoss(smooth=0)(logits, target).item() == approx(capped)
    assert BDoULoss(alpha_max=1.0, smooth=0)(logits, target).item() == approx(uncapped)


def test_multitask_curriculum_weights():
    mtl = MultiTaskLoss(seg_only_epochs=10, ramp_epochs=5)
    assert mtl.weights(0) == {"seg": 1.0, "id": 0.0, "det": 0.0, "dom": 0.0}
    assert mtl.weights(9) == {"seg": 1.0, "id": 0.0, "det": 0.0, "dom": 0.0}
    assert mtl.weights(10) == approx({"seg": 1.0, "id": 0.1, "det": 0.1, "dom": 0.1})
    assert mtl.weights(12) == approx({"seg": 1.0, "id": 0.3, "det": 0.3, "dom": 0.1})
    assert mtl.weights(14) == approx({"seg": 1.0, "id": 0.5, "det": 0.5, "dom": 0.1})
    assert mtl.weights(100) == approx({"seg": 1.0, "id": 0.5, "det": 0.5, "dom": 0.1})
    assert MultiTaskLoss(seg_only_epochs=3, ramp_epochs=0).weights(3)["id"] == 0.5


def test_multitask_total():
    mtl = MultiTaskLoss(seg_only_epochs=0, ramp_epochs=2)
    losses = {"seg": torch.tensor(2.0), "id": torch.tensor(4.0), "det": torch.tensor(1.0), "dom": torch.tensor(10.0)}
    total, terms = mtl(losses, epoch=0)  # ramp factor 1/2
    assert total.item() == approx(2.0 + 0.25 * 4 + 0.25 * 1 + 0.1 * 10)
    assert terms["id"].item() == approx(1.0)
    total, _ = mtl({"seg": torch.tensor(2.0)}, epoch=5)  # a model without auxiliary heads
    assert total.item() == 2.0
    with pytest.raises(KeyError):
        mtl({"segmentation": torch.tensor(1.0)}, epoch=0)
