"""Lesion detection metrics: matching, precision / recall, AP and FROC sensitivity.

Conventions
-----------
* A lesion is a dict as in ``lesions.json``: ``center_ras`` ([x, y, z] mm), ``size_mm`` (a diameter, or three
  extents along x, y, z), ``class`` (``fracture`` | ``lytic`` | ``sclerotic``) and, for predictions, ``score``.
  Its box is the axis-aligned box of side ``size_mm`` centred on ``center_ras`` (the cube around the sphere).
* A case (one scan) is ``(predictions, references)``; a scan without references still counts for FP per scan.
* A prediction–reference pair may match when box IoU ≥ ``iou_threshold`` (0.3) **and** centre distance ≤
  ``max_center_distance_mm`` (5 mm; loosen it when reference centres are uncertain) **and**, in class-aware
  mode, the classes agree. Within a scan, matches are one-to-one, chosen by the Hungarian algorithm: as many
  pairs as possible, then the largest total IoU.
* A prediction of the wrong class on a reference lesion is, class-aware, a false positive for its class and
  leaves the reference missed; class-agnostic, it is a hit.
* Ranking: at a score threshold ``t`` the true positives of a scan are the size of the maximum matching between
  its predictions scoring ≥ ``t`` and its references. Every prediction is flagged a hit when it raises that
  count as predictions are added in descending score order, so the pooled curve (all scans) gives exactly
  that count at every threshold. Tied scores are one threshold: the curve has a point per distinct score.
* AP is the area under the precision–recall curve with VOC all-point interpolation (precision made
  monotone from the right, summed over recall steps). AP is nan for a class without reference lesions (left
  out of the macro mean, as in COCO) and 0 for a class with references and no hits.
* FROC: sensitivity at ``f`` FP per scan is the highest recall over thresholds whose false positives divided
  by the number of scans is ≤ ``f`` (0 if even the top prediction exceeds it); nan without reference lesions.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment

Lesion = Mapping
Case = tuple[Sequence[Lesion], Sequence[Lesion]]

DEFAULT_IOU = 0.3
DEFAULT_DISTANCE_MM = 5.0


# --- geometry -------------------------------------------------------------------------------------------------
def box_iou_3d(centers_a, sizes_a, centers_b, sizes_b) -> np.ndarray:
    """(n, m) IoU of axis-aligned boxes given by centres (n, 3) and sizes (n,) or (n, 3) in mm."""
    ca, sa = _boxes(centers_a, sizes_a)
    cb, sb = _boxes(centers_b, sizes_b)
    low = np.maximum(ca[:, None] - sa[:, None] / 2, cb[None] - sb[None] / 2)
    high = np.minimum(ca[:, None] + sa[:, None] / 2, cb[None] + sb[None] / 2)
    intersection = np.prod(np.clip(high - low, 0, None), axis=2)
    union = np.prod(sa, axis=1)[:, None] + np.prod(sb, axis=1)[None] - intersection
    return np.divide(intersection, union, out=np.zeros_like(intersection), where=union > 0)


def pair_table(
    preds: Sequence[Lesion],
    refs: Sequence[Lesion],
    *,
    iou_threshold: float = DEFAULT_IOU,
    max_center_distance_mm: float = DEFAULT_DISTANCE_MM,
    class_aware: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(allowed, iou, distance_mm)``, each (n_preds, n_refs): which pairs may match, and why."""
    if not preds or not refs:
        empty = np.zeros((len(preds), len(refs)))
        return empty.astype(bool), empty, empty
    pc, ps = _lesion_arrays(preds)
    rc, rs = _lesion_arrays(refs)
    iou = box_iou_3d(pc, ps, rc, rs)
    distance = np.linalg.norm(pc[:, None] - rc[None], axis=2)
    allowed = (iou >= iou_threshold) & (distance <= max_center_distance_mm)
    if class_aware:
        allowed &= np.array([[p["class"] == r["class"] for r in refs] for p in preds], dtype=bool)
    return allowed, iou, distance


# --- matching -------------------------------------------------------------------------------------------------
def match_lesions(
    preds: Sequence[Lesion],
    refs: Sequence[Lesion],
    *,
    iou_threshold: float = DEFAULT_IOU,
    max_center_distance_mm: float = DEFAULT_DISTANCE_MM,
    class_aware: bool = True,
    score_threshold: float | None = None,
) -> dict:
    """One scan's one-to-one matching (Hungarian; predictions below ``score_threshold`` ignored).

    Returns ``{"matches": [(pred_index, ref_index, iou, distance_mm)], "unmatched_preds": [...],
    "unmatched_refs": [...]}`` with indices into the given lists; ignored predictions are in neither list.
    """
    kept = [i for i, p in enumerate(preds) if score_threshold is None or float(p["score"]) >= score_threshold]
    allowed, iou, distance = pair_table(
        [preds[i] for i in kept],
        refs,
        iou_threshold=iou_threshold,
        max_center_distance_mm=max_center_distance_mm,
        class_aware=class_aware,
    )
    pairs = _max_matching(allowed, weight=iou)
    matches = [(kept[p], r, float(iou[p, r]), float(distance[p, r])) for p, r in pairs]
    matched_preds = {m[0] for m in matches}
    matched_refs = {m[1] for m in matches}
    return {
        "matches": matches,
        "unmatched_preds": [i for i in kept if i not in matched_preds],
        "unmatched_refs": [r for r in range(len(refs)) if r not in matched_refs],
    }


def ranked_hits(
    preds: Sequence[Lesion],
    refs: Sequence[Lesion],
    *,
    iou_threshold: float = DEFAULT_IOU,
    max_center_distance_mm: float = DEFAULT_DISTANCE_MM,
    class_aware: bool = True,
) -> np.ndarray:
    """Per prediction (in input order): True if it raises the scan's maximum matching size when predictions
    are added in descending score order (ties in input order). See the module docstring."""
    allowed, _, _ = pair_table(
        preds, refs, iou_threshold=iou_threshold, max_center_distance_mm=max_center_distance_mm, class_aware=class_aware
    )
    order = np.argsort(-np.array([float(p["score"]) for p in preds]), kind="stable")
    hits = np.zeros(len(preds), dtype=bool)
    size = 0
    for k, index in enumerate(order):
        if size == len(refs) or not allowed[index].any():
            continue
        new_size = len(_max_matching(allowed[order[: k + 1]]))
        hits[index] = new_size > size
        size = new_size
    return hits


# --- curves ---------------------------------------------------------------------------------------------------
def pooled_ranking(
    cases: Sequence[Case],
    *,
    lesion_class: str | None = None,
    class_aware: bool = True,
    iou_threshold: float = DEFAULT_IOU,
    max_center_distance_mm: float = DEFAULT_DISTANCE_MM,
) -> dict:
    """Cumulative hits and false positives at each distinct score, all scans pooled.

    With ``lesion_class``, only predictions and references of that class take part. Returns
    ``{"scores", "tp", "fp"}`` (arrays, descending score, one entry per distinct score), ``"n_refs"``,
    ``"n_scans"``.
    """
    scores, flags, n_refs = [], [], 0
    for preds, refs in cases:
        if lesion_class is not None:
            preds = [p for p in preds if p["class"] == lesion_class]
            refs = [r for r in refs if r["class"] == lesion_class]
        n_refs += len(refs)
        flags.append(
            ranked_hits(
                preds,
                refs,
                iou_threshold=iou_threshold,
                max_center_distance_mm=max_center_distance_mm,
                class_aware=class_aware,
            )
        )
        scores.append(np.array([float(p["score"]) for p in preds]))
    scores = np.concatenate(scores) if scores else np.zeros(0)
    flags = np.concatenate(flags) if flags else np.zeros(0, dtype=bool)
    order = np.argsort(-scores, kind="stable")
    scores, flags = scores[order], flags[order]
    tp, fp = np.cumsum(flags), np.cumsum(~flags)
    last_of_tie = np.r_[scores[1:] != scores[:-1], True] if scores.size else np.zeros(0, dtype=bool)
    return {
        "scores": scores[last_of_tie],
        "tp": tp[last_of_tie],
        "fp": fp[last_of_tie],
        "n_refs": n_refs,
        "n_scans": len(cases),
    }


def precision_recall_curve(ranking: Mapping) -> tuple[np.ndarray, np.ndarray]:
    """``(precision, recall)`` at each distinct score of a :func:`pooled_ranking`."""
    tp, fp = ranking["tp"].astype(float), ranking["fp"].astype(float)
    precision = tp / np.maximum(tp + fp, 1)
    recall = tp / ranking["n_refs"] if ranking["n_refs"] else np.full_like(tp, np.nan)
    return precision, recall


def average_precision(precision: np.ndarray, recall: np.ndarray) -> float:
    """VOC all-point interpolated AP (area under the monotone precision envelope over recall)."""
    if np.any(np.isnan(recall)):
        return float("nan")
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[0.0], precision, [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    steps = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[steps + 1] - mrec[steps]) * mpre[steps + 1]))


def froc_curve(ranking: Mapping) -> tuple[np.ndarray, np.ndarray]:
    """``(fp_per_scan, sensitivity)`` of a :func:`pooled_ranking`, starting at (0, 0)."""
    fp_per_scan = np.concatenate([[0.0], ranking["fp"] / max(ranking["n_scans"], 1)])
    if not ranking["n_refs"]:
        return fp_per_scan, np.full_like(fp_per_scan, np.nan)
    return fp_per_scan, np.concatenate([[0.0], ranking["tp"] / ranking["n_refs"]])


def sensitivity_at_fp(fp_per_scan: np.ndarray, sensitivity: np.ndarray, fp_limit: float) -> float:
    """Highest sensitivity on a FROC curve with at most ``fp_limit`` mean false positives per scan."""
    reachable = fp_per_scan <= fp_limit + 1e-12
    return float(np.max(sensitivity[reachable]))


def score_at_fp(ranking: Mapping, fp_limit: float) -> float:
    """The lowest detection score at which a :func:`pooled_ranking` still has at most ``fp_limit`` mean false
    positives per scan: the display threshold (model card ``lesion_threshold``) for that operating point. nan
    when even the highest-scoring detections exceed it, or there are none."""
    within = ranking["fp"] / max(ranking["n_scans"], 1) <= fp_limit + 1e-12
    return float(ranking["scores"][within].min()) if within.any() else float("nan")


# --- summaries ------------------------------------------------------------------------------------------------
def recall_at_fp_per_scan(
    cases: Sequence[Case],
    fp_per_scan: float = 1.0,
    *,
    class_aware: bool = False,
    iou_threshold: float = DEFAULT_IOU,
    max_center_distance_mm: float = DEFAULT_DISTANCE_MM,
) -> float:
    """Lesion sensitivity at ``fp_per_scan`` mean false positives per scan (FROC point), all classes pooled.

    Class-agnostic by default (a lesion counts as found whatever class the prediction gives it); with
    ``class_aware`` a hit must also have the right class. ``cases`` = list of ``(pred_list, ref_list)``.
    """
    ranking = pooled_ranking(
        cases, class_aware=class_aware, iou_threshold=iou_threshold, max_center_distance_mm=max_center_distance_mm
    )
    return sensitivity_at_fp(*froc_curve(ranking), fp_per_scan)


def evaluate_lesions(
    cases: Sequence[Case],
    classes: Iterable[str] | None = None,
    *,
    iou_threshold: float = DEFAULT_IOU,
    max_center_distance_mm: float = DEFAULT_DISTANCE_MM,
    score_threshold: float | None = None,
    fp_per_scan: Sequence[float] = (1.0, 4.0),
) -> dict:
    """All lesion metrics over a set of scans.

    Per class (``classes`` default: every class found in predictions or references): AP, and precision,
    recall, TP, FP, FN at ``score_threshold`` (None = every prediction given); ``mAP``, ``mPrecision``,
    ``mRecall``: macro means over classes with reference lesions (a class with no prediction has precision nan
    and is left out of ``mPrecision``). ``class_agnostic``: the same computed with
    classes ignored. ``froc``: ``{"class_agnostic" | "class_aware": {fp: sensitivity}}`` over all classes pooled.
    """
    options = {"iou_threshold": iou_threshold, "max_center_distance_mm": max_center_distance_mm}
    if classes is None:
        classes = sorted({les["class"] for preds, refs in cases for les in [*preds, *refs]})
    per_class = {c: _detection_summary(cases, c, True, score_threshold, options) for c in classes}
    with_refs = [c for c in per_class if per_class[c]["n_refs"] > 0]
    froc = {}
    for mode, aware in (("class_agnostic", False), ("class_aware", True)):
        curve = froc_curve(pooled_ranking(cases, class_aware=aware, **options))
        froc[mode] = {float(f): sensitivity_at_fp(*curve, f) for f in fp_per_scan}
    return {
        "per_class": per_class,
        "mAP": _macro(per_class, with_refs, "ap"),
        "mPrecision": _macro(per_class, with_refs, "precision"),
        "mRecall": _macro(per_class, with_refs, "recall"),
        "class_agnostic": _detection_summary(cases, None, False, score_threshold, options),
        "froc": froc,
        "n_scans": len(cases),
    }


def _detection_summary(cases, lesion_class, class_aware, score_threshold, options) -> dict:
    """AP plus precision / recall / counts at the operating point for one class (or all, agnostic)."""
    tp = fp = fn = 0
    for preds, refs in cases:
        if lesion_class is not None:
            preds = [p for p in preds if p["class"] == lesion_class]
            refs = [r for r in refs if r["class"] == lesion_class]
        m = match_lesions(preds, refs, class_aware=class_aware, score_threshold=score_threshold, **options)
        tp, fp, fn = tp + len(m["matches"]), fp + len(m["unmatched_preds"]), fn + len(m["unmatched_refs"])
    ranking = pooled_ranking(cases, lesion_class=lesion_class, class_aware=class_aware, **options)
    return {
        "ap": average_precision(*precision_recall_curve(ranking)) if ranking["n_refs"] else float("nan"),
        "precision": tp / (tp + fp) if tp + fp else float("nan"),
        "recall": tp / (tp + fn) if tp + fn else float("nan"),
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "n_refs": tp + fn,
    }


def _macro(per_class: dict, classes: list[str], key: str) -> float:
    values = [per_class[c][key] for c in classes if not np.isnan(per_class[c][key])]
    return float(np.mean(values)) if values else float("nan")


def _max_matching(allowed: np.ndarray, weight: np.ndarray | None = None) -> list[tuple[int, int]]:
    """Maximum-cardinality matching of an (n, m) boolean table; among those, the largest total ``weight`` in
    [0, 1] (Hungarian: disallowed pairs cost more than any set of allowed ones)."""
    if allowed.size == 0 or not allowed.any():
        return []
    gain = np.ones(allowed.shape) if weight is None else np.clip(weight, 0.0, 1.0)
    forbidden_cost = min(allowed.shape) + 1.0
    cost = np.where(allowed, 1.0 - gain, forbidden_cost)
    rows, cols = linear_sum_assignment(cost)
    return [(int(r), int(c)) for r, c in zip(rows, cols, strict=True) if allowed[r, c]]


def _boxes(centers, sizes) -> tuple[np.ndarray, np.ndarray]:
    centers = np.asarray(centers, dtype=np.float64).reshape(-1, 3)
    sizes = np.asarray(sizes, dtype=np.float64)
    sizes = np.repeat(sizes.reshape(-1, 1), 3, axis=1) if sizes.ndim <= 1 else sizes.reshape(-1, 3)
    if len(sizes) != len(centers):
        raise ValueError(f"{len(centers)} centres but {len(sizes)} sizes")
    return centers, sizes


def _lesion_arrays(lesions: Sequence[Lesion]) -> tuple[np.ndarray, np.ndarray]:
    centers = np.array([les["center_ras"] for les in lesions], dtype=np.float64).reshape(-1, 3)
    sizes = np.array([np.broadcast_to(np.asarray(les["size_mm"], dtype=np.float64), (3,)) for les in lesions])
    return centers, sizes
