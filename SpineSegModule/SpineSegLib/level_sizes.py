"""Vertebra sizes along the column: the count's second witness (model card ``postprocessing.level_sizes``).

Vertebrae grow from the neck to the sacrum, with landmarks a radiologist sees at a glance: C2 (body and dens) is
about twice the C3 below it, L1 a third larger than T12. The profile is a property of the training data, measured
by the trainer (``spineseg-train level-sizes``): each level's median volume once each case's own scale is taken
out (a tall patient's vertebrae are all larger). When vertebrae are numbered by counting, each candidate
numbering is also scored by how well the volumes found follow the profile, at the scale that fits the case best
(:func:`numbering_with_sizes`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .labels import LabelTable, load_label_table
from .postprocess import scored_numbering

# Log-volume spread allowed per vertebra: the segmenter's error, not only the anatomy's (a network that takes a
# rib's head into T12 makes it up to a third larger; tuned on the tuning phantoms with the ribs as a witness).
SD_FLOOR = 0.25
CAPPED_Z = 3.0  # a vertebra merged with or split from its neighbour costs at most this many SDs
# The case's scale (log volume) relative to the profile: the anatomy's spread (about 0.1 in the training
# phantoms) widened for the segmenter's bias; searched in steps over +-2.5 SDs.
SCALE_PRIOR_SD = 0.2
SCALES = np.arange(-0.5, 0.5 + 1e-9, 0.025)
UNSIZED = ("sacrum",)  # how much of the sacrum a view shows varies, and it may come in pieces


@dataclass(frozen=True)
class LevelSizes:
    log_volume: np.ndarray  # per label-table label (table order): median log volume (mm³); nan: not measured
    log_sd: np.ndarray  # per label: spread of the log volume around the case's scale

    @classmethod
    def from_card(cls, document: dict, table: LabelTable) -> LevelSizes:
        """From the card's ``{"volume_mm3": {name: mm³}, "log_sd": {name: sd}}``; ValueError when malformed."""
        volumes, spreads = document.get("volume_mm3"), document.get("log_sd")
        if not isinstance(volumes, dict) or not isinstance(spreads, dict) or not volumes:
            raise ValueError("level_sizes needs volume_mm3 and log_sd, one number per level name")
        unknown = sorted(set(volumes) - set(table.names))
        if unknown:
            raise ValueError(f"level_sizes names levels the label table lacks: {', '.join(unknown)}")
        if set(spreads) != set(volumes):
            raise ValueError("level_sizes.log_sd must name the same levels as volume_mm3")
        values = [(float(volumes[n]), float(spreads[n])) for n in volumes]
        if any(not (np.isfinite(v) and v > 0 and np.isfinite(s) and s >= 0) for v, s in values):
            raise ValueError("level_sizes volumes must be positive and spreads non-negative numbers")
        log_volume = np.array([np.log(float(volumes[n])) if n in volumes else np.nan for n in table.names])
        log_sd = np.array([float(spreads.get(n, np.nan)) for n in table.names])
        return cls(log_volume, log_sd)

    def log_likelihood(self, volumes_mm3: np.ndarray, sized: np.ndarray, scale: float) -> np.ndarray:
        """Per vertebra (rows) and label (columns): how well its volume fits the label at the case's ``scale``
        (a log factor); 0 for vertebrae not ``sized`` (cut by the view) and for levels without a size."""
        sd = np.maximum(np.nan_to_num(self.log_sd, nan=1.0), SD_FLOOR)
        z = (np.log(np.maximum(volumes_mm3, 1e-3))[:, None] - self.log_volume[None, :] - scale) / sd[None, :]
        terms = -0.5 * np.minimum(np.abs(z), CAPPED_Z) ** 2
        terms[~sized] = 0.0
        return np.nan_to_num(terms, nan=0.0)


def numbering_with_sizes(log_probs: np.ndarray, volumes_mm3: np.ndarray, sized: np.ndarray, sizes: LevelSizes,
                         table: LabelTable, sacrum_in_pieces: bool = False,
                         skip_log_odds: np.ndarray | None = None) -> tuple[list[int], float]:
    """Label ranks for vertebrae ordered cranio-caudally (rows of ``log_probs``): the numbering that best fits the
    network's evidence and the size profile together, the case's scale chosen with it; and its score
    (``skip_log_odds``: see :func:`.postprocess.scored_numbering`)."""
    best_score, best_ranks = -np.inf, None
    for scale in SCALES:
        ranks, score = scored_numbering(log_probs + sizes.log_likelihood(volumes_mm3, sized, scale), table,
                                        sacrum_in_pieces, skip_log_odds)
        score -= 0.5 * (scale / SCALE_PRIOR_SD) ** 2
        if score > best_score:
            best_score, best_ranks = score, ranks
    return best_ranks, best_score


def fit_level_sizes(cases: list[dict[str, float]], iterations: int = 20) -> dict:
    """The profile from training cases (each ``{level name: volume mm³}`` of the vertebrae wholly inside its
    image): each level's median log volume and spread once each case's scale is taken out, found by turns.
    Returns the card's ``level_sizes`` document."""
    logs = [{name: float(np.log(v)) for name, v in case.items() if name not in UNSIZED and v > 0} for case in cases]
    logs = [case for case in logs if case]
    if not logs:
        raise ValueError("no whole vertebrae to measure level sizes from")
    names = sorted({name for case in logs for name in case})
    scales = np.zeros(len(logs))
    for _ in range(iterations):
        level = {n: float(np.median([c[n] - s for c, s in zip(logs, scales, strict=True) if n in c])) for n in names}
        scales = np.array([np.median([value - level[n] for n, value in case.items()]) for case in logs])
        scales -= scales.mean()
    spread = {n: float(np.std([c[n] - s - level[n] for c, s in zip(logs, scales, strict=True) if n in c]))
              for n in names}
    return {"volume_mm3": {n: round(float(np.exp(level[n])), 1) for n in names},
            "log_sd": {n: round(spread[n], 4) for n in names},
            "cases": len(logs), "scale_sd": round(float(scales.std()), 4)}


def whole_vertebra_volumes(labels: np.ndarray, voxel_mm3: float, table: LabelTable | None = None) -> dict[str, float]:
    """Volume (mm³) of each vertebra in a label map that does not touch its faces (one the view cut is no
    measure of its level)."""
    table = table or load_label_table()
    counts = np.bincount(labels.ravel())
    on_faces = set()
    for axis in range(3):
        for index in (0, -1):
            on_faces |= set(np.unique(np.take(labels, index, axis=axis)).tolist())
    return {table.by_value(value).name: float(counts[value] * voxel_mm3)
            for value in np.flatnonzero(counts) if value and value not in on_faces}
