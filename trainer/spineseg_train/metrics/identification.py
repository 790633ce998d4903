"""Vertebra identification metrics (VerSe challenge conventions) from label maps or centroids.

Conventions
-----------
* A centroid is the mean voxel index of a label mapped through the 4×4 voxel → RAS affine, in mm.
  Centroids are dicts ``{label_value: array([x, y, z])}``; background (0) is never a vertebra.
* **Identification rate** (VerSe ``id.rate``): a reference vertebra is identified when the predicted centroid
  closest to it (of any label) lies within ``max_distance_mm`` (≤, default 20 mm) *and* carries the same label.
  Rate = identified / number of reference vertebrae.
* **Localisation distance** (VerSe ``d_mean``): per reference vertebra, the distance to the predicted centroid
  of the same label (nan if that label is not predicted).
* **ID accuracy**: predicted and reference centroids are matched one-to-one by the Hungarian algorithm on
  centroid distance, pairs farther than ``max_distance_mm`` forbidden; the matching has as many pairs as
  possible and, among those, the least total distance. A reference vertebra counts as correct when its matched
  prediction has its label; unmatched reference vertebrae count as wrong.
* Rates are nan when the reference has no vertebra.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment

Centroids = Mapping[int, np.ndarray]


@dataclass(frozen=True)
class IdentificationResult:
    """``rate`` = identified / reference vertebrae; ``details`` has one dict per reference vertebra."""

    rate: float
    n_reference: int
    n_identified: int
    mean_localisation_mm: float  # over reference labels that are also predicted
    details: list[dict] = field(default_factory=list)


@dataclass(frozen=True)
class IdAccuracyResult:
    """``accuracy`` = correctly labelled matches / reference vertebrae; ``details`` one dict per reference."""

    accuracy: float
    n_reference: int
    n_correct: int
    n_matched: int
    details: list[dict] = field(default_factory=list)


def centroids_mm(
    label_map: np.ndarray, affine: np.ndarray, label_values: Iterable[int] | None = None
) -> dict[int, np.ndarray]:
    """``{label: centroid in RAS mm}`` for each label present (restricted to ``label_values`` if given).

    Sums voxel indices slice by slice along the first axis, so a full CT volume needs no index arrays.
    """
    label_map = np.asarray(label_map)
    if label_map.ndim != 3:
        raise ValueError(f"label map must be 3D, got shape {label_map.shape}")
    if label_map.size == 0 or label_map.max() <= 0:
        return {}
    top = int(label_map.max()) + 1
    counts = np.zeros(top)
    sums = np.zeros((3, top))
    j_index, k_index = np.indices(label_map.shape[1:], dtype=np.float64)
    for i, plane in enumerate(label_map):
        flat = plane.ravel().astype(np.int64)
        n = np.bincount(flat, minlength=top)
        counts += n
        sums[0] += i * n
        sums[1] += np.bincount(flat, weights=j_index.ravel(), minlength=top)
        sums[2] += np.bincount(flat, weights=k_index.ravel(), minlength=top)
    wanted = range(1, top) if label_values is None else [int(v) for v in label_values if 0 < int(v) < top]
    affine = np.asarray(affine, dtype=np.float64)
    result = {}
    for v in wanted:
        if counts[v] > 0:
            ijk = sums[:, v] / counts[v]
            result[v] = affine[:3, :3] @ ijk + affine[:3, 3]
    return result


def identification_rate(
    pred_centroids: Centroids, ref_centroids: Centroids, max_distance_mm: float = 20.0
) -> IdentificationResult:
    """VerSe identification rate; see the module docstring for the rule."""
    pred_labels, pred_xyz = _as_arrays(pred_centroids)
    details = []
    for label in sorted(ref_centroids):
        ref_xyz = np.asarray(ref_centroids[label], dtype=np.float64)
        entry = {"label": int(label), "identified": False, "closest_pred_label": None, "closest_distance_mm": np.nan}
        if len(pred_labels):
            distances = np.linalg.norm(pred_xyz - ref_xyz, axis=1)
            closest = int(np.argmin(distances))
            entry["closest_pred_label"] = int(pred_labels[closest])
            entry["closest_distance_mm"] = float(distances[closest])
            entry["identified"] = bool(distances[closest] <= max_distance_mm and pred_labels[closest] == label)
        same = pred_centroids.get(label)
        entry["localisation_mm"] = float(np.linalg.norm(np.asarray(same) - ref_xyz)) if same is not None else np.nan
        details.append(entry)
    n_identified = sum(d["identified"] for d in details)
    localisation = [d["localisation_mm"] for d in details if not np.isnan(d["localisation_mm"])]
    return IdentificationResult(
        rate=n_identified / len(details) if details else float("nan"),
        n_reference=len(details),
        n_identified=n_identified,
        mean_localisation_mm=float(np.mean(localisation)) if localisation else float("nan"),
        details=details,
    )


def id_accuracy(pred_centroids: Centroids, ref_centroids: Centroids, max_distance_mm: float = 20.0) -> IdAccuracyResult:
    """Fraction of reference vertebrae whose Hungarian-matched prediction (≤ ``max_distance_mm``) has their label."""
    pred_labels, pred_xyz = _as_arrays(pred_centroids)
    ref_labels, ref_xyz = _as_arrays(ref_centroids)
    matches = _hungarian_within(ref_xyz, pred_xyz, max_distance_mm)
    details = []
    for r, label in enumerate(ref_labels):
        entry = {"label": int(label), "matched_pred_label": None, "distance_mm": np.nan, "correct": False}
        if r in matches:
            p, distance = matches[r]
            entry["matched_pred_label"] = int(pred_labels[p])
            entry["distance_mm"] = distance
            entry["correct"] = bool(pred_labels[p] == label)
        details.append(entry)
    n_correct = sum(d["correct"] for d in details)
    return IdAccuracyResult(
        accuracy=n_correct / len(details) if details else float("nan"),
        n_reference=len(details),
        n_correct=n_correct,
        n_matched=len(matches),
        details=details,
    )


def identification_metrics(
    pred_labels: np.ndarray,
    ref_labels: np.ndarray,
    affine: np.ndarray,
    max_distance_mm: float = 20.0,
    label_values: Iterable[int] | None = None,
) -> dict:
    """Both metrics from two label maps on the same grid: ``{"id_rate", "id_accuracy", "mean_localisation_mm",
    "identification": IdentificationResult, "matching": IdAccuracyResult}``."""
    values = None if label_values is None else list(label_values)
    pred = centroids_mm(pred_labels, affine, values)
    ref = centroids_mm(ref_labels, affine, values)
    rate = identification_rate(pred, ref, max_distance_mm)
    accuracy = id_accuracy(pred, ref, max_distance_mm)
    return {
        "id_rate": rate.rate,
        "id_accuracy": accuracy.accuracy,
        "mean_localisation_mm": rate.mean_localisation_mm,
        "identification": rate,
        "matching": accuracy,
    }


def _as_arrays(centroids: Centroids) -> tuple[np.ndarray, np.ndarray]:
    labels = sorted(centroids)
    xyz = np.array([np.asarray(centroids[v], dtype=np.float64) for v in labels]).reshape(len(labels), 3)
    return np.array(labels, dtype=np.int64), xyz


def _hungarian_within(a: np.ndarray, b: np.ndarray, max_distance: float) -> dict[int, tuple[int, float]]:
    """``{row of a: (row of b, distance)}``: maximum-cardinality, then minimum-distance matching within range.

    Forbidden pairs cost more than any sum of allowed ones, so the optimum uses as many allowed pairs as
    possible; forbidden pairs it is forced into are then dropped.
    """
    if len(a) == 0 or len(b) == 0:
        return {}
    distances = np.linalg.norm(a[:, None, :] - b[None, :, :], axis=2)
    allowed = distances <= max_distance
    forbidden_cost = (max_distance + 1.0) * (min(len(a), len(b)) + 1)
    rows, cols = linear_sum_assignment(np.where(allowed, distances, forbidden_cost))
    return {int(r): (int(c), float(distances[r, c])) for r, c in zip(rows, cols, strict=True) if allowed[r, c]}
