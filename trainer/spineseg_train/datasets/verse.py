"""VerSe 2019 / 2020, subject-based layout (BIDS-like)::

    ROOT/rawdata/sub-verse004/sub-verse004_ct.nii.gz                    (VerSe'19; '20: ..._dir-ax_ct.nii.gz)
    ROOT/derivatives/sub-verse004/sub-verse004_seg-vert_msk.nii.gz      vertebra labels (VerSe numbering)
    ROOT/derivatives/sub-verse004/sub-verse004_seg-subreg_ctd.json      centroids
    ROOT/derivatives/sub-verse004/sub-verse004_lesions.json             optional, SpineSeg lesion JSON

A subject with several scans has one ``split-<series>`` entity per scan (same patient). Centroid files are a list
whose first entry gives the axis codes (``{"direction": ["P", "I", "R"]}``) and the others
``{"label", "X", "Y", "Z"}`` in voxels of the image reoriented to those codes (VerSe's data_utilities convention);
they are mapped to RAS mm here. Labels map by identity (VerSe numbering is the label table's). Fracture grades
(``grades=``, see :mod:`.lesions`) become fracture lesions at the vertebra centroids.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np

from ..dataset import Case
from ..metrics import centroids_mm
from .base import ReadOptions, SourceCase, mapped_labels, patient_of, read_ct, safe_id, sidecar_meta, strip_nifti
from .lesions import fracture_lesions, lookup_grades, read_fracture_grades, read_lesion_file
from .mapping import VERSE

CT_SUFFIX = "_ct"
MASK_SUFFIX = "_seg-vert_msk.nii.gz"
CENTROID_SUFFIX = "_seg-subreg_ctd.json"


def is_verse(root: Path) -> bool:
    return (root / "rawdata").is_dir() and (root / "derivatives").is_dir()


def _transform(codes, affine) -> np.ndarray:
    """VerSe data_utilities' ``reorient_centroids_to``: rows ``[image axis, flip]`` per centroid axis."""
    return nib.orientations.ornt_transform(nib.orientations.axcodes2ornt(tuple(codes)),
                                           nib.orientations.io_orientation(affine)).astype(int)


def read_centroids(path: Path, affine: np.ndarray, shape) -> dict[int, np.ndarray]:
    """``{label: RAS mm}`` from a VerSe centroid JSON: voxel coordinates along the axis codes of its first entry,
    mapped onto the image's axes as VerSe's ``reorient_centroids_to`` does (a flipped axis: ``size - c``)."""
    document = json.loads(Path(path).read_text())
    if not isinstance(document, list) or not document or "direction" not in document[0]:
        raise ValueError(f"{path}: a VerSe centroid file is a list starting with {{\"direction\": [...]}}")
    transform = _transform(document[0]["direction"], affine)
    centroids = {}
    for entry in document[1:]:
        if "label" in entry and all(k in entry for k in "XYZ"):
            ijk = np.zeros(3)
            for source, (axis, flip) in enumerate(transform):
                value = float(entry["XYZ"[source]])
                ijk[axis] = shape[axis] - value if flip == -1 else value
            centroids[int(entry["label"])] = affine[:3, :3] @ ijk + affine[:3, 3]
    return centroids


def write_centroids(path: Path, centroids: dict[int, np.ndarray], affine: np.ndarray, shape,
                    codes=("P", "I", "R")) -> None:
    """The inverse of :func:`read_centroids` (writes a VerSe centroid file; used for test fixtures)."""
    transform = _transform(codes, affine)
    inverse = np.linalg.inv(affine)
    entries = [{"direction": list(codes)}]
    for label, ras in sorted(centroids.items()):
        ijk = inverse[:3, :3] @ np.asarray(ras, dtype=float) + inverse[:3, 3]
        xyz = [shape[axis] - ijk[axis] if flip == -1 else ijk[axis] for axis, flip in transform]
        entries.append({"label": int(label), **{k: round(float(v), 3) for k, v in zip("XYZ", xyz)}})
    path.write_text(json.dumps(entries))


def read_verse(root: str | Path, options: ReadOptions | None = None) -> list[SourceCase]:
    root, options = Path(root), options or ReadOptions()
    grades = read_fracture_grades(options.grades) if options.grades else {}
    mapping = options.mapping or VERSE
    cases = []
    for image in sorted((root / "rawdata").glob("sub-*/*")):
        stem = strip_nifti(image.name)
        if stem == image.name or not stem.endswith(CT_SUFFIX):
            continue
        prefix = stem[: -len(CT_SUFFIX)]
        subject = image.parent.name
        derivatives = root / "derivatives" / subject
        mask = derivatives / (prefix + MASK_SUFFIX)
        if not mask.is_file():
            mask = derivatives / (prefix + MASK_SUFFIX.removesuffix(".gz"))
        if not mask.is_file():
            continue  # a test-phase image without labels
        centroid_file = derivatives / (prefix + CENTROID_SUFFIX)
        lesion_file = derivatives / (prefix + "_lesions.json")
        case_id = safe_id(prefix.removeprefix("sub-"))
        meta = {"source": "verse", "patient": patient_of(case_id, subject, options.patient_regex),
                "domain": options.domain or "verse", **sidecar_meta(image)}
        case_grades = lookup_grades(grades, prefix, subject)
        cases.append(SourceCase(case_id, meta, _loader(case_id, image, mask, centroid_file, lesion_file,
                                                       case_grades, mapping, options.unknown),
                                {"image": str(image), "labels": str(mask)}))
    return cases


def _loader(case_id, image, mask, centroid_file, lesion_file, grades, mapping, unknown):
    def load() -> Case:
        ct = read_ct(image)
        meta: dict = {}
        labels = mapped_labels(mask, ct, mapping, unknown, meta)
        if centroid_file.is_file():
            centroids = read_centroids(centroid_file, ct.affine, ct.shape)
        else:
            centroids = centroids_mm(labels.array, labels.affine)
        present = set(np.unique(labels.array).tolist())
        centroids = {v: c for v, c in centroids.items() if v in present}
        lesions = read_lesion_file(lesion_file) if lesion_file.is_file() else []
        fractures = fracture_lesions(grades, labels, centroids)
        if fractures:
            meta["fracture_grades"] = {str(k): v for k, v in sorted(grades.items())}
        for lesion in fractures:
            lesion["id"] = len(lesions) + 1
            lesions.append(lesion)
        return Case(case_id, ct, labels, lesions, meta)

    return load
