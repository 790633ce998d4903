"""Summaries of one condition's case scores, each with a 95 % patient-level BCa bootstrap interval.

* Vertebra-level metrics (Dice, per-region Dice, identification rate, ID accuracy, HD95, ASSD) pool the values of
  every reference vertebra (each vertebra weighs the same; HD95/ASSD leave out vertebrae that were not predicted
  and count them in ``n_undefined``); the bootstrap resamples patients with all their vertebrae
  (:func:`~spineseg_train.metrics.bootstrap_ci`).
* Lesion metrics over all scans pooled: class-agnostic AP and FROC sensitivity at 1 and 4 false positives per scan
  with the strict matching (box IoU ≥ 0.3 and centres ≤ 5 mm), class-aware mAP, and recall at 1 FP per scan with the
  lenient rule of ``spineseg-train evaluate`` (centre ≤ 10 mm). AP and FROC intervals resample patients too: each
  replicate pools the ranked hits of the drawn patients' scans (a scan drawn twice counts twice).
* With fewer than two patients, or a metric with no values, the interval is nan.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np

from ..metrics import REGIONS, bootstrap_ci, evaluate_lesions, recall_at_fp_per_scan
from ..metrics.lesions import (
    DEFAULT_DISTANCE_MM,
    DEFAULT_IOU,
    average_precision,
    froc_curve,
    precision_recall_curve,
    ranked_hits,
    sensitivity_at_fp,
)
from .scoring import CaseScore

LENIENT_DISTANCE_MM = 10.0  # the existing evaluate's lesion rule (centre within 10 mm, any overlap)
VERTEBRA_METRICS = {  # name -> (key in the vertebra records, transform)
    "mean_vertebra_dice": ("dice", float),
    "identification_rate": ("identified", float),
    "id_accuracy": ("id_correct", float),
    "hd95_mm": ("hd95_mm", float),
    "assd_mm": ("assd_mm", float),
}


def interval(values: Sequence[float], patients: Sequence[str], n_resamples: int, seed: int, statistic=None) -> dict:
    values = np.asarray(values, dtype=float)
    keep = ~np.isnan(values)
    values, patients = values[keep], [p for p, k in zip(patients, keep) if k]
    entry = {"estimate": float("nan"), "low": float("nan"), "high": float("nan"), "n": int(values.size),
             "n_patients": len(set(patients))}
    if values.size == 0:
        return entry
    entry["estimate"] = float(np.mean(values)) if statistic is None else float(statistic(values))
    if entry["n_patients"] < 2 or n_resamples < 1:
        return entry
    try:
        with warnings.catch_warnings():  # a degenerate bootstrap distribution gives nan bounds, reported as such
            warnings.simplefilter("ignore")
            ci = bootstrap_ci(values, patients, statistic, n_resamples=n_resamples, seed=seed)
    except ValueError:
        return entry
    entry.update(low=_finite(ci.low), high=_finite(ci.high))
    return entry


def _finite(value: float) -> float:
    return float(value) if value is not None and math.isfinite(value) else float("nan")


def vertebra_values(scores: list[CaseScore], key: str, region: str | None = None) -> tuple[list[float], list[str]]:
    values, patients = [], []
    for score in scores:
        for v in score.vertebrae:
            if region is None or v["region"] == region:
                values.append(float(v[key]))
                patients.append(score.patient)
    return values, patients


# --- lesions: pooled rankings of resampled scans ---------------------------------------------------------------
def scan_rankings(scores: list[CaseScore], iou: float = DEFAULT_IOU, distance: float = DEFAULT_DISTANCE_MM):
    """Per scan ``(scores, hits, n_refs)`` of its predictions (class-agnostic ranked hits)."""
    parts = []
    for s in scores:
        hits = ranked_hits(s.lesions_pred, s.lesions_ref, iou_threshold=iou, max_center_distance_mm=distance,
                           class_aware=False)
        parts.append((np.array([float(p["score"]) for p in s.lesions_pred]), hits, len(s.lesions_ref)))
    return parts


def pooled_from_parts(parts) -> dict:
    """The :func:`~spineseg_train.metrics.pooled_ranking` dict of a list of scans' ranked hits."""
    scores = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0)
    flags = np.concatenate([p[1] for p in parts]).astype(bool) if parts else np.zeros(0, dtype=bool)
    order = np.argsort(-scores, kind="stable")
    scores, flags = scores[order], flags[order]
    tp, fp = np.cumsum(flags), np.cumsum(~flags)
    last = np.r_[scores[1:] != scores[:-1], True] if scores.size else np.zeros(0, dtype=bool)
    return {"scores": scores[last], "tp": tp[last], "fp": fp[last], "n_refs": int(sum(p[2] for p in parts)),
            "n_scans": len(parts)}


def lesion_statistic(parts, kind: str, fp_rate: float = 1.0):
    """A statistic of pooled scan indices (floats) for :func:`bootstrap_ci`: ``ap`` or ``froc``."""

    def statistic(indices: np.ndarray) -> float:
        ranking = pooled_from_parts([parts[int(i)] for i in indices])
        if not ranking["n_refs"]:
            return float("nan")
        if kind == "ap":
            return average_precision(*precision_recall_curve(ranking))
        return sensitivity_at_fp(*froc_curve(ranking), fp_rate)

    return statistic


def lesion_summary(scores: list[CaseScore], n_resamples: int, seed: int) -> dict:
    cases = [(s.lesions_pred, s.lesions_ref) for s in scores]
    n_refs = sum(len(s.lesions_ref) for s in scores)
    out = {"n_reference": n_refs, "n_predicted": sum(len(s.lesions_pred) for s in scores),
           "criteria": {"iou": DEFAULT_IOU, "distance_mm": DEFAULT_DISTANCE_MM}}
    parts = scan_rankings(scores)
    indices = [float(i) for i in range(len(scores))]
    patients = [s.patient for s in scores]
    for name, kind, rate in (("ap", "ap", 1.0), ("froc_at_1fp", "froc", 1.0), ("froc_at_4fp", "froc", 4.0)):
        if n_refs == 0:
            out[name] = {"estimate": float("nan"), "low": float("nan"), "high": float("nan"), "n": 0,
                         "n_patients": len(set(patients))}
            continue
        out[name] = interval(indices, patients, n_resamples, seed, lesion_statistic(parts, kind, rate))
    full = evaluate_lesions(cases, classes=["fracture", "lytic", "sclerotic"]) if scores else {}
    out["mAP_class_aware"] = float(full.get("mAP", float("nan")))
    out["per_class_ap"] = {c: float(v["ap"]) for c, v in full.get("per_class", {}).items()}
    out["recall_at_1fp_lenient"] = recall_at_fp_per_scan(cases, 1.0, iou_threshold=0.0,
                                                         max_center_distance_mm=LENIENT_DISTANCE_MM) \
        if n_refs else float("nan")
    return out


# --- the summary ------------------------------------------------------------------------------------------------
def summarise(scores: list[CaseScore], n_resamples: int = 10_000, seed: int = 0) -> dict:
    summary = {"cases": len(scores), "patients": len({s.patient for s in scores})}
    for name, (key, _) in VERTEBRA_METRICS.items():
        values, patients = vertebra_values(scores, key)
        summary[name] = interval(values, patients, n_resamples, seed)
        if key in ("hd95_mm", "assd_mm"):
            summary[name]["n_undefined"] = int(np.isnan(np.asarray(values, dtype=float)).sum()) if values else 0
    summary["dice_by_region"] = {}
    for region in REGIONS:
        values, patients = vertebra_values(scores, "dice", region)
        if values:
            summary["dice_by_region"][region] = interval(values, patients, n_resamples, seed)
    summary["id_rate_by_region"] = {}
    for region in REGIONS:
        values, patients = vertebra_values(scores, "identified", region)
        if values:
            summary["id_rate_by_region"][region] = interval(values, patients, n_resamples, seed)
    summary["dice_by_domain"] = {}
    for domain in sorted({s.domain for s in scores}):
        subset = [s for s in scores if s.domain == domain]
        values, patients = vertebra_values(subset, "dice")
        summary["dice_by_domain"][domain] = interval(values, patients, n_resamples, seed)
    summary["lesions"] = lesion_summary(scores, n_resamples, seed)
    summary["mean_seconds"] = float(np.mean([s.row["seconds"] for s in scores])) if scores else float("nan")
    return summary


def patient_means(scores: list[CaseScore], key: str) -> dict[str, float]:
    """``{patient: mean of the key over the patient's vertebrae}`` (the paired unit of the Wilcoxon test)."""
    values: dict[str, list[float]] = {}
    for score in scores:
        for v in score.vertebrae:
            if not math.isnan(float(v[key])):
                values.setdefault(score.patient, []).append(float(v[key]))
    return {p: float(np.mean(v)) for p, v in values.items()}
