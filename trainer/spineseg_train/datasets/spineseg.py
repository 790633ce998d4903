"""SpineSeg's own dataset format (docs/data-contract.md): phantom datasets, converted public data and the
corrected-case folders that Slicer and the web front end write. Read in place, with every label value checked
against the label table and every lesion against the lesion schema."""

from __future__ import annotations

from pathlib import Path

from ..dataset import MANIFEST, Case, load_case, read_manifest
from .base import ReadOptions, SourceCase
from .lesions import normalise_lesion
from .mapping import identity_mapping


def is_spineseg(root: Path) -> bool:
    return (root / MANIFEST).is_file()


def read_spineseg(root: str | Path, options: ReadOptions | None = None) -> list[SourceCase]:
    root, options = Path(root), options or ReadOptions()
    manifest = read_manifest(root)
    mapping = options.mapping or identity_mapping()
    cases = []
    for entry in manifest["cases"]:
        meta = {k: v for k, v in entry.items() if k not in ("id", "image", "labels", "lesions")}
        meta.setdefault("source", "spineseg")
        meta.setdefault("patient", entry["id"])
        if options.domain:
            meta["domain"] = options.domain
        cases.append(SourceCase(entry["id"], meta, _loader(root, entry, mapping, options.unknown),
                                {"image": str(root / entry["image"]), "labels": str(root / entry["labels"])}))
    return cases


def _loader(root: Path, entry: dict, mapping, unknown):
    def load() -> Case:
        case = load_case(root, entry)
        array, report = mapping.apply(case.labels.array, str(root / entry["labels"]), unknown)
        case.labels.array = array
        case.lesions = [normalise_lesion(les, f"{root / entry.get('lesions', '')} lesion {i}")
                        for i, les in enumerate(case.lesions)]
        case.meta = {"label_report": report} if report["unknown"] or report["ignored"] else {}
        return case

    return load
