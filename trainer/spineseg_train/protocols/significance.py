"""Paired comparisons of conditions with a reference (a baseline model, the clean input, no adaptation):
two-sided Wilcoxon signed-rank tests on per-patient means, Holm-corrected over the conditions compared with the
reference, separately for each metric (each metric is its own family of tests)."""

from __future__ import annotations

import numpy as np

from ..metrics import holm_bonferroni, wilcoxon_paired
from .scoring import CaseScore
from .summary import patient_means

TESTED_METRICS = {"mean_vertebra_dice": "dice", "identification_rate": "identified", "hd95_mm": "hd95_mm"}


def compare_with_reference(results: dict[str, list[CaseScore]], reference: str, alpha: float = 0.05) -> list[dict]:
    if reference not in results:
        raise ValueError(f"reference {reference!r} is not one of {', '.join(results)}")
    rows = []
    for metric, key in TESTED_METRICS.items():
        base = patient_means(results[reference], key)
        family = []
        for name, scores in results.items():
            if name == reference:
                continue
            other = patient_means(scores, key)
            common = sorted(set(base) & set(other))
            test = wilcoxon_paired({p: other[p] for p in common}, {p: base[p] for p in common})
            family.append({"metric": metric, "condition": name, "reference": reference, "n_patients": len(common),
                           "median_difference": test.median_difference, "statistic": test.statistic,
                           "p": test.pvalue})
        if family:
            adjusted, reject = holm_bonferroni([r["p"] for r in family], alpha)
            for row, p_holm, rejected in zip(family, adjusted, reject):
                row["p_holm"] = float(p_holm)
                row["significant"] = bool(rejected) and not np.isnan(p_holm)
        rows += family
    return rows
