"""Evaluating a checkpoint end to end, as a user runs it: per-vertebra Dice, identification (VerSe 20 mm rule)
and lesion detection (recall at ≤ 1 false positive per scan), on fresh phantoms or a dataset folder."""

from __future__ import annotations

import time

import numpy as np

from SpineSegLib.inference import Segmenter
from SpineSegLib.labels import load_label_table
from SpineSegLib.phantom import generate_phantom

from .dataset import Case, load_dataset
from .metrics import (
    identification_metrics,
    per_vertebra_dice,
    per_vertebra_instance_dice,
    pooled_ranking,
    pooled_region_means,
    recall_at_fp_per_scan,
    region_means,
    score_at_fp,
    spine_dice,
)
from .phantoms import phantom_config

EVALUATION_SEED_START = 900_000  # training seeds stay far below this
DETECTION_DISTANCE_MM = 10.0  # a detection hits a lesion when its centre is within this distance
# ... whatever its class or box: the matching rule of the lesion metrics (metrics.lesions) for the quality target
DETECTION_MATCHING = {"class_aware": False, "iou_threshold": 0.0, "max_center_distance_mm": DETECTION_DISTANCE_MM}


def phantom_cases(count: int, seed_start: int = EVALUATION_SEED_START, spacing: float = 1.25):
    for seed in range(seed_start, seed_start + count):
        phantom = generate_phantom(phantom_config(seed, spacing))
        yield Case(f"phantom_{seed:06d}", phantom.ct, phantom.labels, phantom.lesions,
                   {"region": phantom.config.region, "variant": phantom.config.variant})


def evaluate_cases(segmenter: Segmenter, cases, log=print) -> dict:
    table = load_label_table()
    per_case, dice_all, identified, references, lesion_pairs, vertebrae = [], [], 0, 0, [], []
    unnamed_all, spine_all = [], []
    for case in cases:
        started = time.perf_counter()
        result = segmenter(case.ct)
        seconds = time.perf_counter() - started
        pred, ref = result.labels.array, case.labels.array
        dice = per_vertebra_dice(pred, ref, table.values)
        unnamed = per_vertebra_instance_dice(pred, ref, table.values)
        unnamed_all += list(unnamed.values())
        spine_all.append(spine_dice(pred, ref))
        ident = identification_metrics(pred, ref, case.ct.affine, label_values=table.values)
        identified += ident["identification"].n_identified
        references += ident["identification"].n_reference
        dice_all += list(dice.values())
        vertebrae += [{"label": v, "dice": d} for v, d in dice.items()]
        lesion_pairs.append((result.lesions, case.lesions))
        row = {"case": case.case_id, **case.meta, "seconds": round(seconds, 2),
               "mean_dice": float(np.mean(list(dice.values()))) if dice else float("nan"),
               "min_dice": float(np.min(list(dice.values()))) if dice else float("nan"),
               "instance_dice": float(np.mean(list(unnamed.values()))) if unnamed else float("nan"),
               "spine_dice": spine_all[-1],
               "id_rate": ident["id_rate"], "lesions_ref": len(case.lesions), "lesions_pred": len(result.lesions),
               "dice": {table.by_value(v).name: round(d, 4) for v, d in dice.items()},
               "dice_by_region": region_means(dice)}
        per_case.append(row)
        log(f"{case.case_id} ({case.meta.get('region', '')}): mean Dice {row['mean_dice']:.3f} "
            f"(names aside {row['instance_dice']:.3f}, spine {row['spine_dice']:.3f}), "
            f"ID {row['id_rate']:.2%}, lesions {len(result.lesions)} found / {len(case.lesions)}, {seconds:.1f} s")
    summary = {
        "cases": len(per_case),
        "mean_vertebra_dice": float(np.mean(dice_all)) if dice_all else float("nan"),
        "identification_rate": identified / references if references else float("nan"),
        "mean_instance_dice": float(np.mean(unnamed_all)) if unnamed_all else float("nan"),
        "spine_dice": float(np.mean(spine_all)) if spine_all else float("nan"),
        "lesion_recall_at_1fp": recall_at_fp_per_scan(lesion_pairs, 1.0, **DETECTION_MATCHING),
        "lesion_recall_at_1fp_strict": recall_at_fp_per_scan(lesion_pairs, 1.0),
        "lesion_score_at_1fp": score_at_fp(pooled_ranking(lesion_pairs, **DETECTION_MATCHING), 1.0),
        "mean_seconds": float(np.mean([r["seconds"] for r in per_case])) if per_case else float("nan"),
        "dice_by_region": pooled_region_means(vertebrae),
    }
    return {"summary": summary, "cases": per_case}


def evaluate(model, count: int = 10, seed_start: int = EVALUATION_SEED_START, data: str | None = None,
             device: str = "auto", fast: bool = False, lesion_threshold: float | None = None, log=print) -> dict:
    """``lesion_threshold`` replaces the model card's for this evaluation (on the calibrated scale where the card's
    lesion calibration applies): run on tuning cases with a low one, the summary's ``lesion_score_at_1fp`` is the
    threshold for a lesion list with at most one false positive per scan."""
    segmenter = Segmenter(model, device=device, fast=fast, lesion_threshold=lesion_threshold)
    cases = load_dataset(data) if data else phantom_cases(count, seed_start)
    report = evaluate_cases(segmenter, cases, log)
    report["model"] = segmenter.model.card["name"]
    report["mode"] = "fast" if fast else "full"
    report["data"] = data or f"{count} phantoms, seeds {seed_start}-{seed_start + count - 1}"
    calibration, report["lesion_threshold"] = segmenter.lesion_rule("coarse" if fast else "fine")
    report["lesion_scores"] = "calibrated" if calibration else "heatmap peak"
    return report


def evaluate_report(models: list[str], report_dir: str, data: str | None = None, *, count: int = 10,
                    seed_start: int = EVALUATION_SEED_START, layout: str = "auto", split: str | None = None,
                    limit: int | None = None, baseline: str | None = None, n_resamples: int = 10_000,
                    seed: int = 0, device: str = "auto", fast: bool = False, surface: bool = True,
                    log=print) -> dict:
    """One or more models on the same cases, written as a report folder (``protocols.report``): report.json,
    report.md, cases.csv and figures, with 95 % patient-level BCa intervals and, with ``baseline``, paired
    Wilcoxon tests with Holm's correction."""
    from .protocols.cases import evaluation_cases
    from .protocols.evaluation import evaluate_models

    if data:
        cases = evaluation_cases(data, layout, split, limit)
        described = f"{data}" + (f" (split {split})" if split else "") + f", {len(cases)} cases"
    else:
        cases = list(phantom_cases(count, seed_start))
        for case in cases:
            case.meta.setdefault("domain", "phantom")
        described = f"{count} phantoms, seeds {seed_start}-{seed_start + count - 1}"
    return evaluate_models(models, cases, report_dir, baseline=baseline, n_resamples=n_resamples, seed=seed,
                           device=device, fast=fast, surface=surface, data_description=described, log=log)
