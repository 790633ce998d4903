"""A segmentation result and its on-disk form (the output folder of ``spineseg segment``).

The folder is the contract between the core and every host: the Slicer module's out-of-process runner and the
web front end read it back with :func:`load_results`. See docs/architecture.md for the file list.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage

from .io import atomic_output_dir, read_volume, write_json, write_nifti
from .labels import LabelTable, load_label_table
from .preview import write_preview
from .segfile import write_seg_nrrd
from .volume import Volume

LABELS_FILE = "vertebrae.nii.gz"
SEGMENTATION_FILE = "vertebrae.seg.nrrd"
HEATMAP_FILE = "lesion_heatmap.nii.gz"
LESIONS_FILE = "lesions.json"
REPORT_FILE = "report.json"
PREVIEW_FILE = "preview.png"
RESULT_FILES = (LABELS_FILE, SEGMENTATION_FILE, HEATMAP_FILE, LESIONS_FILE, REPORT_FILE, PREVIEW_FILE)


@dataclass
class SegmentationResult:
    labels: Volume  # uint8 label-table values on the input grid
    heatmap: Volume  # float32 in [0, 1] on the input grid
    lesions: list[dict] = field(default_factory=list)
    vertebrae: list[dict] = field(default_factory=list)  # per-vertebra summary, cranio-caudal
    report: dict = field(default_factory=dict)  # model, input geometry, timings
    surface_inputs: SurfaceInputs | None = None  # only when asked for (fitting a surface refinement)


@dataclass
class SurfaceInputs:
    """What a surface refinement sees, on the canonical input grid: the labels before it, the network's
    foreground probability (:func:`.surface_refinement.effective_foreground`, interpolated) and the CT."""

    labels: np.ndarray
    foreground: np.ndarray
    ct: Volume  # canonical orientation
    stage: str  # the pass whose foreground it is


def vertebra_summary(labels: Volume, lesions: list[dict], table: LabelTable | None = None) -> list[dict]:
    """Per vertebra: name, label value, volume (mm³), centroid (RAS mm) and the ids of its lesions."""
    table = table or load_label_table()
    voxel_mm3 = float(abs(np.linalg.det(labels.affine[:3, :3])))
    array = np.asarray(labels.array)
    if array.dtype.kind not in "iu":
        array = array.astype(np.int64)
    boxes = ndimage.find_objects(array)  # one pass over the grid; each vertebra is then looked at in its box
    summary = []
    for label in table:
        box = boxes[label.value - 1] if label.value <= len(boxes) else None
        if box is None:
            continue
        voxels = np.argwhere(array[box] == label.value)
        ijk = voxels.mean(axis=0) + [axis.start for axis in box]
        summary.append({
            "name": label.name,
            "label": label.value,
            "volume_mm3": round(len(voxels) * voxel_mm3, 1),
            "centroid_ras": [round(float(c), 2) for c in labels.voxel_to_ras(ijk)[0]],
            "lesions": [lesion["id"] for lesion in lesions if lesion.get("vertebra_label") == label.value],
        })
    return summary


def save_results(result: SegmentationResult, ct: Volume, out_dir: str | Path, cancel=None) -> Path:
    """Write every result file into ``out_dir`` atomically (all files appear together, or none)."""
    out_dir = Path(out_dir)
    names = ", ".join(v["name"] for v in result.vertebrae[:1] + result.vertebrae[-1:])
    title = f"SpineSeg: {len(result.vertebrae)} vertebrae ({names}), {len(result.lesions)} lesions"
    with atomic_output_dir(out_dir) as tmp:
        write_json(tmp / LESIONS_FILE, {"lesions": result.lesions})
        write_json(tmp / REPORT_FILE, {**result.report, "vertebrae": result.vertebrae})
        # The image files are compressed in parallel (zlib releases the GIL): on a clinical-size grid this is
        # most of the writing time.
        with ThreadPoolExecutor(max_workers=3) as pool:
            written = [
                pool.submit(write_nifti, result.labels, tmp / LABELS_FILE, np.uint8),
                pool.submit(write_seg_nrrd, result.labels, tmp / SEGMENTATION_FILE),
                pool.submit(write_nifti, result.heatmap, tmp / HEATMAP_FILE, np.float32),
                pool.submit(write_preview, tmp / PREVIEW_FILE, ct, result.labels, result.heatmap, result.lesions,
                            title=title),
            ]
            for future in written:
                future.result()  # re-raises a writer's error here
        if cancel is not None:
            cancel.raise_if_cancelled()  # last chance: after this the folder is published
    return out_dir


def load_results(out_dir: str | Path) -> SegmentationResult:
    """Read a result folder written by :func:`save_results` (or ``spineseg segment``)."""
    out_dir = Path(out_dir)
    missing = [name for name in RESULT_FILES if not (out_dir / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{out_dir} is not a complete SpineSeg result: missing {', '.join(missing)}")
    labels = _read_plain(out_dir / LABELS_FILE, np.uint8)
    heatmap = _read_plain(out_dir / HEATMAP_FILE, np.float32)
    report = json.loads((out_dir / REPORT_FILE).read_text())
    lesions = json.loads((out_dir / LESIONS_FILE).read_text())["lesions"]
    return SegmentationResult(labels, heatmap, lesions, report.pop("vertebrae", []), report)


def _read_plain(path: Path, dtype) -> Volume:
    """Read a result volume without the CT plausibility checks of :func:`~SpineSegLib.io.read_volume`."""
    import nibabel as nib

    image = nib.load(str(path))
    return Volume(np.asarray(image.dataobj).astype(dtype), image.affine)


__all__ = ["SegmentationResult", "save_results", "load_results", "vertebra_summary", "RESULT_FILES", "read_volume"]
