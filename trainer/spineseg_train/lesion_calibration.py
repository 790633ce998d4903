"""Fitting a model's lesion calibration on held-out cases (``spineseg-train calibrate-lesions``).

The segmenter lists every heatmap peak from a low candidate threshold with calibration off; each detection is
flagged a hit or a false alarm by the evaluation's own rule (class-agnostic, centre within
``evaluate.DETECTION_DISTANCE_MM``, one detection per lesion); per class a logistic regression on the peak's logit
gives the chance of a hit (``SpineSegLib.lesion_scores``). A small pull towards slope 1 and intercept 0 keeps a
class with few detections near its raw peaks. Each class's sizes are scaled by the median ratio of the true
size to the measured one over its hits. The list's threshold is then the calibrated score at which the
pooled ranking of these cases keeps ``fp_per_scan`` false positives per scan. Fit on tuning cases, never on the
ones the card's metrics are measured on.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from scipy.optimize import minimize

from SpineSegLib.checkpoint import CARD_FILE
from SpineSegLib.inference import Segmenter
from SpineSegLib.io import write_json
from SpineSegLib.lesion_scores import LesionCalibration, logit

from .dataset import load_dataset
from .evaluate import DETECTION_DISTANCE_MM, DETECTION_MATCHING, phantom_cases
from .metrics import pooled_ranking, recall_at_fp_per_scan, score_at_fp
from .metrics.lesions import ranked_hits

TUNING_SEED_START = 800_000  # phantoms for choices about the engine: apart from training and evaluation seeds
CANDIDATE_THRESHOLD = 0.05
PRIOR_WEIGHT = 1.0  # strength of the pull towards the raw peak (slope 1, intercept 0), in log-likelihood units


def detection_samples(lesion_pairs, classes) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per class, pooled over the cases: the peaks of its detections, whether each hit a lesion, and for each hit
    on a lesion of its own class the ratio of that lesion's size to the measured one (nan otherwise)."""
    rows = {name: [] for name in classes}
    for predictions, references in lesion_pairs:
        flags = ranked_hits(predictions, references, **DETECTION_MATCHING)
        for lesion, hit in zip(predictions, flags):
            ratio = _size_ratio(lesion, references) if hit else np.nan
            rows[lesion["class"]].append((float(lesion["peak"]), bool(hit), ratio))
    return {name: tuple(np.array(column) for column in zip(*rows[name])) if rows[name]
            else (np.zeros(0), np.zeros(0, dtype=bool), np.zeros(0)) for name in classes}


def _size_ratio(lesion, references) -> float:
    """True size over measured size, against the nearest reference of the lesion's class within reach."""
    same = [ref for ref in references if ref["class"] == lesion["class"]]
    if not same or not lesion.get("size_mm"):
        return np.nan
    distances = [np.linalg.norm(np.subtract(ref["center_ras"], lesion["center_ras"])) for ref in same]
    nearest = int(np.argmin(distances))
    if distances[nearest] > DETECTION_DISTANCE_MM:
        return np.nan
    return float(np.mean(same[nearest]["size_mm"])) / float(lesion["size_mm"])  # extents or one diameter


def fit_class(peaks: np.ndarray, hits: np.ndarray, prior_weight: float = PRIOR_WEIGHT) -> tuple[float, float]:
    """(slope, intercept) of P(hit) = σ(slope · logit(peak) + intercept), by penalised maximum likelihood."""
    x = np.array([logit(p) for p in peaks])
    y = hits.astype(np.float64)

    def loss(w):
        z = w[0] * x + w[1]
        return np.sum(np.logaddexp(0.0, z) - y * z) + prior_weight * ((w[0] - 1.0) ** 2 + w[1] ** 2) / 2

    slope, intercept = minimize(loss, np.array([1.0, 0.0]), method="L-BFGS-B",
                                bounds=[(1e-3, None), (None, None)]).x
    return float(slope), float(intercept)


def rescored(lesion_pairs, calibration: LesionCalibration):
    """The cases' detections with their calibrated scores and sizes."""
    return [([{**lesion, "score": calibration.score(lesion["class"], lesion["peak"]),
               "size_mm": calibration.size_mm(lesion["class"], lesion["size_mm"])} for lesion in predictions],
             references) for predictions, references in lesion_pairs]


def fit_calibration(lesion_pairs, classes, stage: str, fp_per_scan: float = 1.0,
                    candidate_threshold: float = CANDIDATE_THRESHOLD) -> tuple[LesionCalibration, dict]:
    """The calibration and its provenance (detections and hits per class, recall before and after)."""
    if not any(references for _, references in lesion_pairs):
        raise ValueError("these cases hold no lesions: a calibration learns from hits and misses, it needs both")
    samples = detection_samples(lesion_pairs, classes)
    if not any(samples[name][0].size for name in classes):
        raise ValueError(f"the model found no heatmap peak of {candidate_threshold} or more in these cases")
    fitted = {name: fit_class(*samples[name][:2]) for name in classes}
    ratios = {name: samples[name][2][np.isfinite(samples[name][2])] for name in classes}
    size_scale = {name: float(np.median(ratios[name])) for name in classes if ratios[name].size}
    draft = LesionCalibration(stage, candidate_threshold, 0.0, fitted, size_scale)
    calibrated = rescored(lesion_pairs, draft)
    threshold = score_at_fp(pooled_ranking(calibrated, **DETECTION_MATCHING), fp_per_scan)
    calibration = LesionCalibration(stage, candidate_threshold, round(float(threshold), 4), fitted, size_scale)
    report = {
        "cases": len(lesion_pairs),
        "lesions": int(sum(len(references) for _, references in lesion_pairs)),
        "detections": {name: int(samples[name][0].size) for name in classes},
        "hits": {name: int(samples[name][1].sum()) for name in classes},
        "fp_per_scan": fp_per_scan,
        "recall_raw": round(recall_at_fp_per_scan(lesion_pairs, fp_per_scan, **DETECTION_MATCHING), 4),
        "recall_calibrated": round(recall_at_fp_per_scan(calibrated, fp_per_scan, **DETECTION_MATCHING), 4),
        "recall_strict_raw": round(recall_at_fp_per_scan(lesion_pairs, fp_per_scan), 4),
        "recall_strict_calibrated": round(recall_at_fp_per_scan(calibrated, fp_per_scan), 4),
        "size_samples": {name: int(ratios[name].size) for name in classes},
    }
    return calibration, report


def calibrate_lesions(model, count: int = 16, seed_start: int = TUNING_SEED_START, data: str | None = None,
                      device: str = "auto", fast: bool = False, fp_per_scan: float = 1.0,
                      update_card: bool = False, log=print) -> dict:
    """Run the model on the cases, fit its calibration for the pass that lists its lesions in this mode and
    (``update_card``) write it into its card, beside the other pass's if there is one."""
    segmenter = Segmenter(model, device=device, fast=fast, lesion_threshold=CANDIDATE_THRESHOLD,
                          calibrate_lesions=False)
    cases = load_dataset(data) if data else phantom_cases(count, seed_start)
    lesion_pairs = []
    for case in cases:
        result = segmenter(case.ct)
        lesion_pairs.append((result.lesions, case.lesions))
        log(f"{case.case_id}: {len(result.lesions)} detections, {len(case.lesions)} lesions")
    classes = segmenter.table.lesion_class_names
    calibration, report = fit_calibration(lesion_pairs, classes, "coarse" if fast else "fine", fp_per_scan)
    report["data"] = data or f"{count} phantoms, seeds {seed_start}-{seed_start + count - 1}"
    document = {**calibration.to_card(), "fitted_on": report}
    if update_card:
        card_path = Path(model) / CARD_FILE
        card = json.loads(card_path.read_text())
        card.setdefault("postprocessing", {}).setdefault("lesion_calibration", {})[calibration.stage] = document
        write_json(card_path, card)
    return document
