"""Training patches: cases brought to a stage's grid, patch sampling and augmentation (MONAI dict transforms).

A case is put in canonical orientation at the stage spacing once; each sample crops a patch centred on a
lesion, a vertebra voxel or anywhere (1:1 foreground/background overall), builds Gaussian lesion-heatmap
targets, and augments image, labels and heatmaps together so targets move with the image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from monai.transforms import (
    Compose,
    RandAffined,
    RandFlipd,
    RandGaussianNoised,
    RandGaussianSmoothd,
    RandScaleIntensityd,
    RandShiftIntensityd,
)

from SpineSegLib.labels import load_label_table
from SpineSegLib.preprocess import Orientation, normalize_intensity, resample_array, resampled_grid

from SpineSegLib.volume import Volume

from .dataset import Case


@dataclass
class StageCase:
    image: np.ndarray  # (I, J, K) float32 in [0, 1]
    classes: np.ndarray  # (I, J, K) uint8 network class indices
    lesion_ijk: np.ndarray  # (N, 3) voxel coordinates on this grid
    lesion_sigma: np.ndarray  # (N,) Gaussian sigma in voxels
    lesion_class: np.ndarray  # (N,) lesion class index
    foreground: np.ndarray  # (M, 3) sample of vertebra voxel coordinates


def to_stage_grid(case: Case, spacing, window=(-1000.0, 1000.0), rng=None,
                  crop_margin_mm: float | None = None) -> StageCase:
    """A case on a stage's grid; with ``crop_margin_mm`` the field of view is cut in-plane to the spine plus
    that margin, as the fine inference pass sees it."""
    table = load_label_table()
    orientation = Orientation.of(case.ct)
    ct = orientation.canonical(case.ct)
    labels = orientation.to_canonical(case.labels.array)
    if crop_margin_mm is not None and labels.any():
        ct, labels = _crop_in_plane(ct, labels, crop_margin_mm)
    shape, affine = resampled_grid(ct.shape, ct.affine, spacing)
    image = resample_array(normalize_intensity(ct.array, window), shape).numpy()
    classes = table.value_to_class_lut()[resample_array(labels.astype(np.int16), shape, "nearest").numpy()]
    inverse = np.linalg.inv(affine)
    voxel = float(np.mean(np.linalg.norm(affine[:3, :3], axis=0)))
    lesions = case.lesions
    ijk = np.array([inverse[:3, :3] @ np.asarray(l["center_ras"]) + inverse[:3, 3] for l in lesions]).reshape(-1, 3)
    sigma = np.array([max(l.get("size_mm", 8.0) / 4.0, 2.0) / voxel for l in lesions])
    lesion_class = np.array([table.lesion_class_names.index(l["class"]) for l in lesions], dtype=np.int64)
    rng = rng or np.random.default_rng(0)
    fg = np.argwhere(classes > 0)
    if len(fg) > 20000:
        fg = fg[rng.choice(len(fg), 20000, replace=False)]
    return StageCase(image.astype(np.float32), classes.astype(np.uint8), ijk, sigma, lesion_class, fg)


def _crop_in_plane(ct: Volume, labels: np.ndarray, margin_mm: float) -> tuple[Volume, np.ndarray]:
    where = np.argwhere(labels > 0)
    margin = np.round(margin_mm / ct.spacing).astype(int)
    lo = np.maximum(where.min(axis=0) - margin, 0)
    hi = np.minimum(where.max(axis=0) + margin + 1, labels.shape)
    lo[2], hi[2] = 0, labels.shape[2]
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    shift = np.eye(4)
    shift[:3, 3] = lo
    return Volume(ct.array[box], ct.affine @ shift), labels[box]


def heatmap_target(shape, origin, lesion_ijk, lesion_sigma, lesion_class, num_classes) -> np.ndarray:
    """Per-class Gaussian peaks (value 1 at each lesion centre) inside the patch starting at ``origin``."""
    heat = np.zeros((num_classes, *shape), dtype=np.float32)
    grids = np.meshgrid(*[np.arange(s, dtype=np.float32) for s in shape], indexing="ij")
    for centre, sigma, cls in zip(np.round(lesion_ijk) - origin, lesion_sigma, lesion_class):
        if np.any(centre < -3 * sigma) or np.any(centre > np.array(shape) + 3 * sigma):
            continue
        d2 = sum((g - c) ** 2 for g, c in zip(grids, centre))
        np.maximum(heat[cls], np.exp(-d2 / (2 * sigma**2)), out=heat[cls])
    return heat


def augmentation(prob: float = 0.5) -> Compose:
    keys = ("image", "seg", "heat")
    return Compose([
        RandAffined(keys=keys, prob=prob, rotate_range=(np.pi / 12,) * 3, scale_range=(0.1,) * 3,
                    translate_range=(4,) * 3, mode=("bilinear", "nearest", "bilinear"), padding_mode="zeros"),
        RandFlipd(keys=keys, prob=0.5, spatial_axis=0),  # left-right only: cranio-caudal order must survive
        RandGaussianSmoothd(keys="image", prob=0.15, sigma_x=(0.3, 0.8), sigma_y=(0.3, 0.8), sigma_z=(0.3, 0.8)),
        RandGaussianNoised(keys="image", prob=0.3, std=0.01),
        RandScaleIntensityd(keys="image", prob=0.3, factors=0.08),
        RandShiftIntensityd(keys="image", prob=0.3, offsets=0.02),
    ])


def _restore_peaks(heat: torch.Tensor) -> torch.Tensor:
    """Interpolation in augmentation lowers Gaussian peaks; the focal loss needs exactly 1 at each centre."""
    local_max = torch.nn.functional.max_pool3d(heat[None], 3, stride=1, padding=1)[0]
    heat[(heat == local_max) & (heat > 0.5)] = 1.0
    return heat


class PatchSampler:
    """Draws augmented training patches from cases on one stage's grid."""

    def __init__(self, cases: list[StageCase], patch: int, rng: np.random.Generator, augment: bool = True,
                 lesion_fraction: float = 0.3, foreground_fraction: float = 0.5):
        self.cases, self.patch, self.rng = cases, patch, rng
        self.transform = augmentation() if augment else None
        self.lesion_fraction, self.foreground_fraction = lesion_fraction, foreground_fraction
        self.num_lesion_classes = len(load_label_table().lesion_classes)

    def _centre(self, case: StageCase) -> np.ndarray:
        draw = self.rng.random()
        if draw < self.lesion_fraction and len(case.lesion_ijk):
            return case.lesion_ijk[self.rng.integers(len(case.lesion_ijk))] + self.rng.normal(0, 4, 3)
        if draw < self.lesion_fraction + self.foreground_fraction and len(case.foreground):
            return case.foreground[self.rng.integers(len(case.foreground))].astype(float)
        return self.rng.uniform(0, case.image.shape)

    def sample(self) -> dict[str, torch.Tensor]:
        case = self.cases[self.rng.integers(len(self.cases))]
        p = self.patch
        origin = np.round(self._centre(case) - p / 2).astype(int)
        image = np.zeros((p, p, p), dtype=np.float32)  # 0 = -1000 HU (air) outside the volume
        seg = np.zeros((p, p, p), dtype=np.uint8)
        src_lo = np.maximum(origin, 0)
        src_hi = np.minimum(origin + p, case.image.shape)
        dst_lo = src_lo - origin
        dst_hi = dst_lo + (src_hi - src_lo)
        src = tuple(slice(a, b) for a, b in zip(src_lo, src_hi))
        dst = tuple(slice(a, b) for a, b in zip(dst_lo, dst_hi))
        image[dst] = case.image[src]
        seg[dst] = case.classes[src]
        heat = heatmap_target((p, p, p), origin, case.lesion_ijk, case.lesion_sigma, case.lesion_class,
                              self.num_lesion_classes)
        item = {"image": torch.from_numpy(image)[None], "seg": torch.from_numpy(seg.astype(np.float32))[None],
                "heat": torch.from_numpy(heat)}
        if self.transform is not None:
            self.transform.set_random_state(int(self.rng.integers(2**31)))
            item = self.transform(item)
        return {"image": torch.as_tensor(item["image"]).float(), "seg": torch.as_tensor(item["seg"]).long(),
                "heat": _restore_peaks(torch.as_tensor(item["heat"]).float().clamp(0, 1))}

    def batch(self, size: int) -> dict[str, torch.Tensor]:
        items = [self.sample() for _ in range(size)]
        return {key: torch.stack([item[key] for item in items]) for key in items[0]}
