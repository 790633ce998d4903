"""Vertebrae, sacrum, discs and the spinal canal painted into the tissue map and the label map.

Each shape is a union of depth primitives in the vertebra's own frame (u right, v anterior, w up): a body with
concave end plates and a cortical shell, pedicles, laminae, a spinous process, transverse processes and
articular processes around the spinal canal. C1 is a ring with lateral masses, C2 carries the dens.
"""

from __future__ import annotations

import numpy as np

from .config import Tissue
from .raster import Frame, Grid, Region, capsule, ellipsoid, elliptic_cylinder, paint_bone
from .spine import Sacrum, Vertebra

BONE = (Tissue.CORTICAL, Tissue.CANCELLOUS)


def body_depth(vertebra: Vertebra, p):
    """Depth inside the vertebral body (fracture included) at local points p = (u, v, w)."""
    d = vertebra.dims
    u, v, w = p
    a, b, half_h = d["body_w"] / 2, d["body_d"] / 2, d["body_h"] / 2
    waist = 1.0 - 0.06 * (1.0 - np.minimum((w / np.float32(half_h)) ** 2, 1.0))
    rho2 = (u / (np.float32(a) * waist)) ** 2 + (v / np.float32(b)) ** 2
    rho = np.sqrt(rho2)
    radial = (1.0 - rho) * np.float32(min(a, b))
    posterior = v + np.float32(0.88 * b)
    factor = np.float32(1.0)
    fracture = vertebra.fracture
    if fracture:
        loss = np.float32(fracture["loss"])
        if fracture["type"] == "wedge":
            factor = 1.0 - loss * np.clip((v / np.float32(b) + 1.0) / 2.0, 0.0, 1.0)
        elif fracture["type"] == "biconcave":
            factor = 1.0 - loss * np.clip(1.0 - rho2, 0.0, 1.0)
        else:
            factor = 1.0 - loss
    height = np.float32(half_h) * factor - np.float32(d["concavity"]) * np.clip(1.0 - rho2, 0.0, 1.0)
    return np.minimum(np.minimum(radial, posterior), height - np.abs(w))


def canal_centre_v(vertebra: Vertebra) -> float:
    d = vertebra.dims
    return -0.88 * d["body_d"] / 2 - d["canal_d"] / 2 + 0.5


def _posterior_elements(vertebra: Vertebra, region: Region, depth) -> None:
    """Union the pedicles, laminae, spinous, transverse and articular processes into ``depth``."""
    d = vertebra.dims
    half_h = d["body_h"] / 2
    vc = canal_centre_v(vertebra)
    xp = d["canal_w"] / 2 + d["ped_r"] * 0.7
    wp = 0.2 * half_h
    junction_v = vc - d["canal_d"] * 0.2
    base = np.array([0.0, vc - d["canal_d"] / 2 - d["lam_r"] * 0.5, wp - 0.1 * d["body_h"]])
    angle = np.radians(d["spin_angle"])
    tip = base + d["spin_len"] * np.array([0.0, -np.cos(angle), -np.sin(angle)])
    region.union_capsule(depth, base, tip, d["spin_r"], d["spin_h"])
    back = np.radians(d["tp_back"])
    fr = d["facet_r"]
    sup_v = junction_v + 0.5 * fr  # superior articular processes: anterior-lateral, rising from the junction
    inf_v = sup_v - 2 * fr - 1.2  # inferior ones hang from the lamina, behind the superior ones of the level below
    inf_top = wp - 0.15 * d["body_h"]
    for side in (-1.0, 1.0):
        junction = np.array([side * xp, junction_v, wp])
        start = (side * min(xp, 0.75 * d["body_w"] / 2), -0.7 * d["body_d"] / 2, wp)  # from the body's back corner
        region.union_capsule(depth, start, junction, d["ped_r"], 1.5 * d["ped_r"])
        region.union_capsule(depth, junction, base, d["lam_r"], 0.35 * d["body_h"])
        region.union_capsule(depth, (side * xp, vc, wp), (side * (xp + d["tp_len"] * np.cos(back)),
                             vc - d["tp_len"] * np.sin(back), wp), d["tp_r"], d["tp_h"])
        region.union_capsule(depth, (side * xp, sup_v, wp), (side * xp, sup_v, half_h + 0.7 * d["disc"] - fr), fr)
        region.union_capsule(depth, (side * 0.8 * xp, junction_v - 0.3 * d["lam_r"], wp - 0.1 * d["body_h"]),
                             (side * xp, inf_v, inf_top), fr)
        region.union_capsule(depth, (side * xp, inf_v, inf_top), (side * xp, inf_v, -half_h - 0.7 * d["disc"] + fr), fr)


def _atlas(vertebra: Vertebra, p):
    """C1: ring of anterior and posterior arches with lateral masses and transverse processes, no body."""
    s = vertebra.dims["body_w"] / 16.0  # C1 scales with the cervical size
    u, v, w = p
    outer = elliptic_cylinder(p, (0.0, -9.0 * s), (22.0 * s, 23.0 * s))
    inner = elliptic_cylinder(p, (0.0, -9.0 * s), (16.0 * s, 17.5 * s))
    depth = np.minimum(np.minimum(outer, -inner), np.float32(5.0 * s) - np.abs(w))
    for side in (-1.0, 1.0):
        np.maximum(depth, ellipsoid(p, (side * 16.0 * s, -2.0 * s, 0.0), (6.5 * s, 9.0 * s, 7.5 * s)), out=depth)
        process = capsule(p, (side * 20 * s, -3 * s, 0), (side * 36 * s, -5 * s, 0), 3.5 * s, 4.0 * s)
        np.maximum(depth, process, out=depth)
    return depth


def vertebra_extent(vertebra: Vertebra):
    d = vertebra.dims
    if vertebra.kind == "C1":
        s = d["body_w"] / 16.0
        return np.array([-42 * s, -36 * s, -9 * s]), np.array([42 * s, 10 * s, 9 * s])
    reach = d["canal_w"] / 2 + d["ped_r"] + d["tp_len"] + d["tp_r"] + 2
    lateral = max(d["body_w"] / 2 + 2, reach)
    back = -0.88 * d["body_d"] / 2 - d["canal_d"] - d["spin_len"] - d["lam_r"] - d["spin_h"] - 2
    low = -d["body_h"] / 2 - d["disc"] * 0.7 - d["spin_len"] * np.sin(np.radians(d["spin_angle"])) - d["spin_h"] - 3
    high = d["body_h"] / 2 + d["disc"] * 0.7 + 3 + (18.0 if vertebra.kind == "C2" else 0.0)
    return np.array([-lateral, back, low]), np.array([lateral, d["body_d"] / 2 + 2, high])


def vertebra_depth(vertebra: Vertebra, region: Region):
    p = region.p
    if vertebra.kind == "C1":
        return _atlas(vertebra, p)
    depth = body_depth(vertebra, p)
    _posterior_elements(vertebra, region, depth)
    d = vertebra.dims
    if vertebra.kind == "C2":
        half_h = d["body_h"] / 2
        np.maximum(depth, capsule(p, (0, 1.5, half_h - 2), (0, 0.5, half_h + 15.5), 5.5), out=depth)
        for side in (-1.0, 1.0):  # broad superior articular surfaces carrying C1's lateral masses
            np.maximum(depth, ellipsoid(p, (side * (d["body_w"] / 2 + 3.5), -2.0, half_h - 0.5), (6.0, 8.0, 2.5)),
                       out=depth)
    if vertebra.kind == "cervical":  # foramina transversaria
        for side in (-1.0, 1.0):
            hole = elliptic_cylinder(p, (side * (d["canal_w"] / 2 + d["ped_r"] + 4.5), canal_centre_v(vertebra) + 1),
                                     (1.8, 1.8))
            np.minimum(depth, -hole, out=depth)
    canal = elliptic_cylinder(p, (0.0, canal_centre_v(vertebra)), (d["canal_w"] / 2, d["canal_d"] / 2))
    return np.minimum(depth, -canal, out=depth)


def paint_vertebra(grid: Grid, tissue, labels, vertebra: Vertebra, cortex_mm: float):
    """Paint one vertebra (bone, label, and the spinal canal through it); returns its voxel box or None."""
    low, high = vertebra_extent(vertebra)
    box = grid.box(vertebra.frame, low, high)
    if box is None:
        return None
    region = Region(grid, box, vertebra.frame)
    p = region.p
    if vertebra.kind != "C1":
        d = vertebra.dims
        canal = elliptic_cylinder(p, (0.0, canal_centre_v(vertebra)), (d["canal_w"] / 2 - 1.5, d["canal_d"] / 2 - 1.0))
        csf = (canal > 0) & (np.abs(p[2]) < np.float32(d["body_h"] / 2 + d["disc"] * 0.6))
        tissue[box][csf] = Tissue.CSF
    paint_bone(tissue, labels, box, vertebra_depth(vertebra, region), cortex_mm, vertebra.label, BONE)
    return box


def paint_disc(grid: Grid, tissue, upper: Vertebra, lower_frame, lower_dims: dict):
    """Disc between ``upper``'s lower end plate and the next body's upper end plate (overlapping both bodies,
    which are painted afterwards), plus the canal segment behind it."""
    ud = upper.dims
    bottom = upper.frame.origin - upper.frame.axes[2] * ud["body_h"] / 2
    top = lower_frame.origin + lower_frame.axes[2] * lower_dims["body_h"] / 2
    axes = upper.frame.axes + lower_frame.axes
    up = axes[2] / np.linalg.norm(axes[2])
    ant = axes[1] - np.dot(axes[1], up) * up
    ant /= np.linalg.norm(ant)
    frame = Frame((bottom + top) / 2, np.stack([np.cross(ant, up), ant, up]))
    gap = float(np.linalg.norm(bottom - top))
    a = (ud["body_w"] + lower_dims["body_w"]) / 4
    b = (ud["body_d"] + lower_dims["body_d"]) / 4
    half = gap / 2 + 0.3 * min(ud["body_h"], lower_dims["body_h"])
    canal_v = canal_centre_v(upper)
    box = grid.box(frame, (-a - 2, canal_v - ud["canal_d"], -half - 1), (a + 2, b + 2, half + 1))
    if box is None:
        return
    p = grid.coords(box, frame)
    u, v, w = p
    inside_h = np.abs(w) < np.float32(half)
    t = tissue[box]
    disc = (elliptic_cylinder(p, (0.0, 0.0), (a, b)) > 0) & (v > np.float32(-0.88 * b)) & inside_h
    t[disc] = Tissue.DISC
    nucleus = disc & (ellipsoid(p, (0.0, -0.1 * b, 0.0), (0.5 * a, 0.45 * b, gap / 2)) > 0)
    t[nucleus] = Tissue.NUCLEUS
    canal = elliptic_cylinder(p, (0.0, canal_v), (ud["canal_w"] / 2 - 1.5, ud["canal_d"] / 2 - 1.0)) > 0
    t[canal & inside_h] = Tissue.CSF


def sacrum_depth(sacrum: Sacrum, p):
    u, v, w = p
    length = np.float32(sacrum.length)
    t = np.clip(-w / length, 0.0, 1.0)
    centre_v = -np.float32(sacrum.curvature * sacrum.length) * t * (1.0 - t)
    a = np.float32(sacrum.half_width) * (1.0 - t) ** 0.9 + np.float32(9.0)
    b0 = np.float32(sacrum.half_depth) * (1.0 - 0.65 * t)
    b = b0 * (1.0 - 0.5 * np.minimum((u / a) ** 2, 1.0))
    rho = np.sqrt((u / a) ** 2 + ((v - centre_v) / b) ** 2)
    depth = np.minimum((1.0 - rho) * np.minimum(a, b), np.minimum(-w, length + w))
    canal_a = np.maximum(11.0 * (1.0 - t), 3.0)
    canal_b = np.maximum(5.5 * (1.0 - t), 2.0)
    canal_v = centre_v - 0.5 * b0
    canal = (1.0 - np.sqrt((u / canal_a) ** 2 + ((v - canal_v) / canal_b) ** 2)) * np.minimum(canal_a, canal_b)
    canal = np.where(t < 0.85, canal, -1.0)
    np.minimum(depth, -canal, out=depth)
    for level in (0.17, 0.36, 0.55, 0.72):  # anterior sacral foramina
        for side in (-1.0, 1.0):
            hole = elliptic_cylinder(p, (side * 0.3 * sacrum.half_width * (1 - level * 0.5), -level * sacrum.length),
                                     (3.5, 3.5), axis=1)
            np.minimum(depth, -hole, out=depth)
    return depth


def paint_sacrum(grid: Grid, tissue, labels, sacrum: Sacrum, cortex_mm: float):
    hw, hd = sacrum.half_width + 10, sacrum.half_depth + 8
    box = grid.box(sacrum.frame, (-hw, -hd - sacrum.curvature * sacrum.length / 4 - 4, -sacrum.length - 2),
                   (hw, hd + 2, 2))
    if box is None:
        return None
    p = grid.coords(box, sacrum.frame)
    paint_bone(tissue, labels, box, sacrum_depth(sacrum, p), cortex_mm, sacrum.label, BONE)
    return box
