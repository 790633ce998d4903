"""Scoring one segmentation result against its reference case: the per-case row of the reports and the
per-vertebra records every summary is built from.

Per vertebra of the reference: Dice, VerSe identification (nearest predicted centroid within 20 mm carries the
label), Hungarian ID correctness, HD95 and ASSD in mm (nan when the vertebra is not predicted). Per case: their
means, the per-region mean Dice, the lesion lists (kept for AP / FROC over all cases).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from SpineSegLib.labels import load_label_table

from ..dataset import Case
from ..metrics import REGIONS, identification_metrics, per_label_surface_metrics, per_vertebra_dice, region_means


@dataclass
class CaseScore:
    row: dict  # flat values for the per-case CSV
    vertebrae: list[dict] = field(default_factory=list)  # {label, name, region, dice, identified, id_correct, ...}
    lesions_pred: list[dict] = field(default_factory=list)
    lesions_ref: list[dict] = field(default_factory=list)

    @property
    def patient(self) -> str:
        return str(self.row["patient"])

    @property
    def domain(self) -> str:
        return str(self.row["domain"])


def _nanmean(values) -> float:
    values = [v for v in values if v is not None and not math.isnan(v)]
    return float(np.mean(values)) if values else float("nan")


def score_case(result, case: Case, seconds: float = float("nan"), surface: bool = True) -> CaseScore:
    table = load_label_table()
    pred, ref = np.asarray(result.labels.array), np.asarray(case.labels.array)
    dice = per_vertebra_dice(pred, ref, table.values)
    ident = identification_metrics(pred, ref, case.ct.affine, label_values=table.values)
    identified = {d["label"]: bool(d["identified"]) for d in ident["identification"].details}
    correct = {d["label"]: bool(d["correct"]) for d in ident["matching"].details}
    localisation = {d["label"]: d["localisation_mm"] for d in ident["identification"].details}
    surfaces = per_label_surface_metrics(pred, ref, case.ct.spacing, list(dice)) if surface else {}
    vertebrae = []
    for value in sorted(dice, key=table.order):
        label = table.by_value(value)
        s = surfaces.get(value, {})
        vertebrae.append({"label": value, "name": label.name, "region": label.region, "dice": float(dice[value]),
                          "identified": identified.get(value, False), "id_correct": correct.get(value, False),
                          "localisation_mm": float(localisation.get(value, float("nan"))),
                          "hd95_mm": float(s.get("hd95", float("nan"))), "assd_mm": float(s.get("assd", float("nan")))})
    regions = region_means(dice)
    meta = case.meta
    row = {"case": case.case_id, "patient": str(meta.get("patient") or case.case_id),
           "domain": str(meta.get("domain", "unknown")), "source": str(meta.get("source", "")),
           "seconds": round(float(seconds), 3),
           "mean_dice": _nanmean(dice.values()), "min_dice": float(min(dice.values())) if dice else float("nan"),
           **{f"dice_{r}": regions[r] for r in REGIONS},
           "id_rate": float(ident["id_rate"]), "id_accuracy": float(ident["id_accuracy"]),
           "localisation_mm": float(ident["mean_localisation_mm"]),
           "hd95_mm": _nanmean(v["hd95_mm"] for v in vertebrae), "assd_mm": _nanmean(v["assd_mm"] for v in vertebrae),
           "vertebrae_ref": len(dice), "vertebrae_pred": int(len(set(np.unique(pred).tolist()) - {0})),
           "lesions_ref": len(case.lesions), "lesions_pred": len(result.lesions),
           **{f"dice_{name}": float(dice[table.by_name(name).value]) if table.by_name(name).value in dice
              else float("nan") for name in table.names}}
    return CaseScore(row, vertebrae, list(result.lesions), list(case.lesions))


def timed(run, case: Case):
    """``(result, seconds)`` of ``run(case)``."""
    started = time.perf_counter()
    result = run(case)
    return result, time.perf_counter() - started
