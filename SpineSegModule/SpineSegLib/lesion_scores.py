"""Calibrated lesion scores: from a heatmap peak to the chance that a lesion is there.

A heatmap peak's height means different things for different classes: on the tuning phantoms a fracture peak of
0.3 is mostly a normal vertebra the network took for a compressed one, a sclerotic peak of 0.3 mostly a real
metastasis. Ranked on raw peaks, one lesion list mixes the two scales and its false positives come from the class
that over-calls. A model card may carry a calibration per class, fitted on held-out cases
(``spineseg-train calibrate-lesions``): the chance that a detection hits a lesion is modelled as
``σ(slope · logit(peak) + intercept)``. The segmenter then ranks and thresholds every class on that one scale.

Card document (``postprocessing.lesion_calibration``), one entry per pass whose heatmap it was fitted on (the
full run lists the fine pass's lesions, fast mode the coarse pass's)::

    {"fine": {"candidate_threshold": 0.05,   # peaks lower than this were never looked at
              "threshold": 0.11,             # calibrated score a detection needs to be listed
              "classes": {"fracture": [slope, intercept], "lytic": [...], "sclerotic": [...]},
              "size_scale": {"fracture": 1.1, "lytic": 2.3, "sclerotic": 2.2},   # optional
              "fitted_on": {...}}}           # provenance, kept as written

Sizes are calibrated the same way. The network draws its heatmap peaks narrower than the lesions it was taught
them on, so a metastasis's size (the peak's width) is scaled by the median ratio of the true size to it on the
tuning cases; a fracture's size (its vertebra's, see ``postprocess.detect_lesions``) likewise.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from scipy import special

from .labels import LabelTable

STAGES = ("fine", "coarse")


@dataclass(frozen=True)
class LesionCalibration:
    stage: str
    candidate_threshold: float
    threshold: float
    classes: Mapping[str, tuple[float, float]]  # class name -> (slope, intercept)
    size_scale: Mapping[str, float] = field(default_factory=dict)  # class name -> factor (1 where absent)

    @classmethod
    def from_card(cls, stage: str, document: Mapping, table: LabelTable) -> LesionCalibration:
        """One pass's entry, checked against the label table's lesion classes; ValueError says what does not fit."""
        thresholds = {key: document.get(key) for key in ("candidate_threshold", "threshold")}
        for key, value in thresholds.items():
            if not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise ValueError(f"{key} must be a number in [0, 1], not {value!r}")
        classes = document.get("classes") or {}
        expected = list(table.lesion_class_names)
        if sorted(classes) != sorted(expected):
            raise ValueError(f"classes {sorted(classes)} do not match the label table's lesion classes {expected}")
        for name, pair in classes.items():
            if (not isinstance(pair, (list, tuple)) or len(pair) != 2
                    or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in pair)):
                raise ValueError(f"classes.{name} must be [slope, intercept], two finite numbers, not {pair!r}")
            if pair[0] <= 0:
                raise ValueError(f"classes.{name}: the slope must be positive (a higher peak never means a lower "
                                 f"chance), not {pair[0]}")
        size_scale = document.get("size_scale") or {}
        for name, factor in size_scale.items():
            if name not in expected:
                raise ValueError(f"size_scale names {name!r}, not a lesion class of the label table")
            if not isinstance(factor, (int, float)) or not math.isfinite(factor) or factor <= 0:
                raise ValueError(f"size_scale.{name} must be a positive number, not {factor!r}")
        return cls(stage, float(thresholds["candidate_threshold"]), float(thresholds["threshold"]),
                   {name: (float(a), float(b)) for name, (a, b) in classes.items()},
                   {name: float(factor) for name, factor in size_scale.items()})

    def to_card(self) -> dict:
        return {"candidate_threshold": self.candidate_threshold, "threshold": self.threshold,
                "classes": {name: [round(a, 4), round(b, 4)] for name, (a, b) in self.classes.items()},
                "size_scale": {name: round(factor, 3) for name, factor in self.size_scale.items()}}

    def score(self, lesion_class: str, peak: float) -> float:
        """The calibrated chance that a detection of this class and peak height hits a lesion."""
        slope, intercept = self.classes[lesion_class]
        return float(special.expit(slope * logit(peak) + intercept))

    def size_mm(self, lesion_class: str, measured_mm: float) -> float:
        return measured_mm * self.size_scale.get(lesion_class, 1.0)


def calibrations_from_card(document: Mapping, table: LabelTable) -> dict[str, LesionCalibration]:
    """The card's calibrations by pass; ValueError names the pass and what does not fit."""
    calibrations = {}
    for stage, entry in document.items():
        if stage not in STAGES:
            raise ValueError(f"{stage!r} is not a pass ({', '.join(STAGES)})")
        try:
            calibrations[stage] = LesionCalibration.from_card(stage, entry, table)
        except (ValueError, TypeError, AttributeError) as error:
            raise ValueError(f"{stage}: {error}") from None
    return calibrations


def logit(p: float, eps: float = 1e-4) -> float:
    """log(p / (1 - p)), finite: a peak of 0 or 1 is taken as ``eps`` from it."""
    return float(special.logit(min(max(float(p), eps), 1.0 - eps)))
