"""TotalSegmentator-style data (the released CT dataset, or TotalSegmentator's own output)::

    ROOT/meta.csv                                   optional: image_id; institute; manufacturer; ... (';' or ',')
    ROOT/<subject>/ct.nii.gz
    ROOT/<subject>/segmentations/vertebrae_C1.nii.gz ... vertebrae_L5.nii.gz, vertebrae_S1.nii.gz, sacrum.nii.gz
      or
    ROOT/<subject>/segmentations.nii.gz            one multilabel file, v2 numbering (``--ml`` output)

Per-structure masks: only the spine files are read (names in ``mapping.TOTALSEG_NAMES``; S1 and the sacrum both
become the sacrum, 26); other structures are not vertebrae and are left out. Where two masks claim a voxel the
caudal one wins, and the overlap is reported. A multilabel file maps with ``mapping.TOTALSEG_V2`` (25 sacrum,
26 S1, 27 L5 … 50 C1; the other v2 classes are ignored). Domain: ``meta.csv``'s ``institute`` (else
``manufacturer``), else ``totalsegmentator``; the subject id is the patient id.
"""

from __future__ import annotations

import csv
from pathlib import Path

import nibabel as nib
import numpy as np

from SpineSegLib.labels import load_label_table
from SpineSegLib.volume import Volume

from ..dataset import Case
from .base import ReadOptions, SourceCase, check_same_grid, mapped_labels, patient_of, read_ct, safe_id, sidecar_meta
from .mapping import TOTALSEG_NAMES, TOTALSEG_V2

MULTILABEL_NAMES = ("segmentations.nii.gz", "segmentations.nii", "seg.nii.gz")
DOMAIN_COLUMNS = ("institute", "manufacturer", "scanner_model")


def is_totalseg(root: Path) -> bool:
    return any((d / "ct.nii.gz").is_file() and ((d / "segmentations").is_dir() or _multilabel(d))
               for d in root.iterdir() if d.is_dir())


def _multilabel(folder: Path) -> Path | None:
    return next((folder / n for n in MULTILABEL_NAMES if (folder / n).is_file()), None)


def read_meta_csv(root: Path) -> dict[str, dict]:
    path = root / "meta.csv"
    if not path.is_file():
        return {}
    text = path.read_text(encoding="utf-8-sig")
    dialect = csv.Sniffer().sniff(text.splitlines()[0], delimiters=",;\t")
    return {row["image_id"].strip(): row for row in csv.DictReader(text.splitlines(), dialect=dialect)
            if row.get("image_id")}


def read_totalseg(root: str | Path, options: ReadOptions | None = None) -> list[SourceCase]:
    root, options = Path(root), options or ReadOptions()
    meta_rows = read_meta_csv(root)
    cases = []
    for folder in sorted(d for d in root.iterdir() if d.is_dir()):
        image = folder / "ct.nii.gz"
        multilabel, masks = _multilabel(folder), folder / "segmentations"
        if not image.is_file() or not (multilabel or masks.is_dir()):
            continue
        row = meta_rows.get(folder.name, {})
        domain = options.domain or next((row[c].strip() for c in DOMAIN_COLUMNS if row.get(c, "").strip()),
                                        "totalsegmentator")
        case_id = safe_id(folder.name)
        meta = {"source": "totalsegmentator", "patient": patient_of(case_id, case_id, options.patient_regex),
                "domain": domain, **sidecar_meta(image)}
        for key in ("pathology", "study_type", "manufacturer", "scanner_model"):
            if row.get(key, "").strip():
                meta[key] = row[key].strip()
        if multilabel is not None:
            loader = _multilabel_loader(case_id, image, multilabel, options)
        else:
            loader = _masks_loader(case_id, image, masks)
        cases.append(SourceCase(case_id, meta, loader,
                                {"image": str(image), "labels": str(multilabel or masks)}))
    return cases


def _multilabel_loader(case_id, image, path, options: ReadOptions):
    def load() -> Case:
        ct = read_ct(image)
        meta: dict = {}
        labels = mapped_labels(path, ct, options.mapping or TOTALSEG_V2, options.unknown, meta)
        return Case(case_id, ct, labels, [], meta)

    return load


def _masks_loader(case_id, image, folder: Path):
    table = load_label_table()

    def load() -> Case:
        ct = read_ct(image)
        labels = np.zeros(ct.shape, dtype=np.uint8)
        overlap = 0
        found = []
        # cranio-caudal order, so a caudal mask wins a voxel two masks claim
        for stem, name in sorted(TOTALSEG_NAMES.items(), key=lambda item: (table.order(table.by_name(item[1]).value),
                                                                           item[0] != "vertebrae_S1")):
            path = next((p for p in (folder / f"{stem}.nii.gz", folder / f"{stem}.nii") if p.is_file()), None)
            if path is None:
                continue
            mask_image = nib.load(str(path))
            mask = np.asanyarray(mask_image.dataobj)
            check_same_grid(mask.shape, mask_image.affine, ct, path)
            mask = mask > 0
            if not mask.any():
                continue
            overlap += int(np.count_nonzero(labels[mask]))
            labels[mask] = table.by_name(name).value
            found.append(stem)
        meta = {"structures": found}
        if overlap:
            meta["label_report"] = {"overlap_voxels": overlap}
        return Case(case_id, ct, Volume(labels, ct.affine), [], meta)

    return load
