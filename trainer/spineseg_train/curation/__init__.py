"""Dataset curation (``spineseg-train curate``), after the VertebraFormer paper: group volumes by patient and
DICOM Study / Series Instance UID, flag near-duplicate volumes with a 3D perceptual hash (:mod:`.phash`), make
patient-level 60/20/20 splits stratified by source domain and pathology (:mod:`.splits`), and write a report
(:mod:`.report`). Splits go to ``splits.json`` beside the manifest (and, on request, a ``split`` key in each
manifest entry)."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from SpineSegLib.errors import InputError
from SpineSegLib.io import write_json

from ..datasets import ReadOptions, open_dataset
from ..datasets.splits import SPLITS_FILE
from .groups import build_groups
from .phash import (
    CENTRAL_SLICES,
    GRID,
    NEAR_DUPLICATE_DISTANCE,
    TOLERANCE,
    near_duplicate_pairs,
    perceptual_hash,
    to_hex,
)
from .report import split_counts, write_curation_report
from .splits import DEFAULT_FRACTIONS, stratified_split

__all__ = ["curate", "perceptual_hash", "near_duplicate_pairs", "build_groups", "stratified_split"]


def curate(data: str | Path, report_dir: str | Path, *, layout: str = "auto", fractions: dict | None = None,
           seed: int = 0, max_distance: int = NEAR_DUPLICATE_DISTANCE, in_manifest: bool = False,
           options: ReadOptions | None = None, log=print) -> dict:
    data = Path(data)
    fractions = dict(fractions or DEFAULT_FRACTIONS)
    started = time.time()
    sources = open_dataset(data, layout, options)
    records, hashes, warnings = [], [], []
    for index, source in enumerate(sources):
        try:
            case = source.load()
        except (ValueError, OSError, KeyError, InputError) as error:
            raise ValueError(f"curation stopped at case {source.case_id}: {error}") from error
        meta = case.meta
        record = {"id": case.case_id, "patient": str(meta.get("patient") or case.case_id),
                  "domain": str(meta.get("domain", "unknown")), "source": meta.get("source"),
                  "study_uid": meta.get("study_uid"), "series_uid": meta.get("series_uid"),
                  "lesions": len(case.lesions)}
        if not meta.get("patient"):
            warnings.append(f"{case.case_id} has no patient id: it counts as its own patient")
        bits = perceptual_hash(case.ct)
        record["hash"] = to_hex(bits)
        records.append(record)
        hashes.append(bits)
        log(f"[{index + 1}/{len(sources)}] {case.case_id}: hashed")
        del case
    pairs = near_duplicate_pairs(np.array(hashes), max_distance) if hashes else []
    by_id = {r["id"]: r for r in records}
    duplicates = [{"a": records[i]["id"], "b": records[j]["id"], "distance": d,
                   "same_patient": records[i]["patient"] == records[j]["patient"]} for i, j, d in pairs]
    groups, links = build_groups(records, [(d["a"], d["b"], d["distance"]) for d in duplicates])
    assignment = stratified_split(groups, by_id, fractions, seed)
    for record in records:
        record["split"] = assignment[record["id"]]
    strata_sizes: dict[tuple, int] = {}
    for group in groups:
        strata_sizes[tuple(group["stratum"])] = strata_sizes.get(tuple(group["stratum"]), 0) + 1
    for stratum, n in sorted(strata_sizes.items()):
        if n < len(fractions):
            warnings.append(f"stratum {' / '.join(stratum)} has {n} group(s): fewer than the {len(fractions)} "
                            f"splits, so some splits have none of it")
    report = {"dataset": str(data), "created": datetime.now(UTC).isoformat(timespec="seconds"),
              "settings": {"fractions": fractions, "seed": seed, "max_distance": max_distance,
                           "hash_bits": int(np.prod(GRID)), "hash_grid": list(GRID),
                           "hash_slices": CENTRAL_SLICES, "hash_tolerance": TOLERANCE},
              "cases": records, "groups": groups, "duplicates": duplicates, "links": links, "warnings": warnings}
    report["counts"] = split_counts(report)
    report["seconds"] = round(time.time() - started, 1)
    splits = {name: [r["id"] for r in records if r["split"] == name] for name in fractions}
    splits_document = {"format_version": 1, "created": report["created"], "seed": seed, "fractions": fractions,
                       "splits": splits, "groups": {g["id"]: g["cases"] for g in groups if len(g["cases"]) > 1}}
    is_spineseg = (data / "dataset.json").is_file()
    write_json(Path(report_dir) / SPLITS_FILE, splits_document)
    if is_spineseg:
        write_json(data / SPLITS_FILE, splits_document)
        report["splits_file"] = str(data / SPLITS_FILE)
        if in_manifest:
            _write_manifest_splits(data, assignment)
    else:
        report["splits_file"] = str(Path(report_dir) / SPLITS_FILE)
    write_curation_report(report_dir, report)
    return report


def _write_manifest_splits(data: Path, assignment: dict[str, str]) -> None:
    """Set ``split`` in each manifest entry, under the dataset lock SpineSeg's writers use."""
    from SpineSegLib.training_case import dataset_lock

    with dataset_lock(data):
        manifest = json.loads((data / "dataset.json").read_text())
        for entry in manifest["cases"]:
            if entry["id"] in assignment:
                entry["split"] = assignment[entry["id"]]
        write_json(data / "dataset.json", manifest)
