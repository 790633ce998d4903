"""Preprocessing for the networks, and its exact inverse onto the input grid.

1. Canonical orientation: the array is permuted/flipped to the closest RAS axes (lossless, exactly invertible).
2. Resampling to the model's spacing: the grid keeps the same physical extent (voxel centres follow
   ``align_corners=False`` conventions), so resampling back lands on the canonical grid exactly.
3. Intensity: Hounsfield units clipped to the model's window and scaled to [0, 1].

The inverse maps network outputs back: class probabilities or heatmaps linearly, then labels by arg-max (or
labels by nearest neighbour), then the orientation is undone — giving arrays on the input's own grid.
"""

from __future__ import annotations

from dataclasses import dataclass

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F

from .volume import Volume

DEFAULT_WINDOW = (-1000.0, 1000.0)


@dataclass(frozen=True)
class Orientation:
    """How an input array maps onto its closest-canonical (RAS) array."""

    ornt: np.ndarray  # nibabel orientation: input axis -> (output axis, flip)
    input_shape: tuple[int, int, int]
    input_affine: np.ndarray

    @classmethod
    def of(cls, volume: Volume) -> Orientation:
        return cls(nib.orientations.io_orientation(volume.affine), volume.shape, volume.affine)

    def to_canonical(self, array: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(nib.orientations.apply_orientation(array, self.ornt))

    def from_canonical(self, array: np.ndarray) -> np.ndarray:
        inverse = nib.orientations.ornt_transform(
            nib.orientations.axcodes2ornt("RAS"), nib.orientations.io_orientation(self.input_affine)
        )
        return np.ascontiguousarray(nib.orientations.apply_orientation(array, inverse))

    @property
    def canonical_affine(self) -> np.ndarray:
        return self.input_affine @ nib.orientations.inv_ornt_aff(self.ornt, self.input_shape)

    def canonical(self, volume: Volume) -> Volume:
        return Volume(self.to_canonical(volume.array), self.canonical_affine)


def resampled_grid(shape, affine: np.ndarray, target_spacing) -> tuple[tuple[int, int, int], np.ndarray]:
    """Shape and affine of the grid covering the same extent as (shape, affine) at about ``target_spacing``."""
    shape = np.asarray(shape, dtype=np.int64)
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    new_shape = np.maximum(1, np.round(shape * spacing / np.asarray(target_spacing, dtype=np.float64))).astype(int)
    factor = shape / new_shape  # old voxels per new voxel
    scale = np.eye(4)
    scale[:3, :3] = np.diag(factor)
    scale[:3, 3] = (factor - 1.0) / 2.0  # align_corners=False: voxel centres of the new grid in old indices
    return tuple(int(n) for n in new_shape), affine @ scale


def resample_array(array: np.ndarray | torch.Tensor, shape, mode: str = "trilinear") -> torch.Tensor:
    """Resample a (C, I, J, K) or (I, J, K) array to ``shape`` over the same extent."""
    tensor = torch.as_tensor(array)
    squeeze = tensor.ndim == 3
    if squeeze:
        tensor = tensor[None]
    if tuple(tensor.shape[1:]) == tuple(shape):
        out = tensor
    elif mode == "nearest":
        out = F.interpolate(tensor[None].float(), size=tuple(shape), mode="nearest-exact")[0].to(tensor.dtype)
    else:
        out = F.interpolate(tensor[None].float(), size=tuple(shape), mode="trilinear", align_corners=False)[0]
    return out[0] if squeeze else out


def normalize_intensity(hu: np.ndarray | torch.Tensor, window=DEFAULT_WINDOW) -> torch.Tensor:
    low, high = window
    tensor = torch.as_tensor(hu, dtype=torch.float32)
    return (tensor.clamp(low, high) - low) / (high - low)


@dataclass
class Prepared:
    """A CT ready for a network, with what is needed to map outputs back to the input grid."""

    image: torch.Tensor  # (1, I, J, K) in [0, 1], canonical orientation, model spacing
    affine: np.ndarray  # voxel -> RAS of ``image``
    orientation: Orientation
    canonical_shape: tuple[int, int, int]

    def to_input_grid(self, channels: torch.Tensor, mode: str = "trilinear") -> np.ndarray:
        """(C, ...) on the model grid -> (C, input grid) numpy, resampled and re-oriented."""
        on_canonical = resample_array(channels, self.canonical_shape, mode).numpy()
        return np.stack([self.orientation.from_canonical(c) for c in on_canonical])


def prepare(ct: Volume, spacing, window=DEFAULT_WINDOW) -> Prepared:
    orientation = Orientation.of(ct)
    canonical = orientation.canonical(ct)
    shape, affine = resampled_grid(canonical.shape, canonical.affine, spacing)
    image = resample_array(normalize_intensity(canonical.array, window), shape)
    return Prepared(image[None], affine, orientation, canonical.shape)
