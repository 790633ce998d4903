"""Robustness protocol (``spineseg-train protocol robustness``): one model on the clean cases and on perturbed
copies of their CT (:mod:`.perturbations`), results by spinal region, paired tests of each perturbation against
the clean input with Holm's correction.

Perturbations are given as ``kind:value`` — ``hu_scale:0.85``, ``noise:50`` (σ in HU), ``thick:5`` (mm),
``metal`` (at the middle vertebra of the reference labels); the default set is HU scaling ×0.7, ×0.85, ×1.15,
×1.3, noise σ 25 and 50 HU, thick slices 3 and 5 mm, and metal.
"""

from __future__ import annotations

import zlib
from pathlib import Path

from SpineSegLib.checkpoint import load_checkpoint
from SpineSegLib.inference import Segmenter, resolve_device

from .conditions import Condition, run_conditions
from .perturbations import hu_scale, metal, noise, spine_centre, thick_slices
from .report import write_report

DEFAULT_PERTURBATIONS = ("hu_scale:0.7", "hu_scale:0.85", "hu_scale:1.15", "hu_scale:1.3", "noise:25", "noise:50",
                         "thick:3", "thick:5", "metal")
CLEAN = "clean"


def parse_perturbation(spec: str, seed: int = 0):
    """``(name, function(case) -> Volume)`` for ``kind[:value]``."""
    kind, _, value = spec.partition(":")
    try:
        number = float(value) if value else None
    except ValueError:
        raise ValueError(f"perturbation {spec!r}: {value!r} is not a number") from None

    def case_seed(case) -> int:
        return seed + zlib.crc32(case.case_id.encode())

    if kind == "hu_scale" and number:
        return f"HU x{number:g}", lambda case: hu_scale(case.ct, number)
    if kind == "noise" and number is not None:
        return f"noise {number:g} HU", lambda case: noise(case.ct, number, case_seed(case))
    if kind == "thick" and number:
        return f"thick {number:g} mm", lambda case: thick_slices(case.ct, number)
    if kind == "metal":
        return "metal", lambda case: metal(case.ct, spine_centre(case.labels), case_seed(case),
                                           **({"amplitude_hu": number} if number else {}))
    raise ValueError(f"unknown perturbation {spec!r}: use hu_scale:F, noise:SIGMA_HU, thick:MM or metal[:AMPLITUDE]")


def robustness(model: str | Path, cases, report_dir: str | Path, perturbations=DEFAULT_PERTURBATIONS, *,
               device: str = "auto", fast: bool = False, n_resamples: int = 10_000, seed: int = 0,
               surface: bool = True, data_description: str = "", log=print) -> dict:
    loaded = load_checkpoint(model, resolve_device(device))
    segmenter = Segmenter(loaded, device=device, fast=fast)
    conditions = [Condition(CLEAN, lambda case: segmenter(case.ct), "unperturbed input")]
    for spec in perturbations:
        name, perturb = parse_perturbation(spec, seed)
        conditions.append(Condition(name, lambda case, perturb=perturb: segmenter(perturb(case)), spec))
    results = run_conditions(conditions, cases, surface, log)
    return write_report(report_dir, f"Robustness of {loaded.name} to input perturbations", results,
                        reference=CLEAN, n_resamples=n_resamples, seed=seed, column="perturbation",
                        what="perturbation", settings={"model": str(model), "data": data_description,
                                                       "perturbations": list(perturbations),
                                                       "mode": "fast" if fast else "full"},
                        notes=["HU scaling is about 0 HU (water); noise is white Gaussian; thick slices average "
                               "along the superior-inferior axis and are interpolated back onto the original grid; "
                               "metal places two screws at the middle vertebra of the reference labels."])
