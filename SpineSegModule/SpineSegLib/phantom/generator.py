"""generate_phantom: plan the anatomy, choose the field of view and grid, paint tissues and labels, acquire."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from ..labels import load_label_table
from ..volume import Volume
from . import acquisition
from .body import BodyModel, paint_body, plan_body
from .bones import paint_pelvis, paint_ribs, paint_sternum
from .config import REGIONS, PhantomConfig
from .lesions import paint_lesions, paint_screws, plan_lesions, plan_screws
from .raster import Frame, Grid
from .spine import SpinePlan, plan_spine
from .vertebra import paint_disc, paint_sacrum, paint_vertebra, vertebra_extent


@dataclass
class Phantom:
    ct: Volume  # int16 Hounsfield units
    labels: Volume  # uint8 label-table values on the same grid
    lesions: list[dict]
    config: PhantomConfig
    vertebrae: list[str]  # names present (fully or partly) in the field of view, cranio-caudal
    resolved: dict = dataclasses.field(default_factory=dict)  # random choices made: variant, scoliosis, noise...


def _streams(seed: int) -> dict[str, np.random.Generator]:
    root = np.random.default_rng(seed)
    names = ("choices", "spine", "body", "fov", "orientation", "lesions", "bones", "acquisition", "metal")
    return {name: np.random.default_rng(int(root.integers(0, 2**63))) for name in names}


def _z_range(spine: SpinePlan, name: str) -> tuple[float, float]:
    if name == "sacrum":
        sacrum = spine.sacrum
        corners = [[x, y, z] for x in (-sacrum.half_width, sacrum.half_width)
                   for y in (-sacrum.half_depth - 10, sacrum.half_depth) for z in (0.0, -sacrum.length)]
        zs = sacrum.frame.to_world(corners)[:, 2]
    else:
        vertebra = spine.by_name(name)
        low, high = vertebra_extent(vertebra)
        corners = [[x, y, z] for x in (low[0], high[0]) for y in (low[1], high[1]) for z in (low[2], high[2])]
        zs = vertebra.frame.to_world(corners)[:, 2]
    return float(zs.min()), float(zs.max())


def _field_of_view(config: PhantomConfig, spine: SpinePlan, body: BodyModel, variant: str, rng) -> np.ndarray:
    """World box [[x0, y0, z0], [x1, y1, z1]] covering the region plus margins, body width inside."""
    first, last = REGIONS[config.region]
    if last == "T12" and variant == "T13":
        last = "T13"
    names = [v.name for v in spine.vertebrae] + ["sacrum"]
    top = _z_range(spine, first)[1]
    if first == "C1":
        top += rng.uniform(15.0, 30.0)
    else:  # reach 30-70 % into the body of the vertebra above
        above = spine.vertebrae[names.index(first) - 1]
        body_top = spine.by_name(first).frame.to_world([0.0, 0.0, spine.by_name(first).dims["body_h"] / 2])[2]
        top = max(top, body_top + above.dims["disc"] + rng.uniform(0.3, 0.7) * above.dims["body_h"])
    bottom = _z_range(spine, last)[0]
    if last == "sacrum":
        bottom -= rng.uniform(10.0, 30.0)
    else:  # reach 30-70 % into the body of the vertebra below
        below = spine.vertebrae[names.index(last) + 1]
        lowest = spine.by_name(last)
        body_bottom = lowest.frame.to_world([0.0, 0.0, -lowest.dims["body_h"] / 2])[2]
        bottom = min(bottom, body_bottom - lowest.dims["disc"] - rng.uniform(0.3, 0.7) * below.dims["body_h"])
    zs = np.arange(bottom, top, 2.0)
    ellipses = np.array([body.ellipse_at(z) for z in zs])
    x0 = float(np.min(ellipses[:, 0] - ellipses[:, 2])) - 8.0
    x1 = float(np.max(ellipses[:, 0] + ellipses[:, 2])) + 8.0
    y0 = body.table_y - body.table_thickness - 5.0
    y1 = float(np.max(ellipses[:, 1] + ellipses[:, 3])) + 8.0
    return np.array([[x0, y0, bottom], [x1, y1, top]])


def _rotation(rng) -> np.ndarray:
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    angle = np.radians(rng.uniform(5.0, 15.0))
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k


def _grid(config: PhantomConfig, fov: np.ndarray, spine_centre: np.ndarray, rng) -> Grid:
    directions = {"RAS": np.eye(3), "LPS": np.diag([-1.0, -1.0, 1.0])}.get(config.orientation)
    if directions is None:
        directions = _rotation(rng)
    spacing = np.asarray(config.spacing)
    corners = np.array([[x, y, z] for x in fov[:, 0] for y in fov[:, 1] for z in fov[:, 2]])
    centre = fov.mean(axis=0)
    projected = corners @ directions  # coordinates along the grid axes
    extent = projected.max(axis=0) - projected.min(axis=0)
    if config.shape is None:
        shape = np.maximum(np.ceil(extent / spacing).astype(int) + 1, 8)
    else:
        shape = np.asarray(config.shape)
        size = (shape - 1) * spacing
        # a smaller field than the region's: centre it on the spine (as a reconstruction would), inside the region
        centre_g, spine_g = directions.T @ centre, directions.T @ spine_centre
        low_g, high_g = projected.min(axis=0), projected.max(axis=0)
        for axis in range(2):
            if size[axis] < extent[axis]:
                centre_g[axis] = np.clip(spine_g[axis], low_g[axis] + size[axis] / 2, high_g[axis] - size[axis] / 2)
        centre = directions @ centre_g
    matrix = directions * spacing[None, :]
    affine = np.eye(4)
    affine[:3, :3] = matrix
    affine[:3, 3] = centre - matrix @ ((shape - 1) / 2.0)
    return Grid(tuple(int(s) for s in shape), affine)


def generate_phantom(config: PhantomConfig, progress=None) -> Phantom:
    config = dataclasses.replace(config).validate()
    report = progress or (lambda fraction, stage: None)
    rngs = _streams(int(config.seed))
    choices = rngs["choices"]
    variant = config.variant
    draw = choices.random()
    if variant == "random":
        variant = "T13" if draw < 0.15 else "L6" if draw < 0.30 else "none"
    scoliosis = bool(choices.random() < 0.3) if config.scoliosis is None else bool(config.scoliosis)
    report(0.0, "anatomy")
    spine = plan_spine(rngs["spine"], variant, scoliosis)
    body = plan_body(rngs["body"], spine)
    fov = _field_of_view(config, spine, body, variant, rngs["fov"])
    inside = [v.frame.origin for v in spine.vertebrae if fov[0, 2] <= v.frame.origin[2] <= fov[1, 2]]
    spine_centre = np.mean(inside, axis=0) if inside else fov.mean(axis=0)
    spine_centre = spine_centre + np.array([0.0, -22.0, 0.0])  # a spine field of view centres near the canal
    grid = _grid(config, fov, spine_centre, rngs["orientation"])
    plans = plan_lesions(rngs["lesions"], spine, grid, int(config.lesions))
    params = acquisition.draw_parameters(rngs["acquisition"], config.noise_hu)
    cortex = float(rngs["bones"].uniform(0.9, 1.4))

    tissue = np.zeros(grid.shape, dtype=np.uint8)
    labels = np.zeros(grid.shape, dtype=np.uint8)
    paint_body(grid, tissue, body, rngs["body"], lambda f, s: report(0.02 + 0.33 * f, s))
    report(0.35, "skeleton")
    vertebrae = spine.vertebrae
    for upper, lower in zip(vertebrae[1:-1], vertebrae[2:], strict=True):
        paint_disc(grid, tissue, upper, lower.frame, lower.dims)
    sac = spine.sacrum
    last = vertebrae[-1]
    paint_disc(grid, tissue, last, Frame(sac.frame.origin - sac.frame.axes[2] * 10.0, sac.frame.axes),
               {"body_h": 20.0, "body_w": last.dims["body_w"], "body_d": last.dims["body_d"]})
    paint_ribs(grid, tissue, spine, body, rngs["bones"], cortex)
    paint_sternum(grid, tissue, spine, body, cortex)
    paint_pelvis(grid, tissue, spine, rngs["bones"], cortex)
    report(0.45, "vertebrae")
    boxes = {}
    box = paint_sacrum(grid, tissue, labels, sac, cortex)  # first: L5's inferior articular processes overlap it
    if box is not None:
        boxes[sac.label] = box
    for vertebra in vertebrae:
        box = paint_vertebra(grid, tissue, labels, vertebra, cortex)
        if box is not None:
            boxes[vertebra.label] = box
    lesions = paint_lesions(grid, tissue, labels, plans, cortex)
    _keep_largest_components(labels, boxes)
    if config.metal:
        paint_screws(grid, tissue, plan_screws(rngs["metal"], spine, grid))
    report(0.6, "intensities")
    hu = acquisition.tissue_to_hu(tissue, params)
    acquisition.add_trabecular_texture(hu, tissue, list(boxes.values()), np.linalg.norm(grid.affine[:3, :3], axis=0),
                                       params, rngs["acquisition"])
    if config.metal:
        acquisition.add_metal_streaks(hu, tissue, grid, params, rngs["metal"])
    del tissue
    ct = acquisition.finish(hu, grid, params, rngs["acquisition"], lambda f, s: report(0.65 + 0.35 * f, s))
    del hu
    table = load_label_table()
    present = set(np.flatnonzero(np.bincount(labels.ravel(), minlength=256)[1:]) + 1)
    names = [lab.name for lab in table if lab.value in present]
    report(1.0, "done")
    resolved = {"variant": variant, "scoliosis": scoliosis, "noise_hu": params["noise_hu"],
                "psf_mm": params["psf_mm"], "slice_mm": params["slice_mm"], "shape": list(grid.shape)}
    return Phantom(Volume(ct, grid.affine.copy()), Volume(labels, grid.affine.copy()), lesions, config, names, resolved)


def _keep_largest_components(labels: np.ndarray, boxes: dict) -> None:
    """Each vertebra one connected piece: fragments cut off by neighbours or the field edge lose their label."""
    for value, box in boxes.items():
        region = labels[box]
        mask = region == value
        components, count = ndimage.label(mask)
        if count > 1:
            sizes = np.bincount(components.ravel())
            sizes[0] = 0
            region[(components != int(np.argmax(sizes))) & mask] = 0


def write_phantom(phantom: Phantom, out_dir) -> Path:
    """ct.nii.gz (int16), vertebrae.nii.gz (uint8), lesions.json and preview.png, written atomically."""
    from ..io import atomic_output_dir, write_json, write_nifti
    from ..preview import write_preview

    out_dir = Path(out_dir)
    with atomic_output_dir(out_dir) as tmp:
        write_nifti(phantom.ct, tmp / "ct.nii.gz", np.int16)
        write_nifti(phantom.labels, tmp / "vertebrae.nii.gz", np.uint8)
        write_json(tmp / "lesions.json", {"config": phantom.config.to_dict(), "resolved": phantom.resolved,
                                          "vertebrae": phantom.vertebrae, "lesions": phantom.lesions})
        title = f"phantom seed {phantom.config.seed} ({phantom.config.region})"
        write_preview(tmp / "preview.png", phantom.ct, phantom.labels, lesions=phantom.lesions, title=title)
    return out_dir
