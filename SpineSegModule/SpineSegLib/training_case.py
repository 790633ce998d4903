"""Saving a corrected result as a training case, in the trainer's dataset format (docs/data-contract.md).

The core never imports the trainer, so the format is written here, following the contract exactly:

    DATASET/dataset.json          manifest (format_version 1, name, label-table fingerprint, cases)
    DATASET/images/<case>.nii.gz  CT, int16 Hounsfield units, the CT's voxel-to-RAS affine
    DATASET/labels/<case>.nii.gz  uint8 label-table values on the same grid
    DATASET/lesions/<case>.json   {"lesions": [{"center_ras", "size_mm", "class", "grade", "vertebra", ...}]}

The three files are written first and the manifest last, under a lock file, so a case belongs to the dataset
only once complete and two hosts saving at once do not lose each other's case. Nothing existing is overwritten:
an existing case id or file raises :class:`CaseExistsError`.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from .errors import InputError, SpineSegError
from .labels import LabelTable, load_label_table
from .volume import Volume

MANIFEST = "dataset.json"
FORMAT_VERSION = 1
LOCK_FILE = ".spineseg-dataset.lock"
CASE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
RESERVED_KEYS = ("id", "image", "labels", "lesions")
DEFAULT_LESION_SIZE_MM = 8.0  # what the trainer assumes for a lesion without a size
LESION_KEYS = ("id", "class", "score", "center_ras", "size_mm", "grade", "vertebra", "vertebra_label", "source")


class CaseExistsError(SpineSegError, FileExistsError):
    """The case id or one of its files already exists in the dataset; nothing was written."""


def default_case_id(name: str) -> str:
    """A case id from a volume name and the time, e.g. ``CT_20250101-120000``."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", name or "case").strip("._-") or "case"
    return f"{stem[:80]}_{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def check_case_id(case_id: str) -> str:
    case_id = str(case_id).strip()
    if not CASE_ID.match(case_id) or ".." in case_id:
        raise InputError(f"invalid case id {case_id!r}: use letters, digits, '.', '_' and '-' (at most 128)")
    return case_id


@contextlib.contextmanager
def dataset_lock(root: Path, timeout_s: float = 30.0, stale_s: float = 600.0):
    """An exclusive lock on a dataset folder (a lock file created with O_EXCL; stale locks are broken)."""
    path = Path(root) / LOCK_FILE
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            break
        except FileExistsError:
            with contextlib.suppress(FileNotFoundError):
                if time.time() - path.stat().st_mtime > stale_s:
                    path.unlink()
                    continue
            if time.monotonic() > deadline:
                raise SpineSegError(f"the dataset {root} is locked by another writer ({path}); try again") from None
            time.sleep(0.05)
    try:
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def read_or_create_manifest(root: Path, table: LabelTable) -> dict:
    path = root / MANIFEST
    if not path.is_file():
        return {"format_version": FORMAT_VERSION, "name": root.name, "label_table": table.fingerprint(), "cases": []}
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise InputError(f"{path} is not a readable dataset manifest ({error})") from error
    if not isinstance(manifest, dict) or not isinstance(manifest.get("cases"), list):
        raise InputError(f"{path} is not a SpineSeg dataset manifest (no case list)")
    if int(manifest.get("format_version", 0)) > FORMAT_VERSION:
        raise InputError(f"{path}: dataset format {manifest['format_version']} is newer than this SpineSeg writes")
    if manifest.get("label_table") not in (None, table.fingerprint()):
        raise InputError(f"{path}: the dataset uses a different label table than this SpineSeg")
    return manifest


def write_case(dataset_dir: str | Path, case_id: str, ct: Volume, labels: Volume, lesions: list[dict],
               meta: dict | None = None, table: LabelTable | None = None) -> dict:
    """Add one case (CT, labels, lesions) to a dataset folder and its manifest; returns the manifest entry.

    Raises :class:`CaseExistsError` if the id or a file is already there, :class:`InputError` for labels that
    are not label-table values or a grid that does not match the CT.
    """
    table = table or load_label_table()
    case_id = check_case_id(case_id)
    root = Path(dataset_dir).expanduser().absolute()
    ct_array = np.asarray(ct.array)
    label_array = np.asarray(labels.array)
    if ct_array.ndim != 3 or label_array.shape != ct_array.shape:
        raise InputError(f"the labels {label_array.shape} are not on the CT's grid {ct_array.shape}")
    if not np.allclose(labels.affine, ct.affine, atol=1e-4):
        raise InputError("the labels' voxel-to-RAS matrix differs from the CT's")
    unknown = sorted(set(np.unique(label_array).tolist()) - set(table.values) - {0})
    if unknown:
        raise InputError(f"the labels hold values {unknown} that are not in the label table")
    entry = {"id": case_id, "image": f"images/{case_id}.nii.gz", "labels": f"labels/{case_id}.nii.gz",
             "lesions": f"lesions/{case_id}.json"}
    entry.update({k: v for k, v in (meta or {}).items() if k not in RESERVED_KEYS and v is not None})
    root.mkdir(parents=True, exist_ok=True)
    with dataset_lock(root):
        manifest = read_or_create_manifest(root, table)
        if any(case.get("id") == case_id for case in manifest["cases"]):
            raise CaseExistsError(f"case {case_id!r} already exists in {root}; choose another id")
        for key in ("image", "labels", "lesions"):
            if (root / entry[key]).exists():
                raise CaseExistsError(f"{root / entry[key]} already exists; refusing to overwrite it")
        from .io import write_json, write_nifti

        written = []
        try:
            hu = np.clip(np.round(ct_array.astype(np.float64)), -32768, 32767).astype(np.int16)
            written.append(root / entry["image"])
            write_nifti(Volume(hu, ct.affine), root / entry["image"], np.int16)
            written.append(root / entry["labels"])
            write_nifti(Volume(label_array.astype(np.uint8), ct.affine), root / entry["labels"], np.uint8)
            written.append(root / entry["lesions"])
            write_json(root / entry["lesions"], {"lesions": [_lesion_record(lesion) for lesion in lesions]})
            manifest.setdefault("format_version", FORMAT_VERSION)
            manifest.setdefault("label_table", table.fingerprint())
            manifest["cases"].append(entry)
            write_json(root / MANIFEST, manifest)  # last: the case is part of the dataset only once complete
        except BaseException:
            for path in written:  # a failed save leaves no half case behind
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
            raise
    return entry


def _lesion_record(lesion: dict) -> dict:
    record = {key: lesion.get(key) for key in LESION_KEYS if key in lesion}
    record["center_ras"] = [float(c) for c in lesion["center_ras"]]
    record["size_mm"] = float(lesion.get("size_mm") or DEFAULT_LESION_SIZE_MM)
    record["class"] = str(lesion.get("class"))
    record.setdefault("grade", None)
    if record["class"] != "fracture":
        record["grade"] = None
    record.setdefault("vertebra", None)
    record.setdefault("vertebra_label", None)
    return record


def segmentation_labels_on(segmentation_node, ct_node, table: LabelTable | None = None) -> Volume:
    """The vertebra segments as label-table values on the CT's grid (values from the segments' names).

    Raises :class:`InputError` if a segment that is not a vertebra of the label table, or a vertebra named twice,
    holds voxels: such a labelmap cannot be training data.
    """
    import slicer
    import vtk

    from . import scene as _scene

    table = table or load_label_table()
    segmentation = segmentation_node.GetSegmentation()
    ids = vtk.vtkStringArray()
    names = []
    for index in range(segmentation.GetNumberOfSegments()):
        ids.InsertNextValue(segmentation.GetNthSegmentID(index))
        names.append(segmentation.GetNthSegment(index).GetName())
    scene = segmentation_node.GetScene()
    labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "__spineseg_case_export")
    try:
        if names and not slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(
                segmentation_node, ids, labelmap, ct_node, slicer.vtkSegmentation.EXTENT_REFERENCE_GEOMETRY):
            raise InputError(f"could not export segmentation {segmentation_node.GetName()} onto the CT's grid")
        exported = _scene.node_to_volume(labelmap) if names else None
    finally:
        for node in [labelmap.GetDisplayNode(), labelmap.GetStorageNode(), labelmap]:
            if node is not None and node.GetScene() is scene:
                scene.RemoveNode(node)
    ct = _scene.node_to_volume(ct_node)
    if exported is None:
        return Volume(np.zeros(ct.shape, dtype=np.uint8), ct.affine)
    counts = np.bincount(exported.array.ravel().astype(np.int64), minlength=len(names) + 1)
    lut = np.zeros(len(names) + 1, dtype=np.uint8)
    seen: dict[str, str] = {}
    problems = []
    for position, name in enumerate(names):
        if counts[position + 1] == 0:
            continue
        try:
            label = table.by_name(name)
        except KeyError:
            problems.append(f"segment {name!r} is not a vertebra of the label table (rename or delete it)")
            continue
        if label.name in seen:
            problems.append(f"{label.name} is named twice (renumber the column)")
            continue
        seen[label.name] = name
        lut[position + 1] = label.value
    if problems:
        raise InputError("cannot save this segmentation as training data: " + "; ".join(problems))
    return Volume(lut[exported.array.astype(np.int64)], ct.affine)


def save_training_case(dataset_dir: str | Path, ct_node, segmentation_node, lesions: list[dict],
                       case_id: str | None = None, table: LabelTable | None = None, **meta) -> dict:
    """Write the CT node, the corrected segmentation (label-table values on the CT's grid) and the lesions as a
    new case of ``dataset_dir``; returns the manifest entry (``source`` defaults to ``corrected``)."""
    import SpineSegLib

    from . import scene as _scene

    table = table or load_label_table()
    if ct_node is None:
        raise InputError("no CT volume to save")
    ct = _scene.node_to_volume(ct_node, dtype=np.float32)
    labels = segmentation_labels_on(segmentation_node, ct_node, table)
    if not np.any(labels.array):
        raise InputError("the segmentation holds no vertebra: nothing to train on")
    meta = {"source": "corrected", "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "spineseg_version": SpineSegLib.__version__, **meta}
    return write_case(dataset_dir, case_id or default_case_id(ct_node.GetName()), ct, labels, lesions, meta, table)
