"""A generic images/labels folder (also nnU-Net's raw layout)::

    ROOT/images/<case>.nii.gz   (or imagesTr/<case>_0000.nii.gz: the modality suffix is dropped)
    ROOT/labels/<case>.nii.gz   (or labelsTr/<case>.nii.gz)
    ROOT/lesions/<case>.json    optional, SpineSeg lesion JSON
    ROOT/metadata.json          optional: {"<case>": {"patient": ..., "domain": ..., "study_uid": ..., ...}}
    ROOT/mapping.json           optional label mapping (mapping.mapping_from_json), else label-table values

A JSON sidecar beside an image (``<case>.json``, as dcm2niix writes) gives StudyInstanceUID, SeriesInstanceUID and
PatientID.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from ..dataset import Case
from .base import (
    ReadOptions,
    SourceCase,
    is_nifti,
    mapped_labels,
    patient_of,
    read_ct,
    safe_id,
    sidecar_meta,
    strip_nifti,
)
from .lesions import read_lesion_file
from .mapping import identity_mapping, mapping_from_json

FOLDERS = (("images", "labels"), ("imagesTr", "labelsTr"), ("imagesTs", "labelsTs"))
MODALITY = re.compile(r"_\d{4}$")


def generic_folders(root: Path) -> list[tuple[Path, Path]]:
    return [(root / i, root / lab) for i, lab in FOLDERS if (root / i).is_dir() and (root / lab).is_dir()]


def read_generic(root: str | Path, options: ReadOptions | None = None) -> list[SourceCase]:
    root, options = Path(root), options or ReadOptions()
    folders = generic_folders(root)
    if not folders:
        raise ValueError(f"{root}: no images/ and labels/ folders")
    mapping = options.mapping or (mapping_from_json(root / "mapping.json") if (root / "mapping.json").is_file()
                                  else identity_mapping("label-table values"))
    metadata = json.loads((root / "metadata.json").read_text()) if (root / "metadata.json").is_file() else {}
    cases = []
    for images, labels in folders:
        for image in sorted(p for p in images.iterdir() if is_nifti(p)):
            stem = MODALITY.sub("", strip_nifti(image.name))
            label = next((p for p in (labels / f"{stem}.nii.gz", labels / f"{stem}.nii") if p.is_file()), None)
            if label is None:
                continue
            case_id = safe_id(stem)
            extra = metadata.get(stem, {}) if isinstance(metadata, dict) else {}
            meta = {"source": extra.get("source", "generic"), "domain": options.domain or root.name,
                    **sidecar_meta(image), **{k: v for k, v in extra.items() if k != "source"}}
            meta["patient"] = patient_of(case_id, str(meta.get("patient", case_id)), options.patient_regex)
            if options.domain:
                meta["domain"] = options.domain
            lesion_file = root / "lesions" / f"{stem}.json"
            cases.append(SourceCase(case_id, meta, _loader(case_id, image, label, lesion_file, mapping,
                                                           options.unknown),
                                    {"image": str(image), "labels": str(label)}))
    return cases


def _loader(case_id, image, label, lesion_file, mapping, unknown):
    def load() -> Case:
        ct = read_ct(image)
        meta: dict = {}
        labels = mapped_labels(label, ct, mapping, unknown, meta)
        lesions = read_lesion_file(lesion_file) if lesion_file.is_file() else []
        return Case(case_id, ct, labels, lesions, meta)

    return load
