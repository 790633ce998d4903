"""Perturbations of an input CT that simulate other scanners and protocols (robustness protocol; also used to
make phantom "domains" in the tests). Each takes and returns a :class:`~SpineSegLib.volume.Volume` in HU on the
same grid, clipped to [-1024, 3071], and is deterministic given its seed.

* ``hu_scale(f)``: HU × f about ``pivot`` (0 HU, water): a calibration or reconstruction-kernel change (air and
  bone move, water stays).
* ``noise(σ)``: additive white Gaussian noise of σ HU (lower dose).
* ``thick_slices(t)``: thick-slice acquisition along the superior–inferior axis: each thick slice averages
  ``t`` mm of the volume (box profile), sampled every ``t`` mm, then linearly interpolated back onto the original
  grid — the partial-volume blur and staircase of a t-mm reconstruction seen on a thin grid. No change when the
  slices are already ``t`` mm or thicker.
* ``metal(...)``: two metal rods (3000 HU, ∅ 6 mm, running superior–inferior over ``extent_mm``) ``spacing_mm``
  apart left and right of a point of the spine (a crude pair of pedicle screws), with bright and dark streaks
  radiating from them in the axial slices they cross (amplitude decaying with distance) and a dark band between.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse

from SpineSegLib.volume import Volume

HU_MIN, HU_MAX = -1024.0, 3071.0


def _clipped(array: np.ndarray, affine) -> Volume:
    return Volume(np.clip(array, HU_MIN, HU_MAX).astype(np.float32), affine)


def hu_scale(volume: Volume, factor: float, pivot: float = 0.0) -> Volume:
    array = np.asarray(volume.array, dtype=np.float32)
    return _clipped((array - pivot) * np.float32(factor) + pivot, volume.affine)


def noise(volume: Volume, sigma_hu: float, seed: int = 0) -> Volume:
    rng = np.random.default_rng(seed)
    array = np.asarray(volume.array, dtype=np.float32)
    return _clipped(array + rng.normal(0.0, sigma_hu, array.shape).astype(np.float32), volume.affine)


def superior_axis(affine: np.ndarray) -> int:
    """The array axis closest to the superior–inferior direction."""
    directions = np.asarray(affine)[:3, :3] / np.linalg.norm(np.asarray(affine)[:3, :3], axis=0)
    return int(np.argmax(np.abs(directions[2])))


def thick_slice_operator(n: int, step: float) -> sparse.csr_matrix:
    """(n, n) sparse matrix: box-average over ``step`` voxels at thick-slice centres, then linear interpolation
    back to every voxel (voxel i covers [i - 0.5, i + 0.5])."""
    count = int(np.ceil(n / step))
    centres = (step - 1) / 2 + step * np.arange(count)
    # averaging: thick slice k covers [c_k - step/2, c_k + step/2], clipped to the volume
    rows, cols, vals = [], [], []
    for k, c in enumerate(centres):
        low, high = max(c - step / 2, -0.5), min(c + step / 2, n - 0.5)
        for i in range(int(np.floor(low + 0.5)), int(np.ceil(high - 0.5)) + 1):
            overlap = min(high, i + 0.5) - max(low, i - 0.5)
            if overlap > 1e-9 and 0 <= i < n:
                rows.append(k)
                cols.append(i)
                vals.append(overlap)
    average = sparse.csr_matrix((vals, (rows, cols)), shape=(count, n))
    average = sparse.diags(1.0 / np.asarray(average.sum(axis=1)).ravel()) @ average
    # interpolation from thick-slice centres back to voxels (constant beyond the first and last centre)
    position = np.clip(np.arange(n, dtype=float), centres[0], centres[-1])
    k0 = np.clip(np.floor((position - centres[0]) / step).astype(int), 0, count - 1)
    k1 = np.minimum(k0 + 1, count - 1)
    w1 = np.where(k1 > k0, (position - centres[k0]) / step, 0.0)
    interpolate = sparse.csr_matrix((np.r_[1 - w1, w1], (np.r_[np.arange(n), np.arange(n)], np.r_[k0, k1])),
                                    shape=(n, count))
    return (interpolate @ average).tocsr()


def thick_slices(volume: Volume, thickness_mm: float) -> Volume:
    axis = superior_axis(volume.affine)
    spacing = float(volume.spacing[axis])
    array = np.asarray(volume.array, dtype=np.float32)
    if thickness_mm <= spacing * 1.001:
        return Volume(array.copy(), volume.affine)
    operator = thick_slice_operator(array.shape[axis], thickness_mm / spacing)
    moved = np.moveaxis(array, axis, 0)
    flat = moved.reshape(moved.shape[0], -1)
    out = (operator @ flat).astype(np.float32).reshape(moved.shape)
    return _clipped(np.moveaxis(out, 0, axis), volume.affine)


def metal(volume: Volume, centre_ras=None, seed: int = 0, amplitude_hu: float = 1200.0, rays: int = 18,
          decay_mm: float = 40.0, extent_mm: float = 24.0, spacing_mm: float = 24.0) -> Volume:
    """Screws and streak artefact around ``centre_ras`` (default: the volume's centre); see the module docstring."""
    rng = np.random.default_rng(seed)
    array = np.asarray(volume.array, dtype=np.float32).copy()
    affine = np.asarray(volume.affine)
    if centre_ras is None:
        centre_ras = affine[:3, :3] @ ((np.array(array.shape) - 1) / 2) + affine[:3, 3]
    centre = np.asarray(centre_ras, dtype=float)
    screws = [centre + [-spacing_mm / 2, 0, 0], centre + [spacing_mm / 2, 0, 0]]
    axis = superior_axis(affine)
    phase = float(rng.uniform(0, 2 * np.pi))
    other = [a for a in range(3) if a != axis]
    grid = np.stack(np.meshgrid(*[np.arange(array.shape[a]) for a in other], indexing="ij"), axis=-1)
    for index in range(array.shape[axis]):
        ijk = np.zeros(grid.shape[:2] + (3,))
        ijk[..., other[0]], ijk[..., other[1]], ijk[..., axis] = grid[..., 0], grid[..., 1], index
        ras = ijk @ affine[:3, :3].T + affine[:3, 3]
        z = float(ras[..., 2].mean())
        if abs(z - centre[2]) > extent_mm / 2:
            continue
        plane = np.take(array, index, axis=axis)
        streak = np.zeros(plane.shape, dtype=np.float32)
        for screw in screws:
            dx, dy = ras[..., 0] - screw[0], ras[..., 1] - screw[1]
            r = np.hypot(dx, dy)
            wave = np.cos(rays * np.arctan2(dy, dx) + phase)
            pattern = np.where(wave > 0, wave ** 8, -0.5 * (-wave) ** 8)
            streak += (amplitude_hu * np.exp(-r / decay_mm) * pattern).astype(np.float32)
            plane[r <= 3.0] = 3000.0
        dark = np.abs(ras[..., 1] - centre[1]) < 4.0
        dark &= (ras[..., 0] > screws[0][0]) & (ras[..., 0] < screws[1][0])
        streak[dark] -= 0.4 * amplitude_hu
        plane += np.where(plane >= 3000.0, 0.0, streak)
        index_tuple = [slice(None)] * 3
        index_tuple[axis] = index
        array[tuple(index_tuple)] = plane
    return _clipped(array, affine)


def spine_centre(labels: Volume) -> np.ndarray | None:
    """RAS centroid of the middle vertebra of a label map (where a surgeon's screws would be), or None."""
    values = [v for v in np.unique(labels.array) if v != 0]
    if not values:
        return None
    middle = values[len(values) // 2]
    ijk = np.argwhere(labels.array == middle).mean(axis=0)
    return labels.affine[:3, :3] @ ijk + labels.affine[:3, 3]
