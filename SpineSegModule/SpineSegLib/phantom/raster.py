"""Voxel grid, local frames and approximate signed-depth primitives, evaluated only inside bounding boxes.

Shapes are described by a *depth* in mm: positive inside (distance to the surface, approximately), negative
outside. A union is the maximum of depths, a cut-out the minimum with the negated depth of the hole, and a
cortical shell of thickness t is ``0 <= depth < t``. Every shape is evaluated in world (RAS) millimetres from the
voxel grid's affine, so RAS, LPS and oblique grids share one code path.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Frame:
    """An orthonormal frame: ``axes`` rows are the local u (right), v (anterior), w (up) directions in RAS."""

    origin: np.ndarray
    axes: np.ndarray

    def to_world(self, local) -> np.ndarray:
        return np.asarray(self.origin) + np.asarray(local, dtype=np.float64) @ self.axes

    def to_local(self, world) -> np.ndarray:
        return (np.asarray(world, dtype=np.float64) - self.origin) @ self.axes.T


WORLD = Frame(np.zeros(3), np.eye(3))


class Grid:
    def __init__(self, shape, affine):
        self.shape = tuple(int(s) for s in shape)
        self.affine = np.asarray(affine, dtype=np.float64)
        self.inverse = np.linalg.inv(self.affine)

    def box(self, frame: Frame, low, high, pad: float = 1.0):
        """Voxel slices covering the local box [low, high] of ``frame`` (clipped to the grid), or None."""
        low, high = np.asarray(low, float), np.asarray(high, float)
        corners = np.array([[x, y, z] for x in (low[0], high[0]) for y in (low[1], high[1]) for z in (low[2], high[2])])
        return self.box_world(frame.to_world(corners), pad)

    def box_world(self, points, pad: float = 1.0):
        points = np.atleast_2d(np.asarray(points, dtype=np.float64))
        ijk = points @ self.inverse[:3, :3].T + self.inverse[:3, 3]
        lo = np.maximum(np.floor(ijk.min(axis=0) - pad).astype(int), 0)
        hi = np.minimum(np.ceil(ijk.max(axis=0) + pad).astype(int) + 1, self.shape)
        if np.any(hi <= lo):
            return None
        return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))

    def coords(self, box, frame: Frame = WORLD):
        """Local coordinates (u, v, w) of the voxels of ``box`` in ``frame``, float32 arrays of the box's shape."""
        matrix = frame.axes @ self.affine[:3, :3]
        offset = frame.axes @ (self.affine[:3, 3] - frame.origin)
        ranges = [np.arange(s.start, s.stop, dtype=np.float32) for s in box]
        out = []
        for row in range(3):
            c = [np.float32(matrix[row, axis]) * ranges[axis] for axis in range(3)]
            out.append(c[0][:, None, None] + c[1][None, :, None] + (c[2][None, None, :] + np.float32(offset[row])))
        return out

    def contains_world(self, points, margin: float = 0.0) -> bool:
        points = np.atleast_2d(np.asarray(points, dtype=np.float64))
        ijk = points @ self.inverse[:3, :3].T + self.inverse[:3, 3]
        return bool(np.all(ijk >= -0.5 + margin) and np.all(ijk <= np.asarray(self.shape) - 0.5 - margin))


def ellipsoid(p, centre, radii):
    """Depth inside an axis-aligned ellipsoid of the frame (approximate, exact on the axes)."""
    q = sum(((p[a] - np.float32(centre[a])) / np.float32(radii[a])) ** 2 for a in range(3))
    return (1.0 - np.sqrt(q)) * np.float32(min(radii))


def elliptic_cylinder(p, centre, radii, axis: int = 2):
    """Depth inside an infinite elliptic cylinder along a frame axis (centre, radii: the two other axes)."""
    others = [a for a in range(3) if a != axis]
    q = sum(((p[a] - np.float32(centre[i])) / np.float32(radii[i])) ** 2 for i, a in enumerate(others))
    return (1.0 - np.sqrt(q)) * np.float32(min(radii))


def capsule(p, start, end, radius, radius_up=None, up=(0.0, 0.0, 1.0)):
    """Depth inside a segment swept by an ellipse (``radius`` sideways, ``radius_up`` towards ``up``)."""
    start, end = np.asarray(start, float), np.asarray(end, float)
    axis = end - start
    length = float(np.linalg.norm(axis)) or 1e-6
    d = axis / length
    radius_up = radius if radius_up is None else radius_up
    e_up = np.asarray(up, float) - np.dot(up, d) * d
    if np.linalg.norm(e_up) < 1e-6:
        e_up = np.array([1.0, 0.0, 0.0]) - d[0] * d
    e_up /= np.linalg.norm(e_up)
    e_side = np.cross(d, e_up)
    rel = [p[a] - np.float32(start[a]) for a in range(3)]
    t = np.clip(sum(rel[a] * np.float32(d[a]) for a in range(3)), 0.0, np.float32(length))
    q = [rel[a] - t * np.float32(d[a]) for a in range(3)]
    q_up = sum(q[a] * np.float32(e_up[a]) for a in range(3))
    q_side = sum(q[a] * np.float32(e_side[a]) for a in range(3))
    r_min = min(radius, radius_up)
    q_len = sum(q[a] * np.float32(d[a]) for a in range(3))  # non-zero only beyond the ends: round caps
    n = np.sqrt((q_side / np.float32(radius)) ** 2 + (q_up / np.float32(radius_up)) ** 2
                + (q_len / np.float32(r_min)) ** 2)
    return (1.0 - n) * np.float32(r_min)


def capsule_box(start, end, radius):
    start, end = np.asarray(start, float), np.asarray(end, float)
    return np.minimum(start, end) - radius, np.maximum(start, end) + radius


def paint_bone(tissue, labels, box, depth, cortex_mm: float, label: int | None, tissue_codes):
    """Write cortical/cancellous codes (and the label) where ``depth`` > 0 inside ``box``."""
    inside = depth > 0
    if not inside.any():
        return inside
    cortical, cancellous = tissue_codes
    t = tissue[box]
    t[inside] = cancellous
    t[inside & (depth < np.float32(cortex_mm))] = cortical
    if labels is not None and label is not None:
        labels[box][inside] = label
    return inside


class Region:
    """A voxel box with its local coordinates; unions of small shapes are evaluated on their own sub-boxes."""

    def __init__(self, grid: Grid, box, frame: Frame):
        self.grid, self.box, self.frame = grid, box, frame
        self.p = grid.coords(box, frame)

    def union_capsule(self, depth, start, end, radius, radius_up=None, up=(0.0, 0.0, 1.0)) -> None:
        low, high = capsule_box(start, end, max(radius, radius_up or radius))
        sub = self.grid.box(self.frame, low, high)
        if sub is None:
            return
        rel = tuple(slice(max(s.start, b.start) - b.start, min(s.stop, b.stop) - b.start)
                    for s, b in zip(sub, self.box, strict=True))
        if any(r.stop <= r.start for r in rel):
            return
        view = depth[rel]
        np.maximum(view, capsule([a[rel] for a in self.p], start, end, radius, radius_up, up), out=view)
