"""The vertebra size profile of a model's training data, written into its card (``postprocessing.level_sizes``).

The segmenter uses it when it counts vertebrae (``SpineSegLib.level_sizes``); it is measured on the labels the
network learned from, so a model trained on other data carries its own profile.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np

from SpineSegLib.checkpoint import CARD_FILE
from SpineSegLib.io import write_json
from SpineSegLib.labels import load_label_table
from SpineSegLib.level_sizes import LevelSizes, fit_level_sizes, whole_vertebra_volumes

from .dataset import read_manifest


def dataset_volumes(root: str | Path) -> list[dict[str, float]]:
    """:func:`whole_vertebra_volumes` of every case of a dataset (labels only: the CTs are not read)."""
    root = Path(root)
    volumes = []
    for entry in read_manifest(root)["cases"]:
        image = nib.load(str(root / entry["labels"]))
        labels = np.asarray(image.dataobj).astype(np.uint8)
        volumes.append(whole_vertebra_volumes(labels, abs(float(np.linalg.det(image.affine[:3, :3])))))
    return volumes


def level_sizes_of(datasets: list[str | Path]) -> dict:
    """The card's ``level_sizes`` document fitted on the datasets' labels (and naming them)."""
    profile = fit_level_sizes([case for root in datasets for case in dataset_volumes(root)])
    profile["data"] = [str(root) for root in datasets]
    LevelSizes.from_card(profile, load_label_table())
    return profile


def record_level_sizes(model: str | Path, datasets: list[str | Path]) -> dict:
    """Fit the profile on the datasets' labels and write it into the model's card; returns it. Only a model
    that numbers by counting (``numbering: regions``) uses it; ``train --export`` writes it for such a model
    from its own training data."""
    card_path = Path(model) / CARD_FILE
    card = json.loads(card_path.read_text())
    if (card.get("postprocessing") or {}).get("numbering") != "regions":
        raise ValueError(f"{model}: level sizes weigh in when the segmenter counts vertebrae; this model's card "
                         "does not say postprocessing.numbering: regions")
    profile = level_sizes_of(datasets)
    card["postprocessing"]["level_sizes"] = profile
    write_json(card_path, card)
    return profile
