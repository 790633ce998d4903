"""Label mappings: a public dataset's label values (or structure names) onto SpineSeg's label table.

A :class:`LabelMapping` maps each source value to a label-table value (``0`` = background). Values a dataset is
known to use for other structures (TotalSegmentator's organs) are *ignored* on purpose and set to background;
any other value is *unknown*: by default an :class:`UnknownLabelsError` names the file, the values and their voxel
counts, so a wrong layout or numbering never passes silently.

Built-in mappings (docs/data-contract.md, "Public layouts"):

* ``VERSE`` — identity: VerSe numbering is the table's (1–7 C1–C7, 8–19 T1–T12, 20–25 L1–L6, 26 sacrum, 28 T13).
  27 (coccyx) is not in the table and is reported as unknown.
* ``CTSPINE1K`` — 1–7 C1–C7, 8–19 T1–T12, 20–24 L1–L5, 25 L6 (the dataset paper's numbering, which is VerSe's).
* ``TOTALSEG_V2`` — TotalSegmentator v2 ``total`` task: 25 sacrum, 26 vertebrae_S1 (both → sacrum 26),
  27 L5 … 31 L1, 32 T12 … 43 T1, 44 C7 … 50 C1; its other 1–117 values are organs, vessels, muscles, ribs:
  ignored.
* ``TOTALSEG_NAMES`` — per-structure mask files ``vertebrae_C1`` … ``vertebrae_L5``, ``vertebrae_S1``, ``sacrum``.
* :func:`mapping_from_json` — a user mapping for any other numbering.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from SpineSegLib.labels import load_label_table


class UnknownLabelsError(ValueError):
    """A label file holds values the mapping does not know."""


@dataclass
class LabelMapping:
    name: str
    to_value: dict[int, int]  # source value -> label-table value (0 = background)
    ignored: dict[int, str] = field(default_factory=dict)  # source values set to background on purpose -> why

    def __post_init__(self) -> None:
        table = load_label_table()
        bad = sorted({v for v in self.to_value.values() if v != 0 and not table.has_value(v)})
        if bad:
            raise ValueError(f"mapping {self.name}: target values {bad} are not in the label table")

    def describe(self) -> dict:
        table = load_label_table()
        return {"name": self.name,
                "values": {str(k): (table.by_value(v).name if v else "background")
                           for k, v in sorted(self.to_value.items())},
                "ignored": {str(k): why for k, why in sorted(self.ignored.items())}}

    def apply(self, array: np.ndarray, where: str = "labels", unknown: str = "error") -> tuple[np.ndarray, dict]:
        """``(uint8 label-table map, report)``; ``unknown`` = ``"error"`` (raise) or ``"background"`` (drop, report).

        The report holds ``unknown`` and ``ignored`` as ``{source value: voxel count}``.
        """
        if unknown not in ("error", "background"):
            raise ValueError(f"unknown must be 'error' or 'background', not {unknown!r}")
        array = np.asarray(array)
        if not (np.issubdtype(array.dtype, np.integer) or array.dtype == bool):
            rounded = np.rint(array)
            if not np.allclose(array, rounded):
                raise UnknownLabelsError(f"{where}: a label file must hold integer values, found fractions")
            array = rounded
        array = array.astype(np.int64)
        if array.size and array.min() < 0:
            raise UnknownLabelsError(f"{where}: negative label values {sorted(np.unique(array[array < 0]))[:10]}")
        counts = np.bincount(array.ravel())
        present = [int(v) for v in np.flatnonzero(counts) if v != 0]
        unknown_values = {v: int(counts[v]) for v in present if v not in self.to_value and v not in self.ignored}
        if unknown_values and unknown == "error":
            listed = ", ".join(f"{v} ({n} voxels)" for v, n in sorted(unknown_values.items()))
            raise UnknownLabelsError(
                f"{where}: label values {listed} are not in the {self.name} mapping onto SpineSeg's label table "
                f"(known: {_ranges(sorted(self.to_value))}). Check the layout, give a --mapping JSON, or drop them "
                f"with --unknown-labels background.")
        lut = np.zeros(max(counts.size, 1), dtype=np.uint8)
        for source, target in self.to_value.items():
            if source < lut.size:
                lut[source] = target
        report = {"unknown": {str(k): v for k, v in unknown_values.items()},
                  "ignored": {str(v): int(counts[v]) for v in present if v in self.ignored}}
        return lut[array], report


def _ranges(values: list[int]) -> str:
    if not values:
        return "none"
    parts, start, prev = [], values[0], values[0]
    for v in values[1:] + [None]:
        if v is not None and v == prev + 1:
            prev = v
            continue
        parts.append(f"{start}" if start == prev else f"{start}-{prev}")
        if v is not None:
            start = prev = v
    return ", ".join(parts)


def identity_mapping(name: str = "SpineSeg") -> LabelMapping:
    """Label-table values onto themselves (VerSe numbering, SpineSeg datasets)."""
    return LabelMapping(name, {v: v for v in load_label_table().values})


def _by_name(names: dict[int, str]) -> dict[int, int]:
    table = load_label_table()
    return {value: table.by_name(name).value for value, name in names.items()}


VERSE = identity_mapping("VerSe")

CTSPINE1K = LabelMapping("CTSpine1K", _by_name(
    {**{i: f"C{i}" for i in range(1, 8)}, **{7 + i: f"T{i}" for i in range(1, 13)},
     **{19 + i: f"L{i}" for i in range(1, 7)}}))

# TotalSegmentator v2 "total" task: 25 sacrum, 26 S1, 27 L5 ... 31 L1, 32 T12 ... 43 T1, 44 C7 ... 50 C1.
_TOTALSEG_SPINE = {25: "sacrum", 26: "sacrum", **{32 - i: f"L{i}" for i in range(1, 6)},
                   **{44 - i: f"T{i}" for i in range(1, 13)}, **{51 - i: f"C{i}" for i in range(1, 8)}}
TOTALSEG_V2 = LabelMapping(
    "TotalSegmentator v2", _by_name(_TOTALSEG_SPINE),
    {v: "TotalSegmentator v2 structure other than the spine" for v in range(1, 118) if v not in _TOTALSEG_SPINE})

# Per-structure mask files (stems) of TotalSegmentator v1 and v2.
TOTALSEG_NAMES: dict[str, str] = {
    **{f"vertebrae_C{i}": f"C{i}" for i in range(1, 8)}, **{f"vertebrae_T{i}": f"T{i}" for i in range(1, 13)},
    **{f"vertebrae_L{i}": f"L{i}" for i in range(1, 6)}, "vertebrae_S1": "sacrum", "sacrum": "sacrum",
}


def mapping_from_json(path: str | Path) -> LabelMapping:
    """A mapping from a JSON file, in either form (targets are label-table names or values; null = background)::

        {"labels": {"1": "L1", "2": 21, "9": null}, "ignore": [40, 41]}      source value -> target
        {"labels": {"background": 0, "L1": 1, "L2": 2}}                       nnU-Net style: name -> source value
    """
    path = Path(path)
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ValueError(f"cannot read the label mapping {path}: {error}") from error
    labels = document.get("labels", document) if isinstance(document, dict) else None
    if not isinstance(labels, dict) or not labels:
        raise ValueError(f"{path}: a label mapping is a JSON object {{\"labels\": {{...}}}}")
    table = load_label_table()

    def target(value, key) -> int:
        if value is None:
            return 0
        if isinstance(value, str):
            if value.lower() == "background":
                return 0
            try:
                return table.by_name(value).value
            except KeyError as error:
                raise ValueError(f"{path}: {key!r} maps to {value!r}, {error.args[0]}") from None
        if isinstance(value, int) and (value == 0 or table.has_value(value)):
            return value
        raise ValueError(f"{path}: {key!r} maps to {value!r}, which is not a label-table value or name")

    if all(_is_int(k) for k in labels):  # source value -> target
        to_value = {int(k): target(v, k) for k, v in labels.items()}
    else:  # nnU-Net: name -> source value
        to_value = {}
        for name, value in labels.items():
            if not _is_int(value):
                raise ValueError(f"{path}: {name!r} must map to an integer source value, got {value!r}")
            to_value[int(value)] = target(name, name)
    to_value.pop(0, None)
    ignored = {int(v): "ignored by the mapping file" for v in document.get("ignore", [])} \
        if isinstance(document, dict) else {}
    return LabelMapping(document.get("name", path.stem) if isinstance(document, dict) else path.stem,
                        to_value, ignored)


def _is_int(value) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return isinstance(value, str) and value.strip().lstrip("-").isdigit()
