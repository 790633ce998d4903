"""The supported on-disk layouts, detection, and :func:`open_dataset` (any layout → list of SourceCase)."""

from __future__ import annotations

from pathlib import Path

from .base import ReadOptions, SourceCase
from .ctspine1k import ctspine1k_root, read_ctspine1k
from .generic import generic_folders, read_generic
from .spineseg import is_spineseg, read_spineseg
from .totalseg import is_totalseg, read_totalseg
from .verse import is_verse, read_verse

READERS = {
    "spineseg": read_spineseg,  # our format: phantoms, converted data, corrected cases from Slicer / the web
    "verse": read_verse,
    "ctspine1k": read_ctspine1k,
    "totalsegmentator": read_totalseg,
    "generic": read_generic,
}
LAYOUTS = tuple(READERS)


def detect_layout(root: str | Path) -> str:
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset folder not found: {root}")
    if is_spineseg(root):
        return "spineseg"
    if is_verse(root):
        return "verse"
    if ctspine1k_root(root) is not None:
        return "ctspine1k"
    if generic_folders(root):
        return "generic"
    if is_totalseg(root):
        return "totalsegmentator"
    raise ValueError(f"{root}: not a known dataset layout (SpineSeg dataset.json, VerSe rawdata/ + derivatives/, "
                     f"CTSpine1K volumes/ + labels/, images/ + labels/, or TotalSegmentator <subject>/ct.nii.gz); "
                     f"see docs/data-contract.md")


def open_dataset(root: str | Path, layout: str = "auto", options: ReadOptions | None = None) -> list[SourceCase]:
    """The cases of a dataset folder in any supported layout (nothing is read until ``case.load()``)."""
    layout = detect_layout(root) if layout in (None, "auto") else layout
    if layout not in READERS:
        raise ValueError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)} or auto")
    cases = READERS[layout](root, options or ReadOptions())
    ids = [c.case_id for c in cases]
    if len(set(ids)) != len(ids):
        duplicated = sorted({i for i in ids if ids.count(i) > 1})
        raise ValueError(f"{root}: case ids {duplicated[:5]} occur twice")
    return cases
