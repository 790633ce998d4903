"""The segmenter: coarse localisation of the spine, a fine pass on a crop, post-processing, results.

Both passes use MONAI's sliding-window inferer with Gaussian blending. Progress goes through the one
``progress(fraction, stage)`` protocol and a :class:`~SpineSegLib.progress.CancelToken` is checked between
windows, so hosts can show progress and stop a run; nothing is written by this module.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch
from monai.inferers import sliding_window_inference
from scipy import ndimage

from .checkpoint import LoadedModel, load_checkpoint
from .errors import InputError
from .labels import load_label_table
from .lesion_scores import LesionCalibration, calibrations_from_card
from .level_sizes import LevelSizes
from .postprocess import detect_lesions, label_vertebrae, mask_box, refine_labels
from .preprocess import Orientation, prepare
from .progress import CancelToken, ProgressCallback, SubProgress, no_progress
from .region_numbering import label_by_regions
from .resources import default_model_path
from .results import SegmentationResult, SurfaceInputs, vertebra_summary
from .rib_evidence import bone_mask, metal_planes
from .surface_refinement import effective_foreground, refinements_from_card, work_box
from .volume import Volume

CROP_MARGIN_MM = 20.0
# The coarse pass looks only at the body's box: voxels above this (HU), and this far around them.
BODY_HU = -500.0
BODY_MARGIN_MM = 9.0
# Heatmap values under this are written as 0: no lesion evidence. Without the floor the network's near-zero output
# fills the spine's crop with incompressible noise (a 137 MB heatmap file for a clinical-size CT; 0.4 MB with it).
HEATMAP_FLOOR = 0.01


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda was asked for, but PyTorch sees no CUDA GPU on this machine")
    if device not in ("cpu", "cuda"):
        raise InputError(f"unknown device {device!r}: use auto, cpu or cuda")
    return torch.device(device)


def _window_count(shape, roi, overlap: float) -> int:
    """Windows MONAI's sliding-window inference visits (same scan-interval rule), for progress reporting."""
    count = 1
    for size, r in zip(shape, roi):
        interval = max(int(r * (1 - overlap)), 1)
        count *= 1 if size <= r else math.ceil((size - r) / interval) + 1
    return count


class Segmenter:
    """Runs a loaded model on CT volumes. ``fast`` stops after the coarse pass. The model card's
    ``postprocessing.numbering`` says whether the network's classes name the vertebrae (``levels``) or its regions
    are counted (``regions``, :func:`.region_numbering.label_by_regions`); with ``levels``, ``identity_stage``
    says which pass names them (see :func:`.postprocess.refine_labels`).

    Lesions are listed from ``postprocessing.lesion_threshold`` on the heatmap's peaks or, where the card has a
    ``lesion_calibration`` for the pass that made the heatmap, from its threshold on calibrated scores
    (:mod:`.lesion_scores`). ``lesion_threshold`` replaces the threshold in force; ``calibrate_lesions=False``
    lists raw peaks even so (what fitting a calibration needs).

    Where the card has a ``surface_refinement`` for the pass that made the labels, the vertebrae's surfaces are
    classified again on the input grid from the CT (:mod:`.surface_refinement`); ``refine_surfaces=False`` skips
    it, and the result's ``surface_inputs`` then holds what fitting one needs (None where no vertebra was found)."""

    def __init__(self, model: LoadedModel | str | Path | None = None, device: str = "auto", fast: bool = False,
                 overlap: float = 0.25, sw_batch_size: int = 1, lesion_threshold: float | None = None,
                 calibrate_lesions: bool = True, refine_surfaces: bool = True):
        self.device = resolve_device(device)
        if not isinstance(model, LoadedModel):
            model = load_checkpoint(model or default_model_path(), self.device)
        self.model = model
        self.model.network.to(self.device)
        self.fast = fast
        self.overlap = overlap
        self.sw_batch_size = sw_batch_size
        self.table = load_label_table()
        card = model.card
        self.window = tuple(card["preprocessing"].get("intensity_window", (-1000, 1000)))
        self.stages = card["preprocessing"]["stages"]
        self.post = card.get("postprocessing", {})
        sizes = self.post.get("level_sizes")
        self.level_sizes = LevelSizes.from_card(sizes, self.table) if sizes else None
        calibrations = self.post.get("lesion_calibration") if calibrate_lesions else None
        self.lesion_calibrations = calibrations_from_card(calibrations, self.table) if calibrations else {}
        self.lesion_threshold = lesion_threshold
        refinements = self.post.get("surface_refinement") if refine_surfaces else None
        self.surface_refinements = refinements_from_card(refinements) if refinements else {}
        self.keep_surface_inputs = not refine_surfaces

    def lesion_rule(self, stage: str) -> tuple[LesionCalibration | None, float]:
        """The calibration (or None) and threshold that list the lesions of a heatmap made by ``stage``."""
        calibration = self.lesion_calibrations.get(stage)
        threshold = calibration.threshold if calibration else self.post.get("lesion_threshold", 0.3)
        return calibration, threshold if self.lesion_threshold is None else self.lesion_threshold

    # --- one network pass ---------------------------------------------------------------------------------------
    def _predict(self, image: torch.Tensor, stage: dict, progress: ProgressCallback) -> tuple[np.ndarray, np.ndarray]:
        """Class probabilities (C, ...) and lesion heatmaps (L, ...) on the image's grid."""
        roi = tuple(stage["patch_size"])
        total = _window_count(image.shape[1:], roi, self.overlap)
        done = [0]
        num_classes = self.table.num_classes
        network = self.model.network

        def predictor(batch: torch.Tensor) -> torch.Tensor:
            progress(done[0] / total, "")
            with torch.autocast("cuda", dtype=torch.float16, enabled=self.device.type == "cuda"):
                out = network(batch)
            done[0] += batch.shape[0]
            progress(done[0] / total, "")
            return torch.cat([torch.softmax(out["seg"].float(), 1), torch.sigmoid(out["lesion"].float())], 1)

        with torch.inference_mode():
            probabilities = sliding_window_inference(
                image[None].to(self.device), roi, self.sw_batch_size, predictor, overlap=self.overlap,
                mode="gaussian", padding_mode="constant", cval=0.0,
            )[0].cpu()
        return probabilities[:num_classes].numpy(), probabilities[num_classes:].numpy()

    def _predict_body(self, image: torch.Tensor, stage: dict,
                      progress: ProgressCallback) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`_predict` on the box of the image that holds the body (and the table), :data:`BODY_MARGIN_MM`
        around it; background certain and no lesion outside. The air around a patient fills a third to a half of
        a CT's field of view, and windows of air cost as much as any other."""
        body = image[0].numpy() > (BODY_HU - self.window[0]) / (self.window[1] - self.window[0])
        box = mask_box(body, stage["spacing"], BODY_MARGIN_MM)
        if box is None:
            return self._predict(image, stage, progress)
        probs, heat = self._predict(image[(slice(None), *box)], stage, progress)
        full_probs = np.zeros((probs.shape[0], *body.shape), dtype=probs.dtype)
        full_probs[0] = 1.0
        full_heat = np.zeros((heat.shape[0], *body.shape), dtype=heat.dtype)
        for full, inside in ((full_probs, probs), (full_heat, heat)):
            full[(slice(None), *box)] = inside
        return full_probs, full_heat

    # --- the whole run -------------------------------------------------------------------------------------------
    def __call__(self, ct: Volume, progress: ProgressCallback | None = None,
                 cancel: CancelToken | None = None) -> SegmentationResult:
        progress = progress or no_progress
        cancel = cancel or CancelToken()
        started = time.perf_counter()
        timings = {}

        def stage(start, stop, name):
            return SubProgress(lambda f, _s: progress(f, name), start, stop, cancel)

        orientation = Orientation.of(ct)
        canonical = orientation.canonical(ct)
        coarse_spec = self.stages["coarse"]
        coarse = prepare(canonical, coarse_spec["spacing"], self.window)
        stage(0.0, 0.02, "preparing")(1.0, "")
        probs, heat = self._predict_body(coarse.image, coarse_spec, stage(0.02, 0.35 if not self.fast else 0.85,
                                                                         "coarse pass"))
        timings["coarse_s"] = round(time.perf_counter() - started, 2)
        grid_affine, grid_image = coarse.affine, coarse.image
        coarse_probs, fine_ran = probs, False
        if not self.fast:
            box = self._spine_box(probs, coarse.affine, canonical)
            if box is not None:
                lo, hi = box
                crop = Volume(canonical.array[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]],
                              canonical.affine @ _translation(lo))
                fine_spec = self.stages["fine"]
                fine = prepare(crop, fine_spec["spacing"], self.window)
                probs, heat = self._predict(fine.image, fine_spec, stage(0.35, 0.85, "fine pass"))
                grid_affine, grid_image, fine_ran = fine.affine, fine.image, True
                timings["fine_s"] = round(time.perf_counter() - started - timings["coarse_s"], 2)
        cancel.raise_if_cancelled()
        progress(0.86, "post-processing")
        min_mm3 = self.post.get("min_vertebra_mm3", 300.0)
        if self.post.get("numbering", "levels") == "regions":
            labels_grid = label_by_regions(probs, grid_affine, min_mm3, self.table, self.level_sizes,
                                           bone_mask(grid_image[0], self.window),
                                           metal_planes(canonical, grid_affine, probs.shape[3]))
        elif fine_ran and self.post.get("identity_stage", "fine") == "coarse":
            named = label_vertebrae(coarse_probs, coarse.affine, min_mm3, self.table)
            named = project_labels(named, coarse.affine, probs.shape[1:], grid_affine)
            spacing = np.linalg.norm(grid_affine[:3, :3], axis=0)
            labels_grid = refine_labels(named, probs[0] < 0.5, spacing, self.post.get("identity_reach_mm", 6.0),
                                        max(1, int(min_mm3 / np.prod(spacing))))
        else:
            labels_grid = label_vertebrae(probs, grid_affine, min_mm3, self.table)
        pass_name = "fine" if fine_ran else "coarse"
        calibration, threshold = self.lesion_rule(pass_name)
        lesions = detect_lesions(heat, grid_affine, labels_grid, threshold, self.post.get("nms_radius_mm", 5.0),
                                 self.table, calibration)
        cancel.raise_if_cancelled()
        progress(0.92, "mapping to the input grid")
        labels_canonical = project_labels(labels_grid, grid_affine, canonical.shape, canonical.affine)
        refinement, surface_inputs = self.surface_refinements.get(pass_name), None
        if (refinement or self.keep_surface_inputs) and labels_grid.any():
            # Only around the vertebrae: the band and the work box never reach farther (the crop is far larger).
            near = work_box(labels_grid > 0, np.linalg.norm(grid_affine[:3, :3], axis=0))
            foreground = project_linear(effective_foreground(labels_grid, probs[0])[near],
                                        grid_affine @ _translation([s.start for s in near]), canonical.shape,
                                        canonical.affine)
            if self.keep_surface_inputs:
                surface_inputs = SurfaceInputs(labels_canonical, foreground, canonical, pass_name)
            if refinement:
                progress(0.94, "refining the surfaces")
                refining = time.perf_counter()
                labels_canonical = refinement.refine(labels_canonical, foreground, canonical.array,
                                                     canonical.spacing)
                timings["surface_s"] = round(time.perf_counter() - refining, 2)
            del foreground
        heat_canonical = project_linear(heat.max(axis=0), grid_affine, canonical.shape, canonical.affine)
        heat_canonical[heat_canonical < HEATMAP_FLOOR] = 0.0
        labels = Volume(orientation.from_canonical(labels_canonical), ct.affine)
        heatmap = Volume(orientation.from_canonical(heat_canonical), ct.affine)
        cancel.raise_if_cancelled()
        timings["total_s"] = round(time.perf_counter() - started, 2)
        progress(1.0, "done")
        report = {
            "model": {k: self.model.card.get(k) for k in ("name", "architecture", "metrics")},
            "mode": "fast" if self.fast else "full",
            "device": str(self.device),
            "input": {"shape": list(ct.shape), "spacing_mm": [round(float(s), 4) for s in ct.spacing]},
            "timings": timings,
            "lesion_scores": {"kind": "calibrated" if calibration else "heatmap peak", "threshold": threshold},
            "surfaces": "refined from the CT" if refinement else "as the network drew them",
            "disclaimer": "Research software, not a medical device; not for diagnosis.",
        }
        return SegmentationResult(labels, heatmap, lesions, vertebra_summary(labels, lesions, self.table), report,
                                  surface_inputs)

    def _spine_box(self, probs: np.ndarray, affine: np.ndarray, canonical: Volume):
        """Bounding box (canonical voxel indices) of the predicted spine plus a margin, or None if empty."""
        foreground = probs[0] < 0.5
        if not foreground.any():
            return None
        components, count = ndimage.label(foreground)
        sizes = np.bincount(components.ravel())
        sizes[0] = 0
        keep = sizes >= 0.05 * sizes.max()  # drop specks, keep every substantial part of the column
        corners = np.argwhere(keep[components])
        lo_grid, hi_grid = corners.min(axis=0), corners.max(axis=0)
        to_canonical = np.linalg.inv(canonical.affine) @ affine
        points = np.array([[a, b, c] for a in (lo_grid[0], hi_grid[0]) for b in (lo_grid[1], hi_grid[1])
                           for c in (lo_grid[2], hi_grid[2])], dtype=np.float64)
        mapped = points @ to_canonical[:3, :3].T + to_canonical[:3, 3]
        margin = CROP_MARGIN_MM / canonical.spacing
        lo = np.maximum(np.floor(mapped.min(axis=0) - margin), 0).astype(int)
        hi = np.minimum(np.ceil(mapped.max(axis=0) + margin) + 1, canonical.shape).astype(int)
        return lo, hi


def _translation(offset) -> np.ndarray:
    matrix = np.eye(4)
    matrix[:3, 3] = offset
    return matrix


def _grid_mapping(source_affine, target_affine):
    """Diagonal scale and offset mapping target voxel indices to source voxel indices (axis-aligned grids)."""
    mapping = np.linalg.inv(source_affine) @ target_affine
    return np.diag(mapping)[:3], mapping[:3, 3]


def _inside_axes(scale, offset, source_shape, lo, hi) -> list[np.ndarray]:
    """Per axis, which target voxels [lo, hi) fall within the source grid's extent (its voxels' outer faces)."""
    axes = []
    for axis in range(3):
        source = scale[axis] * np.arange(lo[axis], hi[axis]) + offset[axis]
        axes.append((source >= -0.5) & (source <= source_shape[axis] - 0.5))
    return axes


def _inside_source(scale, offset, source_shape, lo, hi) -> np.ndarray:
    """Mask of target voxels [lo, hi) that fall within the source grid's extent."""
    axes = _inside_axes(scale, offset, source_shape, lo, hi)
    return axes[0][:, None, None] & axes[1][None, :, None] & axes[2][None, None, :]


def project_linear(values: np.ndarray, source_affine, target_shape, target_affine) -> np.ndarray:
    """Linear interpolation of a model-grid array onto a canonical grid; zero outside the model grid's extent
    (a crop), edge values continued over the last half voxel inside it."""
    scale, offset = _grid_mapping(source_affine, target_affine)
    out = np.zeros(tuple(target_shape), dtype=np.float32)
    axes = _inside_axes(scale, offset, values.shape, (0, 0, 0), target_shape)
    if not all(axis.any() for axis in axes):
        return out
    # Only the box the model grid covers is interpolated (the grids are axis-aligned, so it is one box): on a
    # clinical CT the spine's crop is a fraction of the grid.
    lo = np.array([int(np.argmax(axis)) for axis in axes])
    hi = np.array([len(axis) - int(np.argmax(axis[::-1])) for axis in axes])
    out[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = ndimage.affine_transform(
        values.astype(np.float32), scale, offset + scale * lo, output_shape=tuple(hi - lo), order=1, mode="nearest")
    return out


def project_labels(labels: np.ndarray, source_affine, target_shape, target_affine) -> np.ndarray:
    """Labels onto a finer canonical grid with smooth boundaries: each label's mask is interpolated linearly
    inside its own bounding box and the winner per voxel is kept (a label-wise linear interpolation)."""
    scale, offset = _grid_mapping(source_affine, target_affine)
    out = np.zeros(tuple(target_shape), dtype=np.uint8)
    best = np.zeros(tuple(target_shape), dtype=np.float32)
    for value in np.unique(labels):
        if value == 0:
            continue
        where = np.argwhere(labels == value)
        src_lo, src_hi = where.min(axis=0) - 1, where.max(axis=0) + 1
        lo = np.maximum(np.floor((src_lo - offset) / scale), 0).astype(int)
        hi = np.minimum(np.ceil((src_hi - offset) / scale) + 1, target_shape).astype(int)
        if np.any(hi <= lo):
            continue
        mask = (labels == value).astype(np.float32)
        region = ndimage.affine_transform(mask, scale, offset + scale * lo, output_shape=tuple(hi - lo), order=1,
                                          mode="nearest")
        region[~_inside_source(scale, offset, labels.shape, lo, hi)] = 0.0
        view = (slice(lo[0], hi[0]), slice(lo[1], hi[1]), slice(lo[2], hi[2]))
        wins = (region >= 0.5) & (region > best[view])
        out[view][wins] = value
        best[view][wins] = region[wins]
    return out


def segment_volume(ct: Volume, model: LoadedModel | str | Path | None = None, device: str = "auto",
                   fast: bool = False, progress: ProgressCallback | None = None,
                   cancel: CancelToken | None = None) -> SegmentationResult:
    """Segment one CT volume in this process (the Slicer module's in-process mode and the tests use this)."""
    return Segmenter(model, device, fast)(ct, progress, cancel)
