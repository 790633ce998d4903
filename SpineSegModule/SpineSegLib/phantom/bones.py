"""Unlabelled bones: ribs (from the thoracic transverse processes around the thorax), the sternum, and the pelvis
(iliac wings joined to the sacrum, acetabula, femoral heads and necks, pubic and ischial rami).

All are painted with a cortical shell and a cancellous core but label 0, before the vertebrae (which overwrite
them where they touch), so the network has to tell labelled vertebrae from the bone around them by anatomy.
"""

from __future__ import annotations

import numpy as np

from .body import BodyModel, _rib_size
from .config import Tissue
from .raster import WORLD, Frame, Grid, capsule, capsule_box, ellipsoid, paint_bone
from .spine import SpinePlan, Vertebra
from .vertebra import canal_centre_v

BONE = (Tissue.CORTICAL, Tissue.CANCELLOUS)


def _rib_path(vertebra: Vertebra, number: int, body: BodyModel, side: float, rng) -> np.ndarray:
    d = vertebra.dims
    frame = vertebra.frame
    vc = canal_centre_v(vertebra)
    xp = d["canal_w"] / 2 + d["ped_r"] * 0.7
    back = np.radians(d["tp_back"])
    wp = 0.2 * d["body_h"] / 2
    head = frame.to_world([side * d["body_w"] * 0.42, -0.35 * d["body_d"], wp + 0.25 * d["body_h"]])
    tip = frame.to_world([side * (xp + d["tp_len"] * np.cos(back)), vc - d["tp_len"] * np.sin(back) + d["tp_r"],
                          wp - 2])
    bx, by, ax, ay = body.ellipse_at(float(tip[2]))
    wall = float(body.at("fat", tip[2]) + body.at("wall", tip[2])) + 8.0
    size = _rib_size(number)
    rx, ry = size * (ax - wall), size * (ay - wall)
    offset = np.clip(side * (tip[0] + side * 12.0 - bx) / rx, 0.05, 0.95)
    phi0 = float(np.arcsin(offset))
    cy = tip[1] - 6.0 + ry * np.cos(phi0)
    end = np.radians(float(np.interp(number, [1, 7, 10, 11, 12, 13], [120, 125, 120, 95, 75, 60])))
    drop = float(np.interp(number, [1, 6, 12], [25, 45, 35])) * float(rng.uniform(0.85, 1.15))
    phis = np.linspace(phi0, end, 16)
    frac = (phis - phi0) / (end - phi0)
    arc = np.stack([bx + side * rx * np.sin(phis), cy - ry * np.cos(phis), tip[2] - drop * frac**1.3], axis=1)
    return np.vstack([head, tip, arc])


def paint_ribs(grid: Grid, tissue, spine: SpinePlan, body: BodyModel, rng, cortex_mm: float) -> None:
    segments = []
    thoracic = [v for v in spine.vertebrae if v.ribs]
    for number, vertebra in enumerate(thoracic, start=1):
        for side in (-1.0, 1.0):
            path = _rib_path(vertebra, number, body, side, rng)
            radius = float(rng.uniform(2.6, 3.2))
            height = float(np.interp(number, [1, 6, 12], [4.0, 5.5, 4.5]))
            for a, b in zip(path[:-1], path[1:], strict=True):
                segments.append((a, b, radius, height))
    _paint_segments(grid, tissue, segments, cortex_mm)


def _paint_segments(grid: Grid, tissue, segments, cortex_mm: float) -> None:
    """Union of capsules: cortex of all first, then the cancellous cores, so joints stay hollow-free."""
    evaluated = []
    for a, b, radius, height in segments:
        low, high = capsule_box(a, b, max(radius, height))
        box = grid.box(WORLD, low, high)
        if box is None:
            continue
        depth = capsule(grid.coords(box), a, b, radius, height)
        tissue[box][depth > 0] = Tissue.CORTICAL
        evaluated.append((box, depth))
    for box, depth in evaluated:
        tissue[box][depth >= cortex_mm] = Tissue.CANCELLOUS


def paint_sternum(grid: Grid, tissue, spine: SpinePlan, body: BodyModel, cortex_mm: float) -> None:
    lm = body.landmarks
    top, bottom = lm["T2"] if "T2" in lm else lm["T3"] + 20, lm["T9"]
    points = []
    for z in (top, bottom):
        bx, by, ax, ay = body.ellipse_at(z)
        points.append(np.array([bx, by + ay - float(body.at("fat", z)) - 10.0, z]))
    low, high = capsule_box(points[0], points[1], 16.0)
    box = grid.box(WORLD, low, high)
    if box is not None:
        depth = capsule(grid.coords(box), points[0], points[1], 5.0, 14.0, up=(1.0, 0.0, 0.0))
        paint_bone(tissue, None, box, depth, cortex_mm, None, BONE)


def paint_pelvis(grid: Grid, tissue, spine: SpinePlan, rng, cortex_mm: float) -> None:
    sacrum = spine.sacrum
    s = spine.scale
    origin = sacrum.frame.origin + np.array([0.0, 0.0, 0.0])
    frame = Frame(origin, np.eye(3))
    crest, bottom = 30.0 * s, -95.0 * s
    for side in (-1.0, 1.0):
        low = np.array([min(side * 30, side * 130), -50.0, bottom - 130]) * np.array([1, 1, 1])
        high = np.array([max(side * 30, side * 130), 130.0, crest + 6])
        box = grid.box(frame, np.minimum(low, high) * s, np.maximum(low, high) * s)
        if box is None:
            continue
        p = grid.coords(box, frame)
        depth = _ilium(p, side, s, crest, bottom)
        head_c = np.array([side * 88.0, 48.0, bottom - 18.0]) * np.array([s, s, 1.0])
        r_head = 23.0 * s
        dist = np.sqrt((p[0] - head_c[0]) ** 2 + (p[1] - head_c[1]) ** 2 + (p[2] - head_c[2]) ** 2)
        cup = np.minimum(np.minimum(r_head + 12.0 - dist, dist - r_head - 2.5), p[2] - np.float32(head_c[2] - 8))
        np.maximum(depth, cup, out=depth)
        neck_end = head_c + np.array([side * 38.0, -6.0, -32.0]) * s
        shaft_end = neck_end + np.array([-side * 12.0, 0.0, -150.0])
        femur = np.maximum(r_head - dist, capsule(p, head_c, neck_end, 12.0 * s, 15.0 * s))
        np.maximum(femur, ellipsoid(p, neck_end + np.array([side * 5, -5, 5]), (16 * s, 18 * s, 22 * s)), out=femur)
        np.maximum(femur, capsule(p, neck_end, shaft_end, 14.0 * s), out=femur)
        acet = head_c + np.array([-side * 8, 20, -22]) * s
        symphysis = np.array([side * 6.0 * s, 105.0 * s, bottom - 45.0 * s])
        tuber = head_c + np.array([-side * 25, -35, -60]) * s
        for a, b, r in ((acet, symphysis, 8.0), (head_c + np.array([-side * 5, -20, -15]) * s, tuber, 11.0),
                        (tuber, symphysis + np.array([0, -12, -25]) * s, 7.0)):
            np.maximum(depth, capsule(p, a, b, r * s), out=depth)
        for level in (0.12, 0.3):  # sacroiliac joints: the ilium reaches the sacral ala, a 2-3 mm gap between
            edge = sacrum.half_width * (1 - level) ** 0.9 + 9.0
            inner = sacrum.frame.to_world([side * (edge + 11.0), -0.2 * sacrum.half_depth, -level * sacrum.length])
            outer = origin + np.array([side * 62.0 * s, -22.0 * s, crest - 25.0 - 60.0 * level])
            region_a, region_b = frame.to_local(inner), frame.to_local(outer)
            np.maximum(depth, capsule(p, region_a, region_b, 8.5 * s, 12.0 * s), out=depth)
        paint_bone(tissue, None, box, depth, cortex_mm, None, BONE)
        paint_bone(tissue, None, box, femur, cortex_mm + 0.5, None, BONE)


def _ilium(p, side, s, crest, bottom):
    """An iliac wing: a curved plate (an elliptic arc per level) flaring from the acetabulum up to the crest."""
    u, v, w = p
    h = np.clip((w - np.float32(bottom)) / np.float32(crest - bottom), 0.0, 1.0)
    cx = np.float32(side * s) * (60.0 - 25.0 * h)
    cy = np.float32(s) * (45.0 - 5.0 * h)
    rx, ry = np.float32(s) * (30.0 + 50.0 * h), np.float32(s) * (30.0 + 45.0 * h)
    du, dv = u - cx, v - cy
    rho = np.sqrt((du / rx) ** 2 + (dv / ry) ** 2)
    psi = np.degrees(np.arctan2(np.float32(side) * du, -dv))  # 0: posterior, 90: lateral
    thickness = np.float32(s) * (5.0 + 7.0 * np.clip((h - 0.85) / 0.15, 0, 1) + 15.0 * np.clip((0.3 - h) / 0.3, 0, 1)
                                 + 14.0 * np.clip((35.0 - psi) / 25.0, 0, 1))
    depth = thickness / 2 - np.abs(rho - 1.0) * np.minimum(rx, ry)
    top = np.float32(crest) - 22.0 * ((psi - 60.0) / 60.0) ** 2
    depth = np.minimum(depth, np.minimum(top - w, w - np.float32(bottom) + 6.0))
    return np.minimum(depth, np.minimum(psi - 5.0, 125.0 - psi) * 0.5)
