"""The on-disk dataset format the trainer reads and SpineSeg writes (docs/data-contract.md).

    DATASET/
      dataset.json          manifest: format_version, name, label-table fingerprint, cases
      images/<id>.nii.gz    CT in Hounsfield units (int16)
      labels/<id>.nii.gz    vertebra labels, label-table values (uint8)
      lesions/<id>.json     {"lesions": [{"center_ras", "size_mm", "class", "grade", "vertebra", ...}]}

Phantom datasets, corrected cases saved from Slicer or the web front end, and converted public datasets all
take this one form.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from SpineSegLib.io import write_json, write_nifti
from SpineSegLib.labels import load_label_table
from SpineSegLib.phantom import GENERATOR_VERSION
from SpineSegLib.volume import Volume

MANIFEST = "dataset.json"
FORMAT_VERSION = 1


@dataclass
class Case:
    case_id: str
    ct: Volume
    labels: Volume
    lesions: list[dict] = field(default_factory=list)
    meta: dict = field(default_factory=dict)  # source, patient, domain, ...


def read_manifest(root: str | Path) -> dict:
    root = Path(root)
    path = root / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{root} is not a SpineSeg dataset: no {MANIFEST}")
    manifest = json.loads(path.read_text())
    if manifest.get("format_version", 0) > FORMAT_VERSION:
        raise ValueError(f"{path}: dataset format {manifest['format_version']} is newer than supported")
    if manifest.get("label_table") not in (None, load_label_table().fingerprint()):
        raise ValueError(f"{path}: dataset uses a different label table than this SpineSeg")
    stale = [e["id"] for e in manifest["cases"]
             if "phantom" in e and e["phantom"].get("generator") != GENERATOR_VERSION]
    if stale:
        raise ValueError(f"{path}: {len(stale)} phantoms (first {stale[0]}) were made by another version of the "
                         f"phantom generator than this SpineSeg's (version {GENERATOR_VERSION}); their anatomy "
                         "differs from the phantoms the evaluation makes. Make the dataset again with "
                         "spineseg-train make-phantoms (each case's seed and settings are in the manifest)")
    return manifest


def new_manifest(name: str) -> dict:
    return {"format_version": FORMAT_VERSION, "name": name, "label_table": load_label_table().fingerprint(),
            "cases": []}


def add_case(root: str | Path, case: Case, name: str | None = None) -> dict:
    """Write one case and register it in the manifest; an existing case id is never overwritten."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    manifest = read_manifest(root) if (root / MANIFEST).is_file() else new_manifest(name or root.name)
    if any(entry["id"] == case.case_id for entry in manifest["cases"]):
        raise FileExistsError(f"case {case.case_id!r} already exists in {root}; choose another id")
    entry = {
        "id": case.case_id,
        "image": f"images/{case.case_id}.nii.gz",
        "labels": f"labels/{case.case_id}.nii.gz",
        "lesions": f"lesions/{case.case_id}.json",
        **case.meta,
    }
    for key in ("image", "labels", "lesions"):
        if (root / entry[key]).exists():
            raise FileExistsError(f"{root / entry[key]} already exists; refusing to overwrite it")
    write_nifti(case.ct, root / entry["image"], np.int16)
    write_nifti(case.labels, root / entry["labels"], np.uint8)
    write_json(root / entry["lesions"], {"lesions": case.lesions})
    manifest["cases"].append(entry)
    write_json(root / MANIFEST, manifest)  # last: a case is only part of the dataset once it is complete
    return entry


def load_case(root: str | Path, entry: dict) -> Case:
    import nibabel as nib

    root = Path(root)
    ct = nib.load(str(root / entry["image"]))
    labels = nib.load(str(root / entry["labels"]))
    lesions_path = root / entry.get("lesions", "")
    lesions = json.loads(lesions_path.read_text())["lesions"] if lesions_path.is_file() else []
    meta = {k: v for k, v in entry.items() if k not in ("id", "image", "labels", "lesions")}
    return Case(entry["id"], Volume(np.asarray(ct.dataobj, dtype=np.float32), ct.affine),
                Volume(np.asarray(labels.dataobj).astype(np.uint8), labels.affine), lesions, meta)


def load_dataset(root: str | Path, ids: list[str] | None = None) -> list[Case]:
    manifest = read_manifest(root)
    return [load_case(root, e) for e in manifest["cases"] if ids is None or e["id"] in ids]
