"""The spine plan: which vertebrae, their sizes, and where they sit along a curved spine in RAS millimetres.

The spine centre curve runs head (s = 0 at C1) to feet along world -S, with cervical lordosis, thoracic kyphosis
and lumbar lordosis as smooth anterior/posterior bumps, an optional scoliosis (lateral C- or S-curve with axial
rotation of the vertebrae) and an arc-length parametrisation, so vertebra heights are true millimetres. Each
vertebra gets a frame (u right, v anterior, w up along the local curve tangent) centred on its body.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..labels import load_label_table
from .raster import Frame

# Size anchors (mm) at levels C3, C7, T1, T6, T12, L1, L5 (level index: C2 = 0 ... L5 = 22), interpolated between.
_ANCHORS = np.array([1, 5, 6, 11, 17, 18, 22], dtype=float)
_DIMS = {
    "body_w": [16, 21, 24, 28, 38, 42, 50],
    "body_d": [15, 16, 16, 24, 30, 31, 35],
    "body_h": [13, 13.5, 15, 19, 23, 25, 27],
    "disc": [5, 5.5, 5, 5.5, 7, 9, 11],  # disc below this vertebra
    "canal_w": [23, 22, 18, 16, 19, 22, 25],
    "canal_d": [14, 14, 14, 15, 16, 17, 18],
    "ped_r": [2.5, 3.0, 3.5, 3.2, 4.5, 5.0, 6.5],
    "lam_r": [2.5, 3.0, 3.0, 3.0, 3.5, 4.0, 4.5],
    "spin_len": [18, 38, 38, 40, 30, 32, 28],
    "spin_angle": [30, 15, 25, 55, 25, 8, 8],  # degrees below horizontal
    "spin_r": [2.5, 3.5, 3.5, 3.0, 3.5, 3.5, 4.0],
    "spin_h": [4, 5, 5, 5, 8, 11, 10],
    "tp_len": [11, 15, 20, 17, 9, 18, 20],
    "tp_back": [-10, -5, 25, 35, 35, 10, 10],  # degrees backwards from lateral
    "tp_r": [4.5, 4.5, 4.0, 4.0, 3.5, 3.5, 4.0],
    "tp_h": [4.5, 4.5, 4.5, 4.5, 4.0, 5.0, 6.0],
    "facet_r": [3.0, 3.5, 3.5, 3.5, 4.0, 4.5, 5.5],
}


@dataclass
class Vertebra:
    name: str
    label: int
    kind: str  # C1 | C2 | cervical | thoracic | lumbar
    dims: dict
    frame: Frame | None = None
    s: float = 0.0  # arc position of the body centre
    fracture: dict | None = None  # {"grade", "loss", "type"} when a compression fracture deforms the body
    ribs: bool = False


@dataclass
class Sacrum:
    label: int
    frame: Frame  # origin: centre of the S1 upper end plate; w along the sacral axis (up), v anterior
    length: float
    half_width: float
    half_depth: float
    curvature: float


@dataclass
class SpinePlan:
    vertebrae: list[Vertebra]
    sacrum: Sacrum
    curve_s: np.ndarray  # dense arc positions
    curve_points: np.ndarray  # (n, 3) RAS points of the spine centre curve
    scoliosis: bool
    scale: float
    extras: dict = field(default_factory=dict)

    def by_name(self, name: str) -> Vertebra:
        return next(v for v in self.vertebrae if v.name == name)

    def centre_z(self, name: str) -> float:
        if name == "sacrum":
            return float(self.sacrum.frame.origin[2])
        return float(self.by_name(name).frame.origin[2])


def vertebra_names(variant: str) -> list[str]:
    names = [f"C{i}" for i in range(1, 8)] + [f"T{i}" for i in range(1, 13)]
    if variant == "T13":
        names.append("T13")
    names += [f"L{i}" for i in range(1, 6)]
    if variant == "L6":
        names.append("L6")
    return names


def _level_index(name: str) -> float:
    kind, number = name[0], int(name[1:])
    if kind == "C":
        return number - 2.0
    if kind == "T":
        return 5.0 + min(number, 12) + (0.4 if number == 13 else 0.0)
    return 17.0 + min(number, 5)


def _bump(s, start, stop):
    x = np.clip((s - start) / max(stop - start, 1e-6), 0.0, 1.0)
    return np.sin(np.pi * x)


def plan_spine(rng: np.random.Generator, variant: str, scoliosis: bool) -> SpinePlan:
    table = load_label_table()
    scale = float(rng.uniform(0.92, 1.08))
    vertebrae: list[Vertebra] = []
    for name in vertebra_names(variant):
        level = _level_index(name)
        jitter = float(rng.normal(1.0, 0.02))
        dims = {key: float(np.interp(level, _ANCHORS, values)) for key, values in _DIMS.items()}
        for key in ("body_w", "body_d", "body_h", "disc", "canal_w", "canal_d", "spin_len", "tp_len"):
            dims[key] *= scale * jitter
        dims["concavity"] = float(rng.uniform(0.04, 0.08)) * dims["body_h"]
        kind = name if name in ("C1", "C2") else {"C": "cervical", "T": "thoracic", "L": "lumbar"}[name[0]]
        if name == "C2":
            dims["body_h"] *= 1.15
            dims.update(spin_len=30 * scale, spin_angle=25, spin_h=7, spin_r=4.5)
        vertebrae.append(Vertebra(name, table.by_name(name).value, kind, dims, ribs=kind == "thoracic"))

    # arc positions of body centres (C1: ring centre above the C2 body, no disc between C1 and C2)
    c2 = vertebrae[1]
    positions = [0.0, c2.dims["body_h"] / 2 + 2.5 + 7.5]
    for previous, current in zip(vertebrae[1:-1], vertebrae[2:], strict=True):
        step = previous.dims["body_h"] / 2 + previous.dims["disc"] + current.dims["body_h"] / 2
        positions.append(positions[-1] + step)
    last = vertebrae[-1]
    s_sacrum = positions[-1] + last.dims["body_h"] / 2 + last.dims["disc"]

    def boundary(first_lumbar: bool):
        index = next(i for i, v in enumerate(vertebrae) if v.kind == ("lumbar" if first_lumbar else "thoracic"))
        return (positions[index - 1] + positions[index]) / 2

    s_ct, s_tl = boundary(False), boundary(True)
    s_end = s_sacrum
    lordosis_c, kyphosis, lordosis_l = (float(rng.uniform(0.6, 1.4)) * a for a in (9.0, 24.0, 17.0))
    s = np.arange(-40.0, s_end + 160.0, 0.5)
    y = (lordosis_c * _bump(s, positions[1] - 10, s_ct) - kyphosis * _bump(s, s_ct, s_tl)
         + lordosis_l * _bump(s, s_tl, s_end + 10))
    x = np.zeros_like(s)
    rotation = np.zeros_like(s)
    if scoliosis:
        amplitude = float(rng.uniform(8.0, 25.0)) * float(rng.choice([-1.0, 1.0]))
        waves = int(rng.choice([1, 2]))
        x = amplitude * np.sin(waves * np.pi * np.clip((s - s_ct + 20) / (s_end - s_ct + 10), 0, 1))
        rotation = np.radians(float(rng.uniform(0.3, 0.7))) * x  # apical axial rotation
    dx, dy = np.gradient(x, s), np.gradient(y, s)
    dz = -np.sqrt(np.clip(1.0 - dx**2 - dy**2, 0.2, 1.0))
    z = np.concatenate([[0.0], np.cumsum((dz[1:] + dz[:-1]) / 2 * np.diff(s))])
    z -= np.interp(0.0, s, z)
    points = np.stack([x, y, z], axis=1)

    for vertebra, position in zip(vertebrae, positions, strict=True):
        vertebra.s = float(position)
        vertebra.frame = _frame_at(s, points, rotation, position)

    # sacrum: below the last lumbar disc, tilted backwards by the lumbosacral angle
    last_frame = vertebrae[-1].frame
    right, ant, up = last_frame.axes
    tilt = np.radians(float(rng.uniform(8.0, 18.0)))  # L5-S1 disc wedge; sacral slope = L5 tilt + this
    top = last_frame.origin - up * (last.dims["body_h"] / 2 + last.dims["disc"])
    up_s = up * np.cos(tilt) + ant * np.sin(tilt)
    ant_s = np.cross(up_s, right)
    sacrum = Sacrum(
        label=table.by_name("sacrum").value,
        frame=Frame(top, np.stack([right, ant_s / np.linalg.norm(ant_s), up_s])),
        length=float(rng.uniform(95.0, 115.0)) * scale,
        half_width=float(rng.uniform(44.0, 52.0)) * scale,
        half_depth=float(rng.uniform(24.0, 28.0)) * scale,
        curvature=float(rng.uniform(0.2, 0.45)),
    )
    return SpinePlan(vertebrae, sacrum, s, points, scoliosis, scale)


def _frame_at(s, points, rotation, position) -> Frame:
    centre = np.array([np.interp(position, s, points[:, a]) for a in range(3)])
    ahead = np.array([np.interp(position - 2.0, s, points[:, a]) for a in range(3)])
    behind = np.array([np.interp(position + 2.0, s, points[:, a]) for a in range(3)])
    up = ahead - behind
    up /= np.linalg.norm(up)
    ant = np.array([0.0, 1.0, 0.0]) - up[1] * up
    ant /= np.linalg.norm(ant)
    angle = float(np.interp(position, s, rotation))
    right = np.cross(ant, up)
    ant, right = ant * np.cos(angle) + right * np.sin(angle), right * np.cos(angle) - ant * np.sin(angle)
    return Frame(centre, np.stack([right, ant, up]))
