"""Reading public spine CT datasets and SpineSeg's own format onto the one label table.

* :mod:`.layouts` — detection and :func:`open_dataset` (``spineseg``, ``verse``, ``ctspine1k``,
  ``totalsegmentator``, ``generic``), each a reader module of its own;
* :mod:`.mapping` — label mappings (VerSe, CTSpine1K, TotalSegmentator names and v2 numbering, JSON);
* :mod:`.lesions` — the lesion JSON schema and fracture grades → fracture lesions;
* :mod:`.convert` — any layout → the dataset format (``spineseg-train convert``);
* :mod:`.splits` — reading the curated splits.

docs/data-contract.md documents the format and every layout's mapping.
"""

from .base import ReadOptions, SourceCase
from .convert import convert_dataset
from .layouts import LAYOUTS, detect_layout, open_dataset
from .mapping import (
    CTSPINE1K,
    TOTALSEG_NAMES,
    TOTALSEG_V2,
    VERSE,
    LabelMapping,
    UnknownLabelsError,
    mapping_from_json,
)
from .splits import read_splits, split_ids

__all__ = ["CTSPINE1K", "LAYOUTS", "TOTALSEG_NAMES", "TOTALSEG_V2", "VERSE", "LabelMapping", "ReadOptions",
           "SourceCase", "UnknownLabelsError", "convert_dataset", "detect_layout", "mapping_from_json",
           "open_dataset", "read_splits", "split_ids"]
