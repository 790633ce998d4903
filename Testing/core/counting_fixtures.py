"""Shared by the counting tests: a perfect network's probabilities from a label map, and the names found top
down."""

import numpy as np
from scipy import ndimage

from SpineSegLib.labels import load_label_table

TABLE = load_label_table()
LUT = TABLE.value_to_class_lut()


def names_top_down(labels: np.ndarray) -> list[str]:
    values = [v for v in np.unique(labels) if v]
    heights = ndimage.center_of_mass(labels > 0, labels, values)
    return [TABLE.by_value(v).name for _, v in sorted(zip([-h[2] for h in heights], values, strict=True))]


def seamed_probabilities(labels: np.ndarray) -> np.ndarray:
    """One-hot probabilities of a label map, with the seam the trainer teaches where two vertebrae touch."""
    highest = ndimage.maximum_filter(labels, size=3)
    lowest = ndimage.minimum_filter(np.where(labels > 0, labels, 255), size=3)
    classes = np.where((labels > 0) & (highest != lowest), 0, LUT[labels])
    return (np.arange(TABLE.num_classes)[:, None, None, None] == classes[None]).astype(np.float32)
