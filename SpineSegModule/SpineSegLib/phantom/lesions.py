"""Lesions inside vertebral bodies (compression fractures, lytic and sclerotic metastases) and pedicle screws.

Lesions are planned before painting (a fracture changes the body's shape and label) on vertebrae fully inside
the field of view (C3 and below, not the sacrum), and lytic/sclerotic lesions are painted afterwards into the
painted body. Fracture grades follow Genant: loss of anterior/central height 20-25 % (1), 25-40 % (2), > 40 % (3).
"""

from __future__ import annotations

import numpy as np

from .config import LESION_CLASSES, Tissue
from .raster import WORLD, Grid, capsule, capsule_box, ellipsoid
from .spine import SpinePlan, Vertebra
from .vertebra import body_depth, canal_centre_v, vertebra_extent

GENANT_LOSS = {1: (0.20, 0.25), 2: (0.25, 0.40), 3: (0.40, 0.55)}


def fully_inside(grid: Grid, vertebra: Vertebra) -> bool:
    low, high = vertebra_extent(vertebra)
    pad = np.array([2.0, 2.0, 2.0])
    low, high = low + pad, high - pad
    corners = [[x, y, z] for x in (low[0], high[0]) for y in (low[1], high[1]) for z in (low[2], high[2])]
    return grid.contains_world(vertebra.frame.to_world(corners))


def plan_lesions(rng: np.random.Generator, spine: SpinePlan, grid: Grid, count: int) -> list[dict]:
    """Choose lesion classes and vertebrae; set the fractures on the vertebrae. Returns internal plans."""
    eligible = [v for v in spine.vertebrae if v.kind in ("cervical", "thoracic", "lumbar") and fully_inside(grid, v)]
    if count == 0 or not eligible:
        return []
    order = list(rng.permutation(len(eligible)))
    plans = []
    for n in range(count):
        vertebra = eligible[order[n % len(eligible)]]
        kind = str(rng.choice(LESION_CLASSES))
        if kind == "fracture" and vertebra.fracture is not None:
            kind = "lytic"
        plan = {"class": kind, "vertebra": vertebra}
        d = vertebra.dims
        a, b, half_h = d["body_w"] / 2, d["body_d"] / 2, d["body_h"] / 2
        if kind == "fracture":
            grade = int(rng.choice([1, 2, 3]))
            loss = float(rng.uniform(*GENANT_LOSS[grade]))
            vertebra.fracture = {"grade": grade, "loss": loss,
                                 "type": str(rng.choice(["wedge", "biconcave", "crush"], p=[0.5, 0.3, 0.2]))}
            plan.update(grade=grade, local=np.zeros(3), radii=None, size=float(d["body_w"] + d["body_d"]) / 2)
        else:
            low, high = (6.0, 15.0) if kind == "lytic" else (5.0, 12.0)
            size = min(float(rng.uniform(low, high)), 0.6 * min(2 * half_h, 2 * a, 2 * b))
            r = size / 2
            radii = r * rng.uniform(0.85, 1.15, size=3)
            radii *= r / np.cbrt(np.prod(radii))
            breaks = kind == "lytic" and rng.random() < 0.35
            angle = rng.uniform(-0.75 * np.pi, 0.75 * np.pi)  # away from the posterior wall
            reach = (0.85 if breaks else 0.5) * max(min(a, b) - r, 0.0)
            if breaks:
                reach = max(min(a, b) - 0.5 * r, 0.0) * 0.9
            local = np.array([reach * np.sin(angle), reach * np.cos(angle),
                              rng.uniform(-1, 1) * max(half_h * 0.6 - r, 0.0) * 0.6])
            plan.update(grade=None, local=local, radii=radii, size=float(2 * np.cbrt(np.prod(radii))), breaks=breaks)
        plans.append(plan)
    return plans


def paint_lesions(grid: Grid, tissue, labels, plans: list[dict], cortex_mm: float) -> list[dict]:
    """Paint lytic/sclerotic lesions into the bodies; return the public lesion list."""
    lesions = []
    for number, plan in enumerate(plans, start=1):
        vertebra: Vertebra = plan["vertebra"]
        centre = vertebra.frame.to_world(plan["local"])
        if plan["class"] != "fracture":
            radii = plan["radii"]
            box = grid.box(vertebra.frame, plan["local"] - radii - 1, plan["local"] + radii + 1)
            if box is not None:
                p = grid.coords(box, vertebra.frame)
                region = (ellipsoid(p, plan["local"], radii) > 0) & (labels[box] == vertebra.label)
                bd = body_depth(vertebra, p)
                region &= bd > (0 if plan.get("breaks") else cortex_mm)
                code = Tissue.LYTIC if plan["class"] == "lytic" else Tissue.SCLEROTIC
                tissue[box][region] = code
        lesions.append({
            "id": number, "class": plan["class"], "grade": plan["grade"],
            "center_ras": [round(float(c), 3) for c in centre], "size_mm": round(float(plan["size"]), 3),
            "vertebra": vertebra.name, "vertebra_label": int(vertebra.label),
        })
    return lesions


def plan_screws(rng: np.random.Generator, spine: SpinePlan, grid: Grid) -> list[tuple]:
    """Pedicle screws (and rods) in one to three adjacent thoracolumbar vertebrae fully in view."""
    candidates = [i for i, v in enumerate(spine.vertebrae)
                  if v.kind in ("thoracic", "lumbar") and fully_inside(grid, v)]
    if not candidates:  # a small field of view: any vertebra whose body centre is in view
        candidates = [i for i, v in enumerate(spine.vertebrae)
                      if v.kind in ("cervical", "thoracic", "lumbar") and grid.contains_world(v.frame.origin, 3.0)]
    if not candidates:
        return []
    levels = int(rng.integers(1, 4))
    first = int(rng.choice(candidates))
    chosen = [i for i in range(first, first + levels) if i in candidates]
    pieces, heads = [], {-1.0: [], 1.0: []}
    for index in chosen:
        v = spine.vertebrae[index]
        d = v.dims
        vc = canal_centre_v(v)
        xp = d["canal_w"] / 2 + d["ped_r"] * 0.7
        wp = 0.2 * d["body_h"] / 2
        radius = float(np.clip(d["ped_r"] * 0.65, 1.8, 3.2))
        for side in (-1.0, 1.0):
            entry = np.array([side * (xp + 2), vc - d["canal_d"] * 0.2 - 10, wp])
            target = np.array([side * d["body_w"] * 0.12, d["body_d"] * 0.32, wp * 0.5])
            pieces.append((v.frame.to_world(entry), v.frame.to_world(target), radius))
            head = v.frame.to_world(entry + np.array([0.0, -5.0, 0.0]))
            pieces.append((head, head, 6.0))
            heads[side].append(head)
    for side_heads in heads.values():
        for a, b in zip(side_heads[:-1], side_heads[1:], strict=True):
            pieces.append((a, b, 2.8))
    return pieces


def paint_screws(grid: Grid, tissue, pieces) -> None:
    for a, b, radius in pieces:
        low, high = capsule_box(a, b, radius)
        box = grid.box(WORLD, low, high)
        if box is None:
            continue
        tissue[box][capsule(grid.coords(box), a, b, radius) > 0] = Tissue.METAL

