"""Soft tissue around the skeleton: body outline, skin, fat, muscle, neck airway, lungs, mediastinum, heart,
great vessels, abdominal organs with visceral fat and bowel gas, pelvic muscles and bladder, and the scanner table.

The body is an ellipse per axial level whose size and centre follow landmarks on the spine (neck smaller than the
trunk). Everything is evaluated per slab of the voxel grid from the world coordinates of its voxels, with 1-D
look-up tables along S so the per-voxel work stays a handful of vectorised operations.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .config import Tissue
from .raster import Grid
from .spine import SpinePlan

DZ = 1.0  # mm, resolution of the look-up tables along S


@dataclass
class BodyModel:
    z0: float  # top of the tables (highest S)
    tables: dict  # name -> 1-D array along -S from z0 with step DZ
    landmarks: dict  # name -> S coordinate
    table_y: float  # top of the scanner table at its centre (y)
    table_x: float
    table_thickness: float
    table_radius: float

    def at(self, name: str, z):
        index = np.clip(((self.z0 - np.asarray(z, dtype=np.float32)) / DZ).astype(np.int32), 0,
                        len(self.tables[name]) - 1)
        return self.tables[name][index]

    def ellipse_at(self, z: float):
        return tuple(float(self.at(key, z)) for key in ("bx", "by", "ax", "ay"))


def plan_body(rng: np.random.Generator, spine: SpinePlan) -> BodyModel:
    names = [v.name for v in spine.vertebrae]
    last_thoracic = "T13" if "T13" in names else "T12"
    z = {name: spine.centre_z(name) for name in names + ["sacrum"]}
    sacrum_bottom = float(spine.sacrum.frame.to_world([0, 0, -spine.sacrum.length])[2])
    marks = {"C1": z["C1"], "C4": z["C4"], "C6": z["C6"], "T1": z["T1"], "T3": z["T3"], "T4": z["T4"], "T5": z["T5"],
             "T9": z["T9"], "T10": z["T10"], "Tlast": z[last_thoracic], "L1": z["L1"], "L2": z["L2"],
             "L4": z["L4"], "L5": z["L5"], "sacrum": z["sacrum"], "sacrum_bottom": sacrum_bottom}
    z0, z1 = marks["C1"] + 120.0, sacrum_bottom - 250.0
    zs = np.arange(z0, z1, -DZ, dtype=np.float64)
    order = np.argsort(spine.curve_points[:, 2])
    sx = np.interp(zs, spine.curve_points[order, 2], spine.curve_points[order, 0])
    sy = np.interp(zs, spine.curve_points[order, 2], spine.curve_points[order, 1])
    vz = np.array([v.frame.origin[2] for v in spine.vertebrae[1:]])[::-1]
    bw = np.interp(zs, vz, [v.dims["body_w"] / 2 for v in spine.vertebrae[1:]][::-1])
    bd = np.interp(zs, vz, [v.dims["body_d"] / 2 for v in spine.vertebrae[1:]][::-1])

    u = rng.uniform
    neck = (u(50, 60), u(48, 58), u(52, 60))  # (half width, half depth, back skin behind the vertebral body centre)
    chest = (u(140, 175), u(95, 118), u(62, 78))
    abdomen = (u(135, 178), u(95, 128), u(75, 95))
    pelvis = (max(abdomen[0], u(150, 185)), u(95, 118), abdomen[2] + u(-5, 10))
    s = spine.scale
    anchors = [  # (z, (half width, half depth, back))
        (z0, neck), (marks["C6"], neck),
        (marks["T1"] + 8, tuple(0.8 * c + 0.2 * n for c, n in zip(chest, neck, strict=True))),
        (marks["T3"], chest), (marks["T10"], chest), (marks["L2"], abdomen), (marks["L5"], abdomen),
        (marks["sacrum"] - 40, pelvis), (z1, pelvis)]
    az = np.array([a[0] for a in anchors])[::-1]
    ax, ay, back = (np.interp(zs, az, np.array([a[1][i] * s for a in anchors])[::-1]) for i in range(3))
    # the body centre follows a smoothed spine (posture), not every bump of it
    kernel = np.ones(81) / 81.0
    sy_smooth = np.convolve(np.pad(sy, 40, mode="edge"), kernel, mode="valid")
    sx_smooth = np.convolve(np.pad(sx, 40, mode="edge"), kernel, mode="valid")
    by = sy_smooth - back + ay
    trunk = (zs < marks["T1"]) & (zs > sacrum_bottom - 60)
    table_y = float(np.min((by - ay)[trunk])) - u(0.0, 2.0)
    # lying supine: the back of the trunk rests on the table (the neck blends towards its own posture)
    rest = np.clip((marks["C6"] - zs) / max(marks["C6"] - marks["T1"] + 10.0, 1.0), 0.0, 1.0)
    by = by + rest * (table_y + ay - by)
    fat0 = u(4.0, 22.0)
    fat = np.interp(zs, az, np.array([0.5, 0.5, 0.8, 1.0, 1.0, 1.4, 1.4, 1.3, 1.3])[::-1]) * fat0
    thoracic = [v for v in spine.vertebrae if v.ribs]
    rib_z = np.array([v.frame.origin[2] for v in thoracic])[::-1]
    cage = np.interp(zs, rib_z, [_rib_size(n) for n in range(len(thoracic), 0, -1)])
    tables = {"sx": sx, "sy": sy, "bx": sx_smooth, "by": by, "ax": ax, "ay": ay, "fat": fat,
              "wall": np.full_like(zs, u(8.0, 14.0)), "bw": bw, "bd": bd, "cage": cage}
    tables = {k: np.asarray(v, dtype=np.float32) for k, v in tables.items()}
    return BodyModel(float(z0), tables, marks, table_y, float(np.mean(sx_smooth[trunk])), u(12.0, 22.0), u(500, 900))


def _rib_size(number: int) -> float:
    """Rib cage size at a rib (1 = top) relative to the trunk's inner wall."""
    return float(np.interp(number, [1, 2, 3, 5, 8, 12], [0.5, 0.72, 0.86, 0.97, 1.0, 0.95]))


class SmoothField:
    """Smooth random field on the voxel grid: coarse Gaussian noise, linearly upsampled (i, j once; k per slab)."""

    def __init__(self, rng: np.random.Generator, shape, cell_voxels):
        cells = [max(2, int(np.ceil(n / c)) + 2) for n, c in zip(shape, cell_voxels, strict=True)]
        coarse = rng.standard_normal(cells).astype(np.float32)
        wi, wj, self.wk = (self._weights(n, c, m) for n, c, m in zip(shape, cell_voxels, cells, strict=True))
        plane = np.tensordot(wi, coarse, axes=([1], [0]))  # (I, cj, ck)
        self.plane = np.ascontiguousarray(np.einsum("jb,ibk->ijk", wj, plane)).reshape(-1, cells[2])  # (I*J, ck)
        self.shape = shape

    @staticmethod
    def _weights(n, cell, m):
        pos = np.arange(n) / cell + 0.5
        lo = np.clip(np.floor(pos).astype(int), 0, m - 2)
        frac = (pos - lo).astype(np.float32)
        w = np.zeros((n, m), dtype=np.float32)
        w[np.arange(n), lo] = 1 - frac
        w[np.arange(n), lo + 1] = frac
        return w

    def slab(self, k0, k1):
        return (self.plane @ self.wk[k0:k1].T).reshape(self.shape[0], self.shape[1], k1 - k0)


def paint_body(grid: Grid, tissue, body: BodyModel, rng: np.random.Generator, progress=None):
    """Classify soft tissue slab by slab, only inside the body's (and the table's) bounding box of each slab."""
    shape = grid.shape
    spacing = np.linalg.norm(grid.affine[:3, :3], axis=0)
    field = SmoothField(rng, shape, [max(2.0, 22.0 / s) for s in spacing])
    heart_shift = float(rng.uniform(10, 25))
    tb = body.tables
    slab = max(1, int(1_000_000 // (shape[0] * shape[1])))
    for k0 in range(0, shape[2], slab):
        k1 = min(shape[2], k0 + slab)
        corners = np.array([[i, j, k] for i in (0, shape[0] - 1) for j in (0, shape[1] - 1) for k in (k0, k1 - 1)])
        zs = (corners @ grid.affine[:3, :3].T + grid.affine[:3, 3])[:, 2]
        rows = slice(*np.clip(((body.z0 - np.array([zs.max(), zs.min()])) / DZ).astype(int) + [0, 2], 0, len(tb["bx"])))
        if rows.stop <= rows.start:
            continue
        x0, x1 = float(np.min(tb["bx"][rows] - tb["ax"][rows])), float(np.max(tb["bx"][rows] + tb["ax"][rows]))
        y0, y1 = float(np.min(tb["by"][rows] - tb["ay"][rows])), float(np.max(tb["by"][rows] + tb["ay"][rows]))
        for world, classify in (
            ((x0 - 3, y0 - 3, x1 + 3, y1 + 3),
             lambda b: _classify(body, *grid.coords(b), _noise(field, b), heart_shift)),
            ((body.table_x - 232, body.table_y - body.table_thickness - 3, body.table_x + 232,
              body.table_y + 232.0**2 / (2 * body.table_radius) + 3), lambda b: _table(body, *grid.coords(b)[:2],
                                                                                      tissue[b])),
        ):
            points = [[x, y, z] for x in (world[0], world[2]) for y in (world[1], world[3])
                      for z in (zs.min(), zs.max())]
            box = grid.box_world(points)
            if box is None:
                continue
            box = (box[0], box[1], slice(max(box[2].start, k0), min(box[2].stop, k1)))
            if box[2].stop <= box[2].start:
                continue
            result = classify(box)
            if result is not None:
                tissue[box] = result
        if progress:
            progress(k1 / shape[2], "soft tissue")


def _noise(field: SmoothField, box):
    def slab():
        return field.slab(box[2].start, box[2].stop)[box[0], box[1]]

    return slab


def _classify(body: BodyModel, x, y, z, noise_slab, heart_shift):
    T = Tissue
    tb = body.tables
    idx = ((np.float32(body.z0) - z) * np.float32(1.0 / DZ)).astype(np.intp)
    np.clip(idx, 0, len(tb["bx"]) - 1, out=idx)
    dx, dy = x - np.take(tb["bx"], idx), y - np.take(tb["by"], idx)
    ax, ay = np.take(tb["ax"], idx), np.take(tb["ay"], idx)
    nx, ny = dx / ax, dy / ay
    ny = np.where(dy < 0, ny * (1.0 - 0.3 * nx * nx), ny)  # flatter back
    rho = np.sqrt(nx * nx + ny * ny)
    depth = np.sqrt(dx * dx + dy * dy) * (1.0 / np.maximum(rho, 1e-3) - 1.0)  # mm under the skin along the ray
    fat, wall = np.take(tb["fat"], idx), np.take(tb["wall"], idx)
    out = np.full(x.shape, T.AIR, dtype=np.uint8)
    inside = rho < 1.0
    out[inside] = T.SKIN
    out[inside & (depth >= 2.0)] = T.FAT
    out[inside & (depth >= 2.0 + fat)] = T.MUSCLE
    deep = np.flatnonzero(inside & (depth >= 2.0 + fat + wall))
    if deep.size:
        g = [a.ravel()[deep] for a in (x, y, z, idx, dx, dy, ax, ay, fat, wall)]
        out.ravel()[deep] = _interior(body, *g, noise_slab, deep, heart_shift)
    return out


def _interior(body, x, y, z, idx, dx, dy, ax, ay, fat, wall, noise_slab, deep, heart_shift):
    """Tissue codes of the voxels inside the body wall (1-D arrays)."""
    T = Tissue
    lm, tb = body.landmarks, body.tables
    f = np.float32
    code = np.full(x.shape, T.MUSCLE, dtype=np.uint8)
    ex, ey = x - np.take(tb["sx"], idx), y - np.take(tb["sy"], idx)  # relative to the spine centre
    bw, bd = np.take(tb["bw"], idx), np.take(tb["bd"], idx)
    zmin, zmax = float(z.min()), float(z.max())
    noise = None
    if zmax > lm["sacrum"] - 25 or zmin < lm["T1"]:
        noise = noise_slab().ravel()[deep]
    neck = z > f(lm["T1"] + 5)
    near_spine = (ex / (bw + 16)) ** 2 + ((ey + 12) / (bd + 40)) ** 2 < 1.0
    diaphragm = None
    if zmin < lm["T1"] + 5 and zmax > lm["Tlast"] - 40:
        q = ((np.abs(dx) - 0.4 * ax) / (0.6 * ax)) ** 2 + ((dy - 0.25 * ay) / (1.1 * ay)) ** 2
        diaphragm = f(lm["T9"]) + 8.0 * (dx > 0) - f(lm["T9"] - lm["Tlast"] + 12) * np.minimum(q, 1.0)
        chest = ~neck & (z > diaphragm)
        inner_x, inner_y = ax - fat - wall - 14.0, ay - fat - wall - 14.0
        rho_cage = np.sqrt((dx / inner_x) ** 2 + (dy / inner_y) ** 2)
        apex = np.sqrt(np.clip((f(lm["T1"] + 25) - z) / 50.0, 0.0, 1.0))
        mediastinum = (np.abs(ex + 4) < 20 + 0.15 * np.maximum(ey, 0)) & (ey > -0.5 * bd)
        heart = (((dx + heart_shift) / 62.0) ** 2 + ((ey - bd - 68.0) / 52.0) ** 2
                 + ((z - f((lm["T5"] + lm["T10"]) / 2)) / 58.0) ** 2) < 1.0
        code[chest & (mediastinum | (rho_cage < 0.8) & (ey > bd))] = T.FAT  # mediastinal and pericardial fat
        lung = chest & (rho_cage < np.take(tb["cage"], idx) * apex) & ~near_spine & ~mediastinum & ~heart
        code[lung] = T.LUNG
        code[chest & heart] = T.BLOOD
    if zmin < lm["T1"] and zmax > lm["sacrum"] - 25:
        abdomen = ~neck & (z > f(lm["sacrum"] - 25))
        if diaphragm is not None:
            abdomen &= z <= diaphragm
        organ = abdomen & (ey >= -bd)
        code[organ] = T.ORGAN
        code[organ & (noise < -0.45)] = T.FAT
        code[organ & (noise > 1.9) & (ey > bd + 25)] = T.GAS
        if zmax > lm["L2"] - 80 and zmin < lm["Tlast"] + 60:
            liver = ((dx - 55) / 95.0) ** 2 + ((ey - 35) / 80.0) ** 2 + ((z - f(lm["Tlast"] - 5)) / 70.0) ** 2 < 1.0
            if diaphragm is not None:
                liver &= z <= diaphragm
            code[abdomen & liver] = T.LIVER
            zk = f((lm["Tlast"] + lm["L2"]) / 2)
            for side in (-1.0, 1.0):
                kidney = ((ex - side * 62) / 30.0) ** 2 + ((ey - 2) / 26.0) ** 2 + ((z - zk) / 55.0) ** 2
                code[abdomen & (kidney < 1.35)] = T.FAT
                code[abdomen & (kidney < 1.0)] = T.ORGAN
        if zmin < lm["L1"]:
            width = 6.0 + 18.0 * np.clip((f(lm["L1"]) - z) / f(lm["L1"] - lm["L5"] + 1e-3), 0, 1)
            lumbar = (z < f(lm["L1"])) & (z > f(lm["sacrum"] - 60))
            for side in (-1.0, 1.0):
                psoas = ((ex - side * (bw + width)) / width) ** 2 + ((ey + 2) / (0.8 * width + 4)) ** 2 < 1.0
                code[psoas & lumbar] = T.MUSCLE
        aorta = (ex + 16) ** 2 + (ey - bd - 10) ** 2 < 110.0
        vessels = aorta | (((ex - 20) ** 2 + (ey - bd - 14) ** 2 < 120.0) & abdomen)  # and the inferior vena cava
        code[vessels & (z < f(lm["T4"])) & (z > f(lm["L4"])) & ~near_spine] = T.BLOOD
    if zmin < lm["sacrum"] - 25:
        pelvis = (z <= f(lm["sacrum"] - 25)) & (ey > 10)
        code[pelvis] = T.ORGAN
        code[pelvis & (noise < -0.3)] = T.FAT
        code[pelvis & (noise > 2.0) & (ey > 50)] = T.GAS
        zb = f(lm["sacrum_bottom"] - 20)
        bladder = (ex / 45.0) ** 2 + ((dy - 0.55 * ay) / 35.0) ** 2 + ((z - zb) / 35.0) ** 2 < 1
        code[pelvis & bladder] = T.CSF  # urine: water density
    if zmax > lm["T1"]:
        code[neck & (noise < -1.0)] = T.FAT  # fat planes between the neck muscles
        airway = (ex**2 + (ey - bd - 14) ** 2 < 64.0) & (z < f(lm["C4"])) & (z > f(lm["T4"]))
        code[airway] = T.GAS
    return code


def _table(body: BodyModel, x, y, current):
    """The scanner table: a curved carbon plate with a foam core under the back (painted where there is air)."""
    out = np.array(current)
    ty = np.float32(body.table_y) + (x - np.float32(body.table_x)) ** 2 * np.float32(0.5 / body.table_radius)
    below = ty - y
    plate = (below >= 0) & (below < np.float32(body.table_thickness)) & (np.abs(x - np.float32(body.table_x)) < 230)
    plate &= out == Tissue.AIR
    out[plate] = Tissue.TABLE_FOAM
    out[plate & ((below < 2.0) | (below > np.float32(body.table_thickness - 2.0)))] = Tissue.TABLE_SHELL
    return out
