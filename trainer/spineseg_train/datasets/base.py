"""What every reader returns: :class:`SourceCase` — a case found on disk, loaded on demand as a
:class:`~spineseg_train.dataset.Case` (CT in HU, labels in label-table values, lesions, metadata)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from SpineSegLib.io import read_volume
from SpineSegLib.volume import Volume

from ..dataset import Case
from .mapping import LabelMapping

NIFTI = (".nii.gz", ".nii")
# dcm2niix / BIDS sidecar keys -> manifest keys
SIDECAR_KEYS = {"StudyInstanceUID": "study_uid", "SeriesInstanceUID": "series_uid", "PatientID": "patient"}


@dataclass
class SourceCase:
    """A case of a public layout: ``load()`` reads and maps it. ``meta`` goes into the manifest entry."""

    case_id: str
    meta: dict
    loader: Callable[[], Case] = field(repr=False)
    files: dict = field(default_factory=dict)  # where it came from (for reports)

    def load(self) -> Case:
        case = self.loader()
        case.meta = {**self.meta, **case.meta}
        return case


@dataclass
class ReadOptions:
    """Options every reader accepts."""

    domain: str | None = None  # overrides the layout's domain
    mapping: LabelMapping | None = None  # overrides the layout's label mapping
    unknown: str = "error"  # unknown label values: error | background
    patient_regex: str | None = None  # patient id = first group (or whole match) of this regex on the case id
    grades: str | Path | None = None  # fracture grades file (VerSe)


def strip_nifti(name: str) -> str:
    for suffix in NIFTI:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def is_nifti(path: Path) -> bool:
    return path.is_file() and path.name.endswith(NIFTI)


def safe_id(text: str) -> str:
    """A case id the dataset format accepts (letters, digits, '.', '_', '-')."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._-")
    return (cleaned or "case")[:128]


def patient_of(case_id: str, default: str, regex: str | None) -> str:
    if regex:
        match = re.search(regex, case_id)
        if match:
            return match.group(1) if match.groups() else match.group(0)
    return default


def sidecar_meta(image: Path) -> dict:
    """DICOM identifiers from a JSON sidecar beside the image (dcm2niix / BIDS: ``<stem>.json``)."""
    sidecar = image.with_name(strip_nifti(image.name) + ".json")
    if not sidecar.is_file():
        return {}
    try:
        document = json.loads(sidecar.read_text())
    except ValueError:
        return {}
    return {key: str(document[k]) for k, key in SIDECAR_KEYS.items() if isinstance(document, dict) and document.get(k)}


def read_ct(path: Path) -> Volume:
    """The CT (NIfTI / NRRD / DICOM folder) in HU; SpineSegLib's checks refuse images that are not CT."""
    return read_volume(path)


def read_label_array(path: Path, ct: Volume) -> np.ndarray:
    """A label file's integer array, checked to lie on the CT's grid."""
    import nibabel as nib

    image = nib.load(str(path))
    data = np.asanyarray(image.dataobj)
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    check_same_grid(data.shape, image.affine, ct, path)
    return data


def check_same_grid(shape, affine, ct: Volume, path: Path) -> None:
    if tuple(shape) != tuple(ct.shape):
        raise ValueError(f"{path}: labels of shape {tuple(shape)} are not on the CT's grid {tuple(ct.shape)}")
    affine = np.asarray(affine, dtype=np.float64)
    linear = np.abs(affine[:3, :3] - ct.affine[:3, :3]).max()
    shift = np.abs(affine[:3, 3] - ct.affine[:3, 3]).max()
    if linear > 1e-3 or shift > 1e-2:  # NIfTI stores float32: far below these for the same grid
        raise ValueError(f"{path}: the labels' voxel-to-world matrix differs from the CT's (by up to "
                         f"{max(linear, shift):.3g}); labels must lie on the image's grid")


def mapped_labels(path: Path, ct: Volume, mapping: LabelMapping, unknown: str, meta: dict) -> Volume:
    """Read, check and map a label file; unknown or ignored values are noted in ``meta['label_report']``."""
    array, report = mapping.apply(read_label_array(path, ct), str(path), unknown)
    if report["unknown"] or report["ignored"]:
        meta["label_report"] = report
    return Volume(array, ct.affine)
