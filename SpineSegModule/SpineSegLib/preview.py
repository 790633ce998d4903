"""PNG previews: axial, sagittal and coronal views of a CT with vertebra colours, heatmap and lesions.

Views are drawn in radiological convention (patient right on the image left, anterior and superior up) on the
closest canonical orientation, with physical aspect ratio, so a user can check a result at a glance.
"""

from __future__ import annotations

import io as _io
from pathlib import Path

import nibabel as nib
import numpy as np
from PIL import Image, ImageDraw

from .io import atomic_write_bytes
from .labels import load_label_table
from .volume import Volume

CT_WINDOW = (-350.0, 1150.0)  # shows soft tissue dimly and bone clearly
PANEL_HEIGHT = 420
LABEL_ALPHA = 0.45


def _to_ras_canonical(volume: Volume) -> tuple[np.ndarray, np.ndarray]:
    """Array reoriented to the closest RAS axes, and its voxel spacing."""
    ornt = nib.orientations.io_orientation(volume.affine)
    array = nib.orientations.apply_orientation(volume.array, ornt)
    spacing = volume.spacing[ornt[:, 0].argsort()]
    return array, spacing


def _colour_lut() -> np.ndarray:
    lut = np.zeros((256, 3), dtype=np.float32)
    for label in load_label_table():
        lut[label.value] = label.color
    return lut


def _panels(ct, labels, heat, point, spacing):
    """Three (rgb float image, mm-per-pixel (row, col)) views through ``point`` (canonical voxel indices)."""
    i, j, k = point
    lut = _colour_lut()
    views = []
    for name, take, row_spacing, col_spacing in (
        ("axial", lambda a: a[::-1, ::-1, k].T, spacing[1], spacing[0]),
        ("sagittal", lambda a: a[i, ::-1, ::-1].T, spacing[2], spacing[1]),
        ("coronal", lambda a: a[::-1, j, ::-1].T, spacing[2], spacing[0]),
    ):
        grey = np.clip((take(ct) - CT_WINDOW[0]) / (CT_WINDOW[1] - CT_WINDOW[0]), 0, 1)
        rgb = np.repeat(grey[..., None], 3, axis=2) * 255.0
        if labels is not None:
            lab = take(labels).astype(np.int64)
            mask = lab > 0
            rgb[mask] = (1 - LABEL_ALPHA) * rgb[mask] + LABEL_ALPHA * lut[lab[mask]]
        if heat is not None:
            h = np.clip(take(heat), 0, 1)
            alpha = np.clip((h - 0.15) / 0.5, 0, 0.85)[..., None]
            hot = np.stack([np.full_like(h, 255.0), 255.0 * np.clip(h * 1.5 - 0.5, 0, 1), np.zeros_like(h)], axis=2)
            rgb = (1 - alpha) * rgb + alpha * hot
        views.append((name, rgb, row_spacing, col_spacing))
    return views


def render_preview(ct: Volume, labels: Volume | None = None, heatmap: Volume | None = None,
                   lesions: list[dict] | None = None, title: str = "") -> Image.Image:
    ct_array, spacing = _to_ras_canonical(ct)
    label_array = _to_ras_canonical(labels)[0] if labels is not None else None
    heat_array = _to_ras_canonical(heatmap)[0] if heatmap is not None else None
    canonical_affine = ct.affine @ nib.orientations.inv_ornt_aff(nib.orientations.io_orientation(ct.affine), ct.shape)

    # Centre the views on the first lesion, else on the spine (its in-plane centroid, the middle slice).
    shape = np.array(ct_array.shape)
    point = shape // 2
    if lesions:
        inverse = np.linalg.inv(canonical_affine)
        first = np.asarray(lesions[0]["center_ras"], dtype=np.float64)
        point = np.clip(np.round(inverse[:3, :3] @ first + inverse[:3, 3]).astype(int), 0, shape - 1)
    elif label_array is not None and label_array.any():
        point[:2] = np.round(np.argwhere(label_array > 0)[:, :2].mean(axis=0)).astype(int)
    views = _panels(ct_array, label_array, heat_array, tuple(point), spacing)

    images = []
    for name, rgb, row_spacing, col_spacing in views:
        height_mm, width_mm = rgb.shape[0] * row_spacing, rgb.shape[1] * col_spacing
        size = (max(1, round(PANEL_HEIGHT * width_mm / height_mm)), PANEL_HEIGHT)
        image = Image.fromarray(rgb.astype(np.uint8)).resize(size, Image.BILINEAR)
        ImageDraw.Draw(image).text((6, 4), name, fill=(255, 255, 0))
        images.append(image)
    header = 22 if title else 0
    canvas = Image.new("RGB", (sum(im.width for im in images) + 4 * (len(images) - 1), PANEL_HEIGHT + header))
    x = 0
    for image in images:
        canvas.paste(image, (x, header))
        x += image.width + 4
    if title:
        ImageDraw.Draw(canvas).text((6, 5), title, fill=(255, 255, 255))
    return canvas


def write_preview(path: str | Path, ct: Volume, labels: Volume | None = None, heatmap: Volume | None = None,
                  lesions: list[dict] | None = None, title: str = "") -> None:
    buffer = _io.BytesIO()
    render_preview(ct, labels, heatmap, lesions, title).save(buffer, format="PNG", optimize=False)
    atomic_write_bytes(path, buffer.getvalue())
