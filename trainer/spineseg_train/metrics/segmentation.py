"""Voxel overlap and surface distance metrics for label maps.

Conventions
-----------
* Inputs are integer label maps of the same shape, indexed ``(i, j, k)`` (the core's convention), holding
  label-table values (VerSe numbering); ``0`` is background.
* Per-class counts: TP = voxels labelled ``c`` in both, FP = ``c`` in the prediction only, FN = ``c`` in the
  reference only.
* Dice = 2TP / (2TP + FP + FN), IoU = TP / (TP + FP + FN), accuracy = TP / (TP + FN) (the per-class voxel
  accuracy of semantic segmentation papers, i.e. recall / sensitivity of that class, averaged as "mAcc").
* A class absent from both maps has Dice = IoU = nan; a class absent from the reference has accuracy = nan.
  A class present in the reference but not predicted scores 0.
* mDice, mIoU, mAcc average over the classes present in the reference only, background excluded unless
  asked for.
* Surfaces are the boundary voxels of a mask: voxels of the mask with at least one of their 6 face neighbours
  outside it (voxels on the array border count as boundary, as if the array were padded with background).
  Distances are Euclidean, in mm, between voxel centres, using the voxel spacing along ``(i, j, k)``
  (``Volume.spacing``); this is the convention of MONAI's ``compute_hausdorff_distance`` and
  ``compute_average_surface_distance`` with ``spacing`` given.
* HD95 = max of the two directed 95th percentiles (pred → ref, ref → pred; numpy's linear interpolation).
  ASSD = mean over the union of both directed distance sets (sum of all distances / number of surface voxels
  of both). If either mask is empty, HD95, HD and ASSD are nan (undefined); count such cases separately.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
from scipy import ndimage

_CHUNK = 1 << 24  # voxels per bincount chunk, keeps the int64 temporaries small on full CT volumes


# --- overlap --------------------------------------------------------------------------------------------------
def confusion_matrix(pred: np.ndarray, ref: np.ndarray, num_values: int | None = None) -> np.ndarray:
    """Voxel counts ``m[r, p]``: voxels with reference value ``r`` and predicted value ``p``.

    Values must be non-negative integers; the matrix has ``num_values`` rows (default: largest value + 1), so it
    is meant for label-table values (≤ 255), not for large instance ids.
    """
    pred, ref = _check_label_maps(pred, ref)
    if num_values is None:
        num_values = int(max(pred.max(initial=0), ref.max(initial=0))) + 1
    flat_pred, flat_ref = pred.ravel(), ref.ravel()
    counts = np.zeros(num_values * num_values, dtype=np.int64)
    for start in range(0, flat_pred.size, _CHUNK):
        p = flat_pred[start : start + _CHUNK].astype(np.int64)
        r = flat_ref[start : start + _CHUNK].astype(np.int64)
        counts += np.bincount(r * num_values + p, minlength=num_values * num_values)
    return counts.reshape(num_values, num_values)


def class_counts(pred: np.ndarray, ref: np.ndarray, labels: Iterable[int]) -> dict[int, tuple[int, int, int]]:
    """``{label: (TP, FP, FN)}`` voxel counts for each label."""
    labels = [int(v) for v in labels]
    pred, ref = _check_label_maps(pred, ref)
    top = max([int(pred.max(initial=0)), int(ref.max(initial=0))] + labels) + 1
    return _counts_from_matrix(confusion_matrix(pred, ref, top), labels)


def segmentation_scores(
    pred: np.ndarray,
    ref: np.ndarray,
    labels: Iterable[int] | None = None,
    *,
    include_background: bool = False,
    background: int = 0,
) -> dict:
    """Per-class Dice, IoU and accuracy (recall) and their means over classes present in the reference.

    ``labels`` defaults to every value found in either map (background excluded unless
    ``include_background``). Returns ``{"dice": {label: v}, "iou": {...}, "accuracy": {...},
    "mDice", "mIoU", "mAcc", "labels_in_reference": [...]}``; a mean is nan if no class is in the reference.
    """
    pred, ref = _check_label_maps(pred, ref)
    top = int(max(pred.max(initial=0), ref.max(initial=0))) + 1
    if labels is not None:
        labels = [int(v) for v in labels]
        top = max([top] + [v + 1 for v in labels])
    matrix = confusion_matrix(pred, ref, top)
    if labels is None:
        labels = np.flatnonzero(matrix.sum(axis=0) + matrix.sum(axis=1)).tolist()
    labels = [v for v in labels if include_background or v != background]
    counts = _counts_from_matrix(matrix, labels)
    dice = {v: _dice(*counts[v]) for v in labels}
    iou = {v: _iou(*counts[v]) for v in labels}
    acc = {v: _recall(*counts[v]) for v in labels}
    present = [v for v in labels if counts[v][0] + counts[v][2] > 0]
    return {
        "dice": dice,
        "iou": iou,
        "accuracy": acc,
        "mDice": _mean([dice[v] for v in present]),
        "mIoU": _mean([iou[v] for v in present]),
        "mAcc": _mean([acc[v] for v in present]),
        "labels_in_reference": present,
    }


def dice_per_class(pred: np.ndarray, ref: np.ndarray, labels: Iterable[int]) -> dict[int, float]:
    """``{label: Dice}``; nan for a label absent from both maps."""
    return {v: _dice(*c) for v, c in class_counts(pred, ref, labels).items()}


def iou_per_class(pred: np.ndarray, ref: np.ndarray, labels: Iterable[int]) -> dict[int, float]:
    """``{label: IoU}`` (Jaccard); nan for a label absent from both maps."""
    return {v: _iou(*c) for v, c in class_counts(pred, ref, labels).items()}


def accuracy_per_class(pred: np.ndarray, ref: np.ndarray, labels: Iterable[int]) -> dict[int, float]:
    """``{label: TP / (TP + FN)}`` (per-class voxel accuracy = recall); nan for a label absent from the reference."""
    return {v: _recall(*c) for v, c in class_counts(pred, ref, labels).items()}


def per_vertebra_dice(pred_labels: np.ndarray, ref_labels: np.ndarray, label_values: Iterable[int]) -> dict[int, float]:
    """``{label_value: Dice}`` for the values of ``label_values`` present in the reference (others are left out)."""
    counts = class_counts(pred_labels, ref_labels, label_values)
    return {v: _dice(tp, fp, fn) for v, (tp, fp, fn) in counts.items() if tp + fn > 0}


def per_vertebra_instance_dice(pred_labels: np.ndarray, ref_labels: np.ndarray,
                               label_values: Iterable[int]) -> dict[int, float]:
    """``{label_value: Dice}`` of each reference vertebra with the predicted vertebra that matches it best,
    whatever its name: how well the vertebrae are found and separated, with identification left out (a column
    named one level off scores 0 on :func:`per_vertebra_dice` and 1 here; two vertebrae merged into one score
    low on both)."""
    pred, ref = _check_label_maps(pred_labels, ref_labels)
    matrix = confusion_matrix(pred, ref, max(int(pred.max(initial=0)), int(ref.max(initial=0))) + 1)
    ref_sizes, pred_sizes = matrix.sum(axis=1), matrix.sum(axis=0)
    scores = {}
    for value in (int(v) for v in label_values):
        if value >= len(ref_sizes) or ref_sizes[value] == 0:
            continue
        scores[value] = float(np.max(2.0 * matrix[value, 1:] / (ref_sizes[value] + pred_sizes[1:]), initial=0.0))
    return scores


def spine_dice(pred_labels: np.ndarray, ref_labels: np.ndarray) -> float:
    """Dice of the whole spine (every vertebra as one foreground)."""
    pred, ref = _check_label_maps(pred_labels, ref_labels)
    pred, ref = pred > 0, ref > 0
    tp = np.count_nonzero(pred & ref)
    return _dice(tp, np.count_nonzero(pred) - tp, np.count_nonzero(ref) - tp)


# --- surface distances ----------------------------------------------------------------------------------------
def surface_voxels(mask: np.ndarray) -> np.ndarray:
    """Boolean map of the boundary voxels of ``mask`` (6-connected; array border counts as outside)."""
    mask = np.asarray(mask, dtype=bool)
    structure = ndimage.generate_binary_structure(mask.ndim, 1)
    return mask & ~ndimage.binary_erosion(mask, structure=structure, border_value=0)


def surface_distances(
    pred_mask: np.ndarray, ref_mask: np.ndarray, spacing: Sequence[float]
) -> tuple[np.ndarray, np.ndarray]:
    """Directed surface distances in mm: (each pred surface voxel → ref surface, each ref → pred surface).

    Both arrays are empty if either mask is empty. The work is done on the bounding box of the union of the
    masks, which gives the same distances as on the whole volume.
    """
    pred_mask, ref_mask = np.asarray(pred_mask, dtype=bool), np.asarray(ref_mask, dtype=bool)
    if pred_mask.shape != ref_mask.shape:
        raise ValueError(f"masks differ in shape: {pred_mask.shape} vs {ref_mask.shape}")
    spacing = np.asarray(spacing, dtype=np.float64)
    if spacing.shape != (pred_mask.ndim,):
        raise ValueError(f"spacing must have {pred_mask.ndim} values, got {spacing.tolist()}")
    if not pred_mask.any() or not ref_mask.any():
        return np.zeros(0), np.zeros(0)
    box = _bounding_box(pred_mask | ref_mask)
    surf_pred, surf_ref = surface_voxels(pred_mask[box]), surface_voxels(ref_mask[box])
    to_ref = ndimage.distance_transform_edt(~surf_ref, sampling=spacing)
    to_pred = ndimage.distance_transform_edt(~surf_pred, sampling=spacing)
    return to_ref[surf_pred], to_pred[surf_ref]


def surface_metrics(
    pred_mask: np.ndarray, ref_mask: np.ndarray, spacing: Sequence[float], percentile: float = 95.0
) -> dict[str, float]:
    """``{"hd95", "hd", "assd"}`` in mm (``hd95`` at ``percentile``); all nan if either mask is empty."""
    d_pred, d_ref = surface_distances(pred_mask, ref_mask, spacing)
    if d_pred.size == 0 or d_ref.size == 0:
        return {"hd95": float("nan"), "hd": float("nan"), "assd": float("nan")}
    return {
        "hd95": float(max(np.percentile(d_pred, percentile), np.percentile(d_ref, percentile))),
        "hd": float(max(d_pred.max(), d_ref.max())),
        "assd": float((d_pred.sum() + d_ref.sum()) / (d_pred.size + d_ref.size)),
    }


def hd95(pred_mask: np.ndarray, ref_mask: np.ndarray, spacing: Sequence[float]) -> float:
    """95th-percentile symmetric Hausdorff distance in mm; nan if either mask is empty."""
    return surface_metrics(pred_mask, ref_mask, spacing)["hd95"]


def assd(pred_mask: np.ndarray, ref_mask: np.ndarray, spacing: Sequence[float]) -> float:
    """Average symmetric surface distance in mm; nan if either mask is empty."""
    return surface_metrics(pred_mask, ref_mask, spacing)["assd"]


def per_label_surface_metrics(
    pred_labels: np.ndarray, ref_labels: np.ndarray, spacing: Sequence[float], label_values: Iterable[int]
) -> dict[int, dict[str, float]]:
    """``{label_value: surface_metrics(...)}`` for the values present in the reference (nan if not predicted)."""
    ref_present = set(np.unique(ref_labels).tolist())
    return {
        int(v): surface_metrics(pred_labels == v, ref_labels == v, spacing)
        for v in label_values
        if int(v) in ref_present
    }


# --- helpers --------------------------------------------------------------------------------------------------
def _check_label_maps(pred: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred, ref = np.asarray(pred), np.asarray(ref)
    if pred.shape != ref.shape:
        raise ValueError(f"label maps differ in shape: {pred.shape} vs {ref.shape}")
    for name, a in (("prediction", pred), ("reference", ref)):
        if not (np.issubdtype(a.dtype, np.integer) or a.dtype == bool):
            raise ValueError(f"{name} must hold integer labels, got {a.dtype}")
        if a.size and a.min() < 0:
            raise ValueError(f"{name} holds negative labels")
    return pred, ref


def _counts_from_matrix(matrix: np.ndarray, labels: list[int]) -> dict[int, tuple[int, int, int]]:
    tp = np.diag(matrix)
    fp = matrix.sum(axis=0) - tp
    fn = matrix.sum(axis=1) - tp
    return {v: (int(tp[v]), int(fp[v]), int(fn[v])) for v in labels}


def _dice(tp: int, fp: int, fn: int) -> float:
    denominator = 2 * tp + fp + fn
    return 2.0 * tp / denominator if denominator else float("nan")


def _iou(tp: int, fp: int, fn: int) -> float:
    denominator = tp + fp + fn
    return tp / denominator if denominator else float("nan")


def _recall(tp: int, fp: int, fn: int) -> float:
    denominator = tp + fn
    return tp / denominator if denominator else float("nan")


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else float("nan")


def _bounding_box(mask: np.ndarray) -> tuple[slice, ...]:
    box = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        hits = np.flatnonzero(mask.any(axis=other))
        box.append(slice(int(hits[0]), int(hits[-1]) + 1))
    return tuple(box)
