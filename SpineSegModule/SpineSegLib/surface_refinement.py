"""The vertebrae's surfaces refined on the input grid, from the CT itself.

The network segments on its own grid (1.5 mm for the fine pass) and draws the bone's surface up to a voxel off,
mostly too thick: on the tuning phantoms two thirds of its false bone lies within a voxel of the true surface.
The CT on the input grid holds that edge at its own resolution. Within ``band_mm`` of the network's surface each
voxel is classified bone or not by a small perceptron (one tanh layer) on :data:`FEATURES`: the network's
foreground probability interpolated onto the input grid, the voxel's signed distance from the network's surface,
and the CT smoothed at a few scales, its Laplacian, its gradient and its extremes nearby. Voxels that become bone
take the nearest vertebra's label; voxels that stop being bone are cleared; each vertebra stays one piece.
Outside the band nothing changes.

The weights are fitted on tuning cases (``spineseg-train fit-surface``) and kept in the model card
(``postprocessing.surface_refinement``), one entry per pass whose foreground they refine: numbers, never code::

    {"fine": {"band_mm": 2.5,
              "features": [...],                       # FEATURES, in this order
              "mean": [...], "sd": [...],              # feature standardisation
              "hidden": {"weights": [[...], ...], "bias": [...]},   # (H, F) and (H,)
              "output": {"weights": [...], "bias": b},              # (H,) and a number
              "fitted_on": {...}}}                     # provenance, kept as written
"""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from scipy import ndimage, spatial, special

from .lesion_scores import STAGES  # the passes, one source for every per-pass card entry
from .postprocess import keep_largest_parts, mask_box

FEATURES = ("foreground_logit", "signed_distance", "hu", "hu_smooth_0.6mm", "hu_smooth_1mm", "hu_smooth_2mm",
            "laplacian_1mm", "laplacian_2mm", "hu_minus_smooth_2mm", "gradient_1mm", "hu_max_2.5mm", "hu_min_2.5mm",
            "hu_max_5mm", "hu_min_5mm", "hu_smooth_4mm")
HU_SCALE = 1000.0  # features in thousands of HU keep the standardisation's numbers readable
MARGIN_MM = 6.0  # the work box around the predicted bone: the band plus the filters' reach
REACH_MM = 4.0  # how far a voxel that becomes bone looks for the vertebra it joins


def effective_foreground(labels: np.ndarray, background: np.ndarray) -> np.ndarray:
    """The network's foreground probability on its grid, made to agree with what the engine kept: seams it closed
    count as bone, parts it dropped (specks, ribs cut off, bone beside the column) as background."""
    foreground = 1.0 - background.astype(np.float32)
    kept = labels > 0
    foreground[kept & (foreground < 0.5)] = 1.0
    foreground[~kept & (foreground >= 0.5)] = 0.0
    return foreground


def work_box(mask: np.ndarray, spacing) -> tuple[slice, ...] | None:
    """The box of ``mask`` plus :data:`MARGIN_MM`, or None where the mask is empty."""
    return mask_box(mask, spacing, MARGIN_MM)


def band_features(ct: np.ndarray, foreground: np.ndarray, spacing, band_mm: float,
                  pool: Executor | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The band (voxels within ``band_mm`` of the surface of ``foreground >= 0.5``) and its voxels' features
    (N, len(FEATURES)), float32; ``ct`` in HU and ``foreground`` on the same grid (a work box). The CT's filters
    run on ``pool``'s threads where one is given (scipy's filters release the GIL)."""
    spacing = np.asarray(spacing, dtype=np.float64)
    inside = foreground >= 0.5
    # One distance map, to the voxel layers on either side of the surface (half the work of one per side).
    surface = (inside & ~ndimage.binary_erosion(inside, border_value=1)) | (~inside & ndimage.binary_dilation(inside))
    distance = ndimage.distance_transform_edt(~surface, spacing).astype(np.float32)
    band = distance <= band_mm
    signed = np.where(inside[band], distance[band], -distance[band])
    del distance, surface
    hu = ct.astype(np.float32)

    def windows(window_mm):
        return tuple(np.maximum(1, np.round(window_mm / spacing)).astype(int) | 1)

    filters = [  # FEATURES[3:8] and [9:], in order; the brightest and darkest CT near: is cortex, or soft tissue?
        lambda: ndimage.gaussian_filter(hu, 0.6 / spacing), lambda: ndimage.gaussian_filter(hu, 1.0 / spacing),
        lambda: ndimage.gaussian_filter(hu, 2.0 / spacing), lambda: ndimage.gaussian_laplace(hu, 1.0 / spacing),
        lambda: ndimage.gaussian_laplace(hu, 2.0 / spacing),
        lambda: ndimage.gaussian_gradient_magnitude(hu, 1.0 / spacing),
        lambda: ndimage.maximum_filter(hu, windows(2.5)), lambda: ndimage.minimum_filter(hu, windows(2.5)),
        lambda: ndimage.maximum_filter(hu, windows(5.0)), lambda: ndimage.minimum_filter(hu, windows(5.0)),
        lambda: ndimage.gaussian_filter(hu, 4.0 / spacing),
    ]
    filtered = list((pool.map if pool else map)(lambda run: run()[band] / HU_SCALE, filters))
    p = np.clip(foreground[band], 1e-3, 1 - 1e-3)
    columns = [special.logit(p), signed / band_mm, hu[band] / HU_SCALE, *filtered[:5]]
    columns.append(columns[2] - columns[5])  # the CT against its 2 mm surroundings
    columns += filtered[5:]
    return band, np.stack(columns, axis=1).astype(np.float32)


@dataclass(frozen=True)
class SurfaceRefinement:
    stage: str
    band_mm: float
    mean: np.ndarray  # (F,)
    sd: np.ndarray  # (F,)
    hidden_weights: np.ndarray  # (H, F)
    hidden_bias: np.ndarray  # (H,)
    output_weights: np.ndarray  # (H,)
    output_bias: float

    @classmethod
    def from_card(cls, stage: str, document: Mapping) -> SurfaceRefinement:
        """One pass's entry, checked for shape and finite numbers; ValueError says what does not fit."""
        band = document.get("band_mm")
        if not isinstance(band, (int, float)) or not 0.0 < band <= MARGIN_MM:
            raise ValueError(f"band_mm must be a number in (0, {MARGIN_MM}], not {band!r}")
        if list(document.get("features") or []) != list(FEATURES):
            raise ValueError(f"features {document.get('features')!r} are not the ones this SpineSeg computes "
                             f"({', '.join(FEATURES)})")
        hidden, output = document.get("hidden") or {}, document.get("output") or {}
        arrays = {"mean": document.get("mean"), "sd": document.get("sd"), "hidden.weights": hidden.get("weights"),
                  "hidden.bias": hidden.get("bias"), "output.weights": output.get("weights"),
                  "output.bias": output.get("bias")}
        for key, value in arrays.items():
            try:
                arrays[key] = np.asarray(value, dtype=np.float64)
            except (TypeError, ValueError):
                raise ValueError(f"{key} must hold numbers, not {value!r}") from None
            if not np.isfinite(arrays[key]).all():
                raise ValueError(f"{key} holds a number that is not finite")
        width, units = len(FEATURES), arrays["hidden.bias"].shape
        shapes = {"mean": (width,), "sd": (width,), "hidden.weights": (*units, width), "hidden.bias": units,
                  "output.weights": units, "output.bias": ()}
        for key, shape in shapes.items():
            if arrays[key].shape != shape or len(units) != 1 or units[0] == 0:
                raise ValueError(f"{key} has shape {arrays[key].shape}, not {shape} (one hidden layer over "
                                 f"{width} features)")
        if (arrays["sd"] <= 0).any():
            raise ValueError("sd must be positive")
        return cls(stage, float(band), arrays["mean"], arrays["sd"], arrays["hidden.weights"], arrays["hidden.bias"],
                   arrays["output.weights"], float(arrays["output.bias"]))

    def to_card(self) -> dict:
        def rounded(array):  # six significant digits: the card stays readable and the logits within 1e-4
            return np.vectorize(lambda v: float(f"{v:.6g}"))(np.asarray(array, dtype=np.float64)).tolist()

        return {"band_mm": self.band_mm, "features": list(FEATURES), "mean": rounded(self.mean),
                "sd": rounded(self.sd),
                "hidden": {"weights": rounded(self.hidden_weights), "bias": rounded(self.hidden_bias)},
                "output": {"weights": rounded(self.output_weights), "bias": rounded(self.output_bias)}}

    def logits(self, features: np.ndarray) -> np.ndarray:
        """Bone-or-not log-odds per row of ``features`` (N, F)."""
        standard = (features - self.mean.astype(np.float32)) / self.sd.astype(np.float32)
        hidden = np.tanh(standard @ self.hidden_weights.T.astype(np.float32) + self.hidden_bias.astype(np.float32))
        return hidden @ self.output_weights.astype(np.float32) + np.float32(self.output_bias)

    def refine(self, labels: np.ndarray, foreground: np.ndarray, ct: np.ndarray, spacing) -> np.ndarray:
        """``labels`` (label values on the input grid) with the band around ``foreground >= 0.5`` classified again
        from the CT ``ct`` (HU, same grid); a new array, the inputs untouched."""
        box = work_box(foreground >= 0.5, spacing)
        out = labels.copy()
        if box is None:
            return out
        with ThreadPoolExecutor(max_workers=2) as pool:
            band, features = band_features(ct[box], foreground[box], spacing, self.band_mm, pool)
        bone = foreground[box] >= 0.5
        bone[band] = self.logits(features) > 0
        # A bridge of bone the band let go may leave a piece of a vertebra on its own: one vertebra, one piece.
        out[box] = keep_largest_parts(nearest_labels(labels[box], bone, spacing))
        return out


def nearest_labels(labels: np.ndarray, bone: np.ndarray, spacing, reach_mm: float = REACH_MM) -> np.ndarray:
    """Labels on ``bone`` only: a bone voxel without a label takes the nearest labelled voxel's within
    ``reach_mm`` (none farther: bone that far from every vertebra was never the engine's)."""
    out = np.where(bone, labels, 0).astype(labels.dtype)
    unlabelled = np.argwhere(bone & (labels == 0))
    labelled = labels > 0
    edge = np.argwhere(labelled & ~ndimage.binary_erosion(labelled))  # the nearest labelled voxel is on the edge
    if len(unlabelled) and len(edge):
        spacing = np.asarray(spacing, dtype=np.float64)
        distance, index = spatial.cKDTree(edge * spacing).query(unlabelled * spacing,
                                                                 distance_upper_bound=reach_mm + 1e-6)
        found = np.isfinite(distance)
        out[tuple(unlabelled[found].T)] = labels[tuple(edge[index[found]].T)]
    return out


def refinements_from_card(document: Mapping) -> dict[str, SurfaceRefinement]:
    """The card's refinements by pass; ValueError names the pass and what does not fit."""
    refinements = {}
    for stage, entry in document.items():
        if stage not in STAGES:
            raise ValueError(f"{stage!r} is not a pass ({', '.join(STAGES)})")
        try:
            refinements[stage] = SurfaceRefinement.from_card(stage, entry)
        except (ValueError, TypeError, AttributeError) as error:
            raise ValueError(f"{stage}: {error}") from None
    return refinements

