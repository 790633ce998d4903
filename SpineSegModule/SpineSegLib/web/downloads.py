"""The result files a session offers for download, made from the (corrected) nodes in its scene.

``seg.nrrd``: the segmentation as Slicer writes it (names, colours, label values, terminology);
``labels.nii.gz``: vertebra label-table values on the CT's grid; ``heatmap.nii.gz``: the lesion heatmap;
``lesions.json`` and ``report.json`` (model and run report, per-vertebra summary, lesions).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np

from .. import scene as _scene
from ..errors import InputError
from ..io import nifti_bytes
from ..results import vertebra_summary

KINDS = {
    "seg": ("vertebrae.seg.nrrd", "application/octet-stream"),
    "labels": ("vertebrae.nii.gz", "application/gzip"),
    "heatmap": ("lesion_heatmap.nii.gz", "application/gzip"),
    "lesions": ("lesions.json", "application/json"),
    "report": ("report.json", "application/json"),
}


def file_name(kind: str, base: str = "") -> str:
    name = KINDS[kind][0]
    return f"{base}_{name}" if base else name


def make(kind: str, corrections, heatmap_node=None, report_node=None, history=()) -> bytes:
    """The bytes of one download (``kind`` is a key of :data:`KINDS`)."""
    if kind not in KINDS:
        raise InputError(f"unknown download {kind!r}")
    if corrections is None:
        raise InputError("segment a CT first: there is no result to download")
    if kind == "seg":
        return _seg_nrrd(corrections.segmentation_node)
    if kind == "labels":
        return nifti_bytes(corrections.labels(), np.uint8)
    if kind == "heatmap":
        if heatmap_node is None:
            raise InputError("this result has no lesion heatmap")
        return nifti_bytes(_scene.node_to_volume(heatmap_node, dtype=np.float32), np.float32)
    lesions = corrections.lesions()
    if kind == "lesions":
        return _json({"lesions": lesions})
    stored = report_node.GetAttribute(_scene.ATTR_REPORT) if report_node is not None else None
    report = json.loads(stored) if stored else {}
    report["vertebrae"] = vertebra_summary(corrections.labels(), lesions, corrections.table)
    report["lesions"] = lesions
    report["corrections"] = list(history)
    return _json(report)


def _json(document) -> bytes:
    return (json.dumps(document, indent=2, default=_default) + "\n").encode()


def _default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def _seg_nrrd(segmentation_node) -> bytes:
    import slicer

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "vertebrae.seg.nrrd"
        storage = slicer.vtkMRMLSegmentationStorageNode()
        storage.SetFileName(str(path))
        storage.SetUseCompression(True)
        if not storage.WriteData(segmentation_node) or not path.is_file():
            raise InputError("could not write the segmentation file")
        return path.read_bytes()
