"""CTSpine1K::

    ROOT/[data/raw_data/]volumes/<subset>/<name>.nii.gz        CT (subsets: COLONOG, HNSCC-3DCT-RT, MSD-T10, COVID-19)
    ROOT/[data/raw_data/]labels/<subset>/<name>_seg.nii.gz     vertebra labels

Labels: 1–7 C1–C7, 8–19 T1–T12, 20–24 L1–L5, 25 L6 (the dataset paper's numbering, identical to VerSe's; the
sacrum is not labelled) — ``mapping.CTSPINE1K``. The subset is the domain (its source and scanner). The file name
is the only identity the dataset gives, so it is the patient id unless ``patient_regex`` says otherwise; curation's
near-duplicate hash catches repeated scans of one patient that share no name.
"""

from __future__ import annotations

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
from .mapping import CTSPINE1K

LABEL_SUFFIX = "_seg"


def ctspine1k_root(root: Path) -> Path | None:
    """The folder holding ``volumes/`` and ``labels/`` (ROOT itself or ROOT/data/raw_data)."""
    for candidate in (root, root / "raw_data", root / "data" / "raw_data"):
        if (candidate / "volumes").is_dir() and (candidate / "labels").is_dir():
            return candidate
    return None


def read_ctspine1k(root: str | Path, options: ReadOptions | None = None) -> list[SourceCase]:
    options = options or ReadOptions()
    base = ctspine1k_root(Path(root))
    if base is None:
        raise ValueError(f"{root}: no volumes/ and labels/ folders (CTSpine1K layout)")
    mapping = options.mapping or CTSPINE1K
    cases = []
    for image in sorted(p for p in (base / "volumes").rglob("*") if is_nifti(p)):
        relative = image.parent.relative_to(base / "volumes")
        stem = strip_nifti(image.name)
        labels = next((p for p in (base / "labels" / relative / (stem + LABEL_SUFFIX + s) for s in (".nii.gz", ".nii"))
                       if p.is_file()), None)
        if labels is None:
            continue
        subset = relative.parts[0] if relative.parts else "ctspine1k"
        case_id = safe_id(f"{subset}_{stem}" if relative.parts else stem)
        meta = {"source": "ctspine1k", "patient": patient_of(case_id, safe_id(stem), options.patient_regex),
                "domain": options.domain or subset, "subset": subset, **sidecar_meta(image)}
        cases.append(SourceCase(case_id, meta, _loader(case_id, image, labels, mapping, options.unknown),
                                {"image": str(image), "labels": str(labels)}))
    return cases


def _loader(case_id, image, labels_path, mapping, unknown):
    def load() -> Case:
        ct = read_ct(image)
        meta: dict = {}
        return Case(case_id, ct, mapped_labels(labels_path, ct, mapping, unknown, meta), [], meta)

    return load
