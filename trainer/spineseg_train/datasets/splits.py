"""Train / validation / test splits of a dataset: ``splits.json`` beside the manifest (written by
``spineseg-train curate``) or a ``split`` key in manifest entries."""

from __future__ import annotations

import json
from pathlib import Path

SPLITS_FILE = "splits.json"
SPLIT_NAMES = ("train", "val", "test")


def read_splits(root: str | Path) -> dict[str, list[str]]:
    """``{split: [case ids]}`` from ``splits.json``, else from the manifest's ``split`` keys; {} if neither."""
    root = Path(root)
    path = root / SPLITS_FILE
    if path.is_file():
        return {k: list(v) for k, v in json.loads(path.read_text())["splits"].items()}
    manifest = root / "dataset.json"
    if manifest.is_file():
        splits: dict[str, list[str]] = {}
        for entry in json.loads(manifest.read_text())["cases"]:
            if entry.get("split"):
                splits.setdefault(entry["split"], []).append(entry["id"])
        return splits
    return {}


def split_ids(root: str | Path, split: str) -> set[str]:
    splits = read_splits(root)
    if split not in splits:
        known = ", ".join(sorted(splits)) or "none: run spineseg-train curate first"
        raise ValueError(f"{root}: no split {split!r} (splits: {known})")
    return set(splits[split])
