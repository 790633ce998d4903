"""How well counting from regions (model card ``numbering: regions``) can name vertebrae: the score a perfect
network would reach, i.e. the phantoms' own labels turned into region probabilities with the seams the trainer
teaches (``border_voxels``), then counted by the segmenter's post-processing (with the phantom CT's bone: the
ribs weigh in).

    python benchmarks/counting_ceiling.py [--count 10] [--seed-start 900000] [--spacing 1.5]

Prints mean vertebra Dice and identification (VerSe 20 mm rule) per evaluation phantom and overall.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from spineseg_train.evaluate import EVALUATION_SEED_START
from spineseg_train.losses import touching_borders
from spineseg_train.metrics import identification_metrics, per_vertebra_dice
from spineseg_train.phantoms import phantom_config
from SpineSegLib.labels import load_label_table
from SpineSegLib.phantom import generate_phantom
from SpineSegLib.region_numbering import label_by_regions
from SpineSegLib.rib_evidence import BONE_HU


def perfect_probabilities(labels: np.ndarray, border_voxels: int = 1) -> np.ndarray:
    table = load_label_table()
    classes = table.value_to_class_lut()[labels]
    seams = touching_borders(torch.from_numpy(classes)[None], border_voxels)[0].numpy()
    classes = np.where(seams, 0, classes)
    return (np.arange(table.num_classes)[:, None, None, None] == classes[None]).astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=10)
    parser.add_argument("--seed-start", type=int, default=EVALUATION_SEED_START)
    parser.add_argument("--spacing", type=float, default=1.5, help="mm (the fine pass's spacing)")
    args = parser.parse_args()
    dice_means, id_rates = [], []
    for seed in range(args.seed_start, args.seed_start + args.count):
        phantom = generate_phantom(phantom_config(seed, args.spacing))
        reference, affine = phantom.labels.array, phantom.labels.affine
        started = time.perf_counter()
        labels = label_by_regions(perfect_probabilities(reference), affine, bone=phantom.ct.array > BONE_HU)
        seconds = time.perf_counter() - started
        dice = per_vertebra_dice(labels, reference, [v for v in np.unique(reference) if v])
        identified = identification_metrics(labels, reference, affine)["id_rate"]
        dice_means.append(float(np.mean(list(dice.values()))))
        id_rates.append(identified)
        print(f"phantom {seed} ({phantom.config.region}, variant {phantom.config.variant}): mean Dice "
              f"{dice_means[-1]:.3f}, identification {100 * identified:.1f} %, counting {seconds:.1f} s")
    print(f"{args.count} phantoms: mean vertebra Dice {np.mean(dice_means):.3f}, "
          f"identification {100 * np.mean(id_rates):.1f} %")


if __name__ == "__main__":
    main()
