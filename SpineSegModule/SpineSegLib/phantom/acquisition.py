"""From the tissue map to a CT: Hounsfield units per tissue (drawn once per phantom, the same for every vertebra),
trabecular texture, metal streaks, point-spread and slice-thickness blur, correlated noise, rescale and int16.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .config import Tissue
from .raster import Grid

HU_RANGES = {  # per-phantom draw (low, high)
    Tissue.AIR: (-1000, -1000), Tissue.TABLE_SHELL: (150, 350), Tissue.TABLE_FOAM: (-950, -820),
    Tissue.SKIN: (20, 60), Tissue.FAT: (-115, -85), Tissue.MUSCLE: (42, 58), Tissue.ORGAN: (30, 52),
    Tissue.LUNG: (-880, -760), Tissue.CSF: (3, 13), Tissue.DISC: (75, 98), Tissue.NUCLEUS: (52, 75),
    Tissue.CORTICAL: (950, 1350), Tissue.CANCELLOUS: (140, 260), Tissue.LYTIC: (10, 70),
    Tissue.SCLEROTIC: (700, 1100), Tissue.METAL: (3000, 3000), Tissue.BLOOD: (35, 50), Tissue.LIVER: (50, 65),
    Tissue.GAS: (-1000, -950), Tissue.CARTILAGE: (90, 140),
}
HU_MIN, HU_MAX = -1024, 3071


def draw_parameters(rng: np.random.Generator, noise_hu: float | None) -> dict:
    lut = np.zeros(256, dtype=np.float32)
    for code, (low, high) in HU_RANGES.items():
        lut[code] = rng.uniform(low, high)
    return {
        "lut": lut,
        "trabecular_amp": float(rng.uniform(30.0, 55.0)),
        "level_sd": float(rng.uniform(5.0, 15.0)),
        "psf_mm": float(rng.uniform(0.6, 1.0)),
        "slice_mm": float(rng.uniform(1.0, 3.0)),
        "noise_hu": float(rng.uniform(10.0, 40.0)) if noise_hu is None else float(noise_hu),
        "slope": float(rng.uniform(0.95, 1.05)),
        "offset": float(rng.uniform(-20.0, 20.0)),
        "streak_amp": float(rng.uniform(250.0, 600.0)),
        "streak_rays": int(rng.integers(14, 30)),
    }


def tissue_to_hu(tissue: np.ndarray, params: dict) -> np.ndarray:
    hu = np.empty(tissue.shape, dtype=np.float32)
    slab = max(1, 4_000_000 // (tissue.shape[0] * tissue.shape[1]))
    for k0 in range(0, tissue.shape[2], slab):
        np.take(params["lut"], tissue[..., k0:k0 + slab], out=hu[..., k0:k0 + slab])
    return hu


def add_trabecular_texture(hu, tissue, boxes, spacing, params, rng) -> None:
    """Grainy cancellous bone: smoothed noise per bone box plus a small per-level offset (same distribution)."""
    sigma = [max(0.4, 0.7 / s) for s in spacing]
    for box in boxes:
        t = tissue[box]
        mask = (t == Tissue.CANCELLOUS) | (t == Tissue.LYTIC) | (t == Tissue.SCLEROTIC)
        if not mask.any():
            continue
        grain = ndimage.gaussian_filter(rng.standard_normal(t.shape).astype(np.float32), sigma)
        grain *= np.float32(params["trabecular_amp"] / max(float(grain.std()), 1e-6))
        weight = np.where(t == Tissue.CANCELLOUS, 1.0, 0.35).astype(np.float32)
        h = hu[box]
        h[mask] += grain[mask] * weight[mask] + np.float32(rng.normal(0.0, params["level_sd"]))


def add_metal_streaks(hu, tissue, grid: Grid, params, rng) -> None:
    """Alternating bright and dark rays in each slice from the metal in it, and dark bands between screws."""
    has_metal = np.flatnonzero((tissue == Tissue.METAL).any(axis=(0, 1)))
    if has_metal.size == 0:
        return
    phase = float(rng.uniform(0, 2 * np.pi))
    rays = params["streak_rays"]
    ii, jj = np.meshgrid(np.arange(hu.shape[0], dtype=np.float32), np.arange(hu.shape[1], dtype=np.float32),
                         indexing="ij")
    a = grid.affine
    spacing = np.linalg.norm(a[:3, :3], axis=0)
    for k in has_metal:
        metal = np.argwhere(tissue[..., k] == Tissue.METAL)
        amount = min(1.0, len(metal) * spacing[0] * spacing[1] / 60.0)
        split = np.median(metal[:, 0])
        centres = [g.mean(axis=0) for g in (metal[metal[:, 0] <= split], metal[metal[:, 0] > split]) if len(g)]
        streak = np.zeros(hu.shape[:2], dtype=np.float32)
        for c in centres:
            du, dv = (ii - c[0]) * spacing[0], (jj - c[1]) * spacing[1]
            r = np.sqrt(du * du + dv * dv) + 1.0
            s = np.sin(rays * np.arctan2(dv, du) + phase + 0.3 * len(streak))
            streak += s**7 * np.exp(-r / 90.0) * np.minimum(r / 6.0, 1.0)
        if len(centres) == 2:
            d = (centres[1] - centres[0]) * spacing[:2]
            length = float(np.linalg.norm(d)) + 1e-6
            du, dv = (ii - centres[0][0]) * spacing[0], (jj - centres[0][1]) * spacing[1]
            t = (du * d[0] + dv * d[1]) / length**2
            perp = np.abs(du * d[1] - dv * d[0]) / length
            streak -= 1.2 * np.exp(-((perp / 5.0) ** 2)) * ((t > 0) & (t < 1))
        hu[..., k] += np.float32(params["streak_amp"] * amount) * streak


def finish(hu: np.ndarray, grid: Grid, params: dict, rng: np.random.Generator, progress=None) -> np.ndarray:
    """Noise (correlated through the blur), point-spread and slice blur, rescale; returns int16 HU."""
    spacing = np.linalg.norm(grid.affine[:3, :3], axis=0)
    slice_axis = int(np.argmax(np.abs(grid.affine[2, :3]) / spacing))  # the axis closest to S
    sigma = [params["psf_mm"] / s for s in spacing]
    sigma[slice_axis] = float(np.hypot(params["psf_mm"], 0.29 * params["slice_mm"])) / spacing[slice_axis]
    reduction = 1.0
    for s in sigma:
        delta = np.zeros(61, dtype=np.float64)
        delta[30] = 1.0
        reduction *= float(np.sqrt(np.sum(ndimage.gaussian_filter1d(delta, s) ** 2)))
    sd = np.float32(params["noise_hu"] / reduction)
    slab = max(1, 2_000_000 // (hu.shape[0] * hu.shape[1]))
    if sd > 0:
        for k0 in range(0, hu.shape[2], slab):
            part = hu[..., k0:k0 + slab]
            part += rng.standard_normal(part.shape, dtype=np.float32) * sd
    if progress:
        progress(0.3, "blur")
    ndimage.gaussian_filter(hu, sigma, output=hu, truncate=3.0)
    if progress:
        progress(0.8, "rescale")
    ct = np.empty(hu.shape, dtype=np.int16)
    for k0 in range(0, hu.shape[2], slab):
        part = hu[..., k0:k0 + slab]
        part *= np.float32(params["slope"])
        part += np.float32(params["offset"])
        np.clip(part, HU_MIN, HU_MAX, out=part)
        np.rint(part, out=part)
        ct[..., k0:k0 + slab] = part
    return ct
