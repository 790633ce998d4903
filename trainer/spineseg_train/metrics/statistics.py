"""Confidence intervals and tests for comparing models on per-patient results.

Conventions
-----------
* **Bootstrap** (:func:`bootstrap_ci`): the unit of resampling is the patient. Values carry a patient id;
  a replicate draws patients with replacement and takes *all* values of each drawn patient (a patient drawn
  twice contributes its values twice), then applies the statistic to the pooled values. The interval is
  scipy's BCa (bias-corrected and accelerated) interval: the acceleration comes from the leave-one-*patient*-out
  jackknife, so it too respects the grouping. Without patient ids every value is its own patient. Seeded
  (``numpy.random.default_rng(seed)``); default 10,000 replicates, 95 %.
* The default statistic is the mean of the pooled values (each value weighs the same, so patients with more
  values weigh more); pass per-patient means with no ids to weigh patients equally.
* **Wilcoxon** (:func:`wilcoxon_paired`): paired, two-sided signed-rank test of model − baseline on
  per-patient values (pairs with a nan dropped). Zero differences are dropped (``zero_method="wilcox"``,
  scipy's default); when all differences are zero there is no evidence of a difference and p = 1.
* **Holm–Bonferroni** (:func:`holm_bonferroni`): step-down adjusted p-values
  ``p_(i) * (m - i + 1)``, made monotone and capped at 1; nan p-values stay nan and do not count in ``m``.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

Statistic = Callable[[np.ndarray], float]


@dataclass(frozen=True)
class BootstrapCI:
    estimate: float  # the statistic on the observed data
    low: float
    high: float
    confidence_level: float
    n_resamples: int
    n_patients: int
    method: str


@dataclass(frozen=True)
class WilcoxonResult:
    statistic: float  # scipy's W (nan when all differences are zero)
    pvalue: float
    n_pairs: int  # pairs without nan, zero differences included
    median_difference: float  # median of model - baseline


# --- bootstrap ------------------------------------------------------------------------------------------------
def group_by_patient(values: Sequence[float], patient_ids: Sequence[Hashable] | None = None) -> list[np.ndarray]:
    """Values split into one array per patient (first-appearance order); no ids: one value per patient."""
    values = np.asarray(values, dtype=np.float64).ravel()
    if patient_ids is None:
        return [values[i : i + 1] for i in range(values.size)]
    if len(patient_ids) != values.size:
        raise ValueError(f"{values.size} values but {len(patient_ids)} patient ids")
    groups: dict[Hashable, list[float]] = {}
    for pid, v in zip(patient_ids, values, strict=True):
        groups.setdefault(pid, []).append(v)
    return [np.array(g) for g in groups.values()]


def bootstrap_ci(
    values: Sequence[float],
    patient_ids: Sequence[Hashable] | None = None,
    statistic: Statistic | None = None,
    *,
    confidence_level: float = 0.95,
    n_resamples: int = 10_000,
    seed: int | None = 0,
    method: str = "BCa",
) -> BootstrapCI:
    """Patient-level bootstrap confidence interval (BCa by default) of ``statistic`` (default: mean).

    ``statistic`` receives the pooled 1-D values of one replicate and returns a float. Returns a
    :class:`BootstrapCI`; if every value is the same the interval is that value (BCa is undefined there).
    """
    groups = group_by_patient(values, patient_ids)
    if len(groups) < 2:
        raise ValueError("a bootstrap needs values from at least 2 patients")
    pooled = np.concatenate(groups)
    on_indices = _mean_of_patients(groups) if statistic is None else _statistic_of_patients(groups, statistic)
    estimate = float(np.mean(pooled) if statistic is None else statistic(pooled))
    if np.ptp(pooled) == 0:
        return BootstrapCI(estimate, estimate, estimate, confidence_level, n_resamples, len(groups), method)
    result = stats.bootstrap(
        (np.arange(len(groups)),),
        on_indices,
        n_resamples=n_resamples,
        vectorized=True,
        confidence_level=confidence_level,
        method=method,
        rng=np.random.default_rng(seed),
    )
    interval = result.confidence_interval
    return BootstrapCI(
        estimate, float(interval.low), float(interval.high), confidence_level, n_resamples, len(groups), method
    )


def _mean_of_patients(groups: list[np.ndarray]) -> Callable:
    """Vectorised mean of pooled values from arrays of patient indices (last axis = one replicate)."""
    sums = np.array([g.sum() for g in groups])
    counts = np.array([g.size for g in groups], dtype=np.float64)

    def mean(indices: np.ndarray, axis: int = -1) -> np.ndarray:
        indices = np.moveaxis(np.asarray(indices, dtype=np.int64), axis, -1)
        return sums[indices].sum(axis=-1) / counts[indices].sum(axis=-1)

    return mean


def _statistic_of_patients(groups: list[np.ndarray], statistic: Statistic) -> Callable:
    """Any statistic of pooled values, one replicate (row of patient indices) at a time."""

    def apply(indices: np.ndarray, axis: int = -1) -> np.ndarray:
        indices = np.moveaxis(np.asarray(indices, dtype=np.int64), axis, -1)
        rows = indices.reshape(-1, indices.shape[-1])
        out = [statistic(np.concatenate([groups[i] for i in row])) for row in rows]
        return np.array(out, dtype=np.float64).reshape(indices.shape[:-1])

    return apply


# --- tests ----------------------------------------------------------------------------------------------------
def wilcoxon_paired(
    model: Sequence[float] | Mapping[Hashable, float],
    baseline: Sequence[float] | Mapping[Hashable, float],
    *,
    alternative: str = "two-sided",
    zero_method: str = "wilcox",
) -> WilcoxonResult:
    """Paired Wilcoxon signed-rank test of ``model`` vs ``baseline`` per-patient values.

    Sequences pair by position; mappings ``{patient_id: value}`` pair by id and must hold the same ids.
    """
    model_values, baseline_values = _paired_arrays(model, baseline)
    keep = ~(np.isnan(model_values) | np.isnan(baseline_values))
    difference = model_values[keep] - baseline_values[keep]
    if difference.size == 0:
        return WilcoxonResult(float("nan"), float("nan"), 0, float("nan"))
    median = float(np.median(difference))
    if np.all(difference == 0):
        return WilcoxonResult(float("nan"), 1.0, int(difference.size), median)
    test = stats.wilcoxon(difference, zero_method=zero_method, alternative=alternative)
    return WilcoxonResult(float(test.statistic), float(test.pvalue), int(difference.size), median)


def holm_bonferroni(pvalues: Sequence[float], alpha: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Holm step-down correction: ``(adjusted_pvalues, reject)`` in the input order (reject: adjusted ≤ alpha)."""
    p = np.asarray(pvalues, dtype=np.float64)
    adjusted = np.full(p.shape, np.nan)
    valid = np.flatnonzero(~np.isnan(p))
    order = valid[np.argsort(p[valid], kind="stable")]
    m = order.size
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[index]))
        adjusted[index] = running
    reject = np.zeros(p.shape, dtype=bool)
    reject[valid] = adjusted[valid] <= alpha
    return adjusted, reject


def _paired_arrays(model, baseline) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(model, Mapping) != isinstance(baseline, Mapping):
        raise TypeError("pass two mappings (paired by patient id) or two sequences (paired by position)")
    if isinstance(model, Mapping):
        if set(model) != set(baseline):
            raise ValueError(f"patient ids differ: {sorted(map(str, set(model) ^ set(baseline)))}")
        ids = list(model)
        model, baseline = [model[i] for i in ids], [baseline[i] for i in ids]
    model_values = np.asarray(model, dtype=np.float64).ravel()
    baseline_values = np.asarray(baseline, dtype=np.float64).ravel()
    if model_values.shape != baseline_values.shape:
        raise ValueError(f"{model_values.size} model values but {baseline_values.size} baseline values")
    return model_values, baseline_values
