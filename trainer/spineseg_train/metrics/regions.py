"""Per-region summaries: cervical (C1–C7), thoracic (T1–T13), lumbar (L1–L6), sacral (sacrum).

Conventions
-----------
* A vertebra's region comes from the label table (``Label.region``).
* A region's score over a set of per-vertebra values is the mean of the values of that region's vertebrae (each
  vertebra weighs the same, as the mean vertebra Dice does); nan for a region with no vertebra.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

from SpineSegLib.labels import load_label_table

REGIONS = ("cervical", "thoracic", "lumbar", "sacral")


def region_of(value: int) -> str:
    return load_label_table().by_value(int(value)).region


def values_by_region(per_vertebra: Mapping[int, float]) -> dict[str, list[float]]:
    """``{region: [values]}`` (regions in cranio-caudal order; nan values dropped)."""
    grouped: dict[str, list[float]] = {r: [] for r in REGIONS}
    for value, score in per_vertebra.items():
        if score is not None and not np.isnan(score):
            grouped[region_of(value)].append(float(score))
    return grouped


def region_means(per_vertebra: Mapping[int, float]) -> dict[str, float]:
    """``{region: mean of its vertebrae's values}`` (nan for regions without a vertebra)."""
    return {r: float(np.mean(v)) if v else float("nan") for r, v in values_by_region(per_vertebra).items()}


def pooled_region_means(records: Iterable[Mapping], key: str = "dice") -> dict[str, float]:
    """Region means over per-vertebra records ``{"label": value, key: score}`` of many cases, pooled."""
    grouped: dict[str, list[float]] = {r: [] for r in REGIONS}
    for record in records:
        score = record.get(key)
        if score is not None and not np.isnan(score):
            grouped[region_of(record["label"])].append(float(score))
    return {r: float(np.mean(v)) if v else float("nan") for r, v in grouped.items()}
