"""The label table: label values (VerSe numbering), names, colours and SNOMED-CT terminology.

``Resources/labels.json`` is the single source of truth; everything else (networks' class order, Slicer
segments, colour tables, reports) reads it through :func:`load_label_table`.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from .resources import resources_dir


@dataclass(frozen=True)
class Label:
    value: int
    name: str
    region: str  # cervical | thoracic | lumbar | sacral
    color: tuple[int, int, int]  # 0-255 RGB
    variant: bool  # T13 / L6 transitional variants
    snomed_code: str
    snomed_meaning: str

    @property
    def color_float(self) -> tuple[float, float, float]:
        return tuple(c / 255.0 for c in self.color)


@dataclass(frozen=True)
class LesionClass:
    name: str
    description: str
    color: tuple[int, int, int]


class LabelTable:
    """Ordered cranio-caudally. Network class index i+1 is ``labels[i]``; class 0 is background."""

    def __init__(self, document: dict):
        self.document = document
        self.labels: tuple[Label, ...] = tuple(
            Label(
                value=int(d["value"]),
                name=d["name"],
                region=d["region"],
                color=tuple(d["color"]),
                variant=bool(d.get("variant", False)),
                snomed_code=d["snomed"]["code"],
                snomed_meaning=d["snomed"]["meaning"],
            )
            for d in document["labels"]
        )
        self.lesion_classes: tuple[LesionClass, ...] = tuple(
            LesionClass(d["name"], d["description"], tuple(d["color"])) for d in document["lesion_classes"]
        )
        self.terminology = document["terminology"]
        self._by_value = {lab.value: lab for lab in self.labels}
        self._by_name = {lab.name.lower(): lab for lab in self.labels}
        if len(self._by_value) != len(self.labels) or len(self._by_name) != len(self.labels):
            raise ValueError("label table has duplicate values or names")
        if 0 in self._by_value:
            raise ValueError("label value 0 is reserved for background")

    # --- look-ups -------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.labels)

    def __iter__(self):
        return iter(self.labels)

    @property
    def values(self) -> list[int]:
        return [lab.value for lab in self.labels]

    @property
    def names(self) -> list[str]:
        return [lab.name for lab in self.labels]

    @property
    def num_classes(self) -> int:
        """Network output classes: background plus one per label."""
        return len(self.labels) + 1

    @property
    def lesion_class_names(self) -> list[str]:
        return [c.name for c in self.lesion_classes]

    def by_value(self, value: int) -> Label:
        try:
            return self._by_value[int(value)]
        except KeyError:
            raise KeyError(f"label value {value} is not in the label table") from None

    def by_name(self, name: str) -> Label:
        try:
            return self._by_name[name.lower()]
        except KeyError:
            raise KeyError(f"vertebra {name!r} is not in the label table ({', '.join(self.names)})") from None

    def has_value(self, value: int) -> bool:
        return int(value) in self._by_value

    def order(self, value: int) -> int:
        """Cranio-caudal rank of a label (0 = C1)."""
        return self.labels.index(self.by_value(value))

    def class_to_value_lut(self):
        """numpy array mapping network class index -> label value (index 0 -> 0)."""
        import numpy as np

        return np.array([0] + self.values, dtype=np.uint8)

    @property
    def regions(self) -> list[str]:
        """The regions of the column in cranio-caudal order (cervical, thoracic, lumbar, sacral)."""
        return list(dict.fromkeys(lab.region for lab in self.labels))

    def class_to_region_lut(self):
        """numpy array mapping network class index -> region index + 1 (index 0, background -> 0)."""
        import numpy as np

        regions = self.regions
        return np.array([0] + [regions.index(lab.region) + 1 for lab in self.labels], dtype=np.int64)

    def value_to_class_lut(self):
        """numpy array mapping label value (0..255) -> network class index; unknown values map to 0."""
        import numpy as np

        lut = np.zeros(256, dtype=np.int64)
        for index, lab in enumerate(self.labels, start=1):
            lut[lab.value] = index
        return lut

    def terminology_entry(self, value: int) -> str:
        """Slicer terminology string for a segment (category and type from SNOMED-CT)."""
        lab = self.by_value(value)
        t = self.terminology
        cat = t["category"]
        return (
            f"{t['context']}~{cat['scheme']}^{cat['code']}^{cat['meaning']}"
            f"~SCT^{lab.snomed_code}^{lab.snomed_meaning}~^^~{t['anatomic_context']}~^^~^^"
        )

    def fingerprint(self) -> str:
        """Hash of what a trained network depends on: values, names and their order."""
        key = json.dumps([[lab.value, lab.name] for lab in self.labels] + self.lesion_class_names)
        return hashlib.sha256(key.encode()).hexdigest()[:16]

    def to_dict(self) -> dict:
        return self.document


@functools.cache
def _load(path: str) -> LabelTable:
    with open(path, encoding="utf-8") as f:
        return LabelTable(json.load(f))


def load_label_table(path: str | Path | None = None) -> LabelTable:
    """The label table from ``Resources/labels.json`` (or another file)."""
    return _load(str(Path(path) if path else resources_dir() / "labels.json"))
