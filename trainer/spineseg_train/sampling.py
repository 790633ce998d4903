"""Training patches: cases brought to a stage's grid, patch sampling and augmentation (MONAI dict transforms).

A case is put in canonical orientation at the stage spacing once; each sample crops a patch centred on a
lesion, a vertebra voxel or a background voxel (``lesion_fraction`` + ``foreground_fraction`` of the patches
are centred on the spine: 0.2 + 0.3 by default, i.e. 1:1 foreground / background; with ``balance_levels`` a
vertebra patch first draws one of the case's vertebrae uniformly, as nnU-Net oversamples rare classes, so a
6 cm³ cervical vertebra is seen as often as a 40 cm³ lumbar one), augments image and labels
together, and then builds the lesion targets at the lesions' *transformed* positions, so every target moves
with the image:

- the affine part (rotation ±15°, scaling ±10 %, translation ≤ 10 voxels, flips, 90° rotations) is tracked
  exactly: the image is a MONAI ``MetaTensor`` whose affine MONAI updates with each spatial transform, and
  lesion centres are mapped through it;
- the optional elastic deformation (``Rand3DElasticd``) also warps three coordinate channels; each centre is
  moved by the displacement read from them (a fixed-point inversion of the smooth deformation field).

Targets per sample: Gaussian heatmaps (value exactly 1 at the voxel nearest each centre; sigma from the lesion
size, scaled with the patch), and the list of lesion centres (sub-voxel), box sizes in voxels and classes from
which :mod:`.targets` builds CenterNet offsets and log sizes. Vertebra boxes for identification are built from
the augmented class map (:func:`.targets.vertebra_boxes`).

Flips: the papers augment with random flips on every axis and random 90° rotations. Both break vertebra
identity: a cranio-caudal flip puts L5 where T12 was while the label still says L5 (and a 90° rotation turns the
spine sideways), so a network cannot learn numbering from position and context. Only left-right flips keep
every label valid (the anatomy is nearly symmetric), and they are the default; ``augment.paper_flips`` switches
the papers' full set on, for binary tasks (a spine-vs-background mask) only.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import (
    Compose,
    Rand3DElasticd,
    RandAffined,
    RandFlipd,
    RandGaussianNoised,
    RandGaussianSmoothd,
    RandRotate90d,
    RandScaleIntensityd,
    RandShiftIntensityd,
)

from SpineSegLib.labels import load_label_table
from SpineSegLib.preprocess import Orientation, normalize_intensity, resample_array, resampled_grid
from SpineSegLib.volume import Volume

from .config import AugmentConfig
from .dataset import Case

DEFAULT_LESION_MM = 8.0


@dataclass
class StageCase:
    image: np.ndarray  # (I, J, K) float32 in [0, 1]
    classes: np.ndarray  # (I, J, K) uint8 network class indices
    lesion_ijk: np.ndarray  # (N, 3) voxel coordinates on this grid
    lesion_sigma: np.ndarray  # (N,) Gaussian sigma in voxels
    lesion_class: np.ndarray  # (N,) lesion class index
    foreground: np.ndarray  # (M, 3) sample of vertebra voxel coordinates
    lesion_size: np.ndarray | None = None  # (N,) lesion diameter (box side) in voxels
    domain: int = -1  # domain id (the manifest's "domain" through the trainer's vocabulary); -1: unknown

    def sizes(self) -> np.ndarray:
        if self.lesion_size is not None:
            return np.asarray(self.lesion_size, dtype=np.float64)
        return np.asarray(self.lesion_sigma, dtype=np.float64) * 4.0

    @cached_property
    def foreground_by_class(self) -> list[np.ndarray]:
        """The ``foreground`` voxels grouped by class (one array per vertebra in the case)."""
        classes = self.classes[tuple(self.foreground.T)]
        return [self.foreground[classes == c] for c in np.unique(classes)]


def to_stage_grid(case: Case, spacing, window=(-1000.0, 1000.0), rng=None,
                  crop_margin_mm: float | None = None, domain: int = -1) -> StageCase:
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
    size_mm = np.array([float(np.mean(l.get("size_mm") or DEFAULT_LESION_MM)) for l in lesions])
    sigma = np.maximum(size_mm / 4.0, 2.0) / voxel
    lesion_class = np.array([table.lesion_class_names.index(l["class"]) for l in lesions], dtype=np.int64)
    rng = rng or np.random.default_rng(0)
    fg = np.argwhere(classes > 0)
    if len(fg) > 20000:
        fg = fg[rng.choice(len(fg), 20000, replace=False)]
    return StageCase(image.astype(np.float32), classes.astype(np.uint8), ijk, sigma, lesion_class, fg,
                     size_mm / voxel, int(domain))


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
    """Per-class Gaussian peaks (value 1 at the voxel nearest each lesion centre) inside the patch starting at
    ``origin`` (centres are rounded first, so the peak voxel is exactly 1 as the CenterNet focal loss needs)."""
    heat = np.zeros((num_classes, *shape), dtype=np.float32)
    grids = np.meshgrid(*[np.arange(s, dtype=np.float32) for s in shape], indexing="ij")
    for centre, sigma, cls in zip(np.round(lesion_ijk) - origin, lesion_sigma, lesion_class):
        if np.any(centre < -3 * sigma) or np.any(centre > np.array(shape) + 3 * sigma):
            continue
        d2 = sum((g - c) ** 2 for g, c in zip(grids, centre))
        np.maximum(heat[cls], np.exp(-d2 / (2 * sigma**2)), out=heat[cls])
    return heat


# --- augmentation ---------------------------------------------------------------------------------------------
def _as_config(config) -> AugmentConfig:
    if isinstance(config, AugmentConfig):
        return config
    if isinstance(config, (int, float)) and not isinstance(config, bool):
        return AugmentConfig(prob=float(config))
    return AugmentConfig()


def augmentation(config: AugmentConfig | float | None = None) -> Compose:
    """Spatial transforms on ``image`` and ``seg`` (same random draw for both); the intensity transforms are
    :func:`intensity_augmentation`. A float is the affine probability (the earlier signature)."""
    config = _as_config(config)
    keys = ("image", "seg")
    transforms = [
        RandAffined(keys=keys, prob=config.prob, rotate_range=(np.deg2rad(config.rotate_deg),) * 3,
                    scale_range=(config.scale,) * 3, translate_range=(config.translate_voxels,) * 3,
                    mode=("bilinear", "nearest"), padding_mode="zeros"),
    ]
    if config.paper_flips:
        transforms += [RandFlipd(keys=keys, prob=0.5, spatial_axis=axis) for axis in (0, 1, 2)]
        transforms += [RandRotate90d(keys=keys, prob=0.5, spatial_axes=axes) for axes in ((0, 1), (0, 2), (1, 2))]
    elif config.lr_flip:
        transforms.append(RandFlipd(keys=keys, prob=0.5, spatial_axis=0))  # left-right (RAS: i is x)
    return Compose(transforms)


def intensity_augmentation(config: AugmentConfig | None = None) -> Compose:
    config = _as_config(config)
    return Compose([
        RandGaussianSmoothd(keys="image", prob=config.smooth_prob, sigma_x=(0.3, 0.8), sigma_y=(0.3, 0.8),
                            sigma_z=(0.3, 0.8)),
        RandGaussianNoised(keys="image", prob=config.noise_prob, std=config.noise_std),
        RandScaleIntensityd(keys="image", prob=config.intensity_prob, factors=config.intensity_scale),
        RandShiftIntensityd(keys="image", prob=config.intensity_prob, offsets=config.intensity_shift),
    ])


def elastic_augmentation(config: AugmentConfig | None = None) -> Rand3DElasticd:
    """Elastic deformation of image, labels and three coordinate channels (to move lesion centres)."""
    config = _as_config(config)
    return Rand3DElasticd(keys=("image", "seg", "coords"), prob=1.0, sigma_range=tuple(config.elastic_sigma),
                          magnitude_range=tuple(config.elastic_magnitude), mode=("bilinear", "nearest", "bilinear"),
                          padding_mode=("zeros", "zeros", "border"))


def _trilinear(field: torch.Tensor, points: np.ndarray) -> np.ndarray:
    """``field`` (C, I, J, K) at continuous voxel ``points`` (N, 3), clamped to the volume → (N, C)."""
    shape = np.array(field.shape[1:])
    p = np.clip(points, 0, shape - 1)
    lo = np.minimum(np.floor(p).astype(int), shape - 2).clip(0)
    frac = p - lo
    out = np.zeros((len(p), field.shape[0]))
    data = field.numpy()
    for corner in range(8):
        bits = np.array([(corner >> a) & 1 for a in range(3)])
        weight = np.prod(np.where(bits, frac, 1 - frac), axis=1)
        idx = np.minimum(lo + bits, shape - 1)
        out += weight[:, None] * data[:, idx[:, 0], idx[:, 1], idx[:, 2]].T
    return out


def _invert_deformation(coords: torch.Tensor, points: np.ndarray, iterations: int = 4) -> np.ndarray:
    """Output positions of input ``points`` under a smooth warp whose output voxel ``x`` samples input position
    ``coords[:, x]``: solve ``x + d(x) = p`` with ``d = coords - identity`` by fixed-point iteration."""
    grid = torch.stack(torch.meshgrid(*[torch.arange(s, dtype=coords.dtype) for s in coords.shape[1:]],
                                      indexing="ij"))
    displacement = coords - grid
    x = points.copy()
    for _ in range(iterations):
        x = points - _trilinear(displacement, x)
    return x


class PatchSampler:
    """Draws augmented training patches from cases on one stage's grid.

    ``sample()`` returns ``image`` (1, p, p, p), ``seg`` (1, p, p, p) class indices, ``heat``
    (lesion classes, p, p, p), ``domain`` (scalar id, -1 unknown) and ``lesions`` (N, 7): centre (3, patch
    voxels, sub-voxel, may lie outside the patch), box size (3, voxels) and class, after augmentation.
    """

    def __init__(self, cases: list[StageCase], patch: int, rng: np.random.Generator,
                 augment: bool | AugmentConfig = True, lesion_fraction: float = 0.3,
                 foreground_fraction: float = 0.5, balance_levels: bool = False):
        self.cases, self.patch, self.rng = cases, patch, rng
        self.balance_levels = balance_levels
        self.augment = (augment if isinstance(augment, AugmentConfig) else AugmentConfig()) if augment else None
        if self.augment is not None:
            self.spatial = augmentation(self.augment)
            self.intensity = intensity_augmentation(self.augment)
            self.elastic = elastic_augmentation(self.augment) if self.augment.elastic else None
        self.lesion_fraction, self.foreground_fraction = lesion_fraction, foreground_fraction
        self.num_lesion_classes = len(load_label_table().lesion_classes)

    def _centre(self, case: StageCase) -> np.ndarray:
        draw = self.rng.random()
        if draw < self.lesion_fraction and len(case.lesion_ijk):
            return case.lesion_ijk[self.rng.integers(len(case.lesion_ijk))] + self.rng.normal(0, 4, 3)
        if draw < self.lesion_fraction + self.foreground_fraction and len(case.foreground):
            voxels = case.foreground
            if self.balance_levels:
                levels = case.foreground_by_class
                voxels = levels[self.rng.integers(len(levels))]
            return voxels[self.rng.integers(len(voxels))].astype(float)
        # Background: a voxel outside the vertebrae (a few tries; the spine is a small part of a scan).
        for _ in range(10):
            centre = self.rng.uniform(0, case.image.shape)
            if case.classes[tuple(np.minimum(centre.astype(int), np.array(case.image.shape) - 1))] == 0:
                break
        return centre

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
        centres = np.asarray(case.lesion_ijk, dtype=np.float64).reshape(-1, 3) - origin
        sizes = np.repeat(case.sizes()[:, None], 3, axis=1).reshape(-1, 3)
        sigma = np.asarray(case.lesion_sigma, dtype=np.float64).reshape(-1)
        item = {"image": torch.from_numpy(image)[None], "seg": torch.from_numpy(seg.astype(np.float32))[None]}
        if self.augment is not None:
            item, centres, sizes, sigma = self._augment(item, centres, sizes, sigma)
        heat = heatmap_target((p, p, p), np.zeros(3), centres, sigma, case.lesion_class, self.num_lesion_classes)
        lesions = np.concatenate([centres, sizes, np.asarray(case.lesion_class, dtype=np.float64)[:, None]], axis=1)
        return {"image": torch.as_tensor(item["image"]).float(), "seg": torch.as_tensor(item["seg"]).long(),
                "heat": torch.from_numpy(heat), "domain": torch.tensor(int(case.domain)),
                "lesions": torch.from_numpy(lesions.astype(np.float32)).reshape(-1, 7)}

    def _augment(self, item: dict, centres: np.ndarray, sizes: np.ndarray, sigma: np.ndarray):
        config = self.augment
        if self.elastic is not None and self.rng.random() < config.elastic_prob:
            shape = item["image"].shape[1:]
            item["coords"] = torch.stack(torch.meshgrid(*[torch.arange(s, dtype=torch.float32) for s in shape],
                                                        indexing="ij"))
            self.elastic.set_random_state(int(self.rng.integers(2**31)))
            item = self.elastic(item)
            coords = torch.as_tensor(item.pop("coords")).float()
            if len(centres):
                centres = _invert_deformation(coords, centres)
            item = {k: v.as_tensor() if isinstance(v, MetaTensor) else torch.as_tensor(v) for k, v in item.items()}
        item = {"image": MetaTensor(item["image"], affine=torch.eye(4, dtype=torch.float64)),
                "seg": MetaTensor(item["seg"], affine=torch.eye(4, dtype=torch.float64))}
        self.spatial.set_random_state(int(self.rng.integers(2**31)))
        item = self.spatial(item)
        # MONAI keeps the affine "output voxel -> input voxel" (the input's affine was the identity).
        to_input = np.asarray(torch.as_tensor(item["image"].affine), dtype=np.float64)
        to_output = np.linalg.inv(to_input)
        if len(centres):
            centres = centres @ to_output[:3, :3].T + to_output[:3, 3]
            stretch = np.linalg.norm(to_output[:3, :3], axis=1)  # output voxels per input voxel, per output axis
            sizes = sizes * stretch[None, :]
            sigma = sigma * float(np.mean(stretch))
        item = {"image": torch.as_tensor(item["image"].as_tensor()), "seg": torch.as_tensor(item["seg"].as_tensor())}
        self.intensity.set_random_state(int(self.rng.integers(2**31)))
        item = self.intensity(item)
        return item, centres, sizes, sigma

    def batch(self, size: int) -> dict[str, torch.Tensor]:
        """Stacked samples; ``lesions`` becomes (K, 8) with the batch index first."""
        items = [self.sample() for _ in range(size)]
        out = {key: torch.stack([item[key] for item in items]) for key in ("image", "seg", "heat", "domain")}
        out["lesions"] = torch.cat([torch.cat([torch.full((len(item["lesions"]), 1), float(b)), item["lesions"]], 1)
                                    for b, item in enumerate(items)])
        return out
