"""Validation during training (early stopping on validation Dice).

Two modes (``val_mode``):

- ``engine`` (default): the network, as it stands, runs in the inference engine
  (:class:`SpineSegLib.inference.Segmenter`) on the first ``val_cases`` cases of ``val_data`` — the coarse pass
  only with ``val_fast`` (the default), both passes without. The score is the mean per-vertebra Dice of the
  engine's labelmap on the input grid, i.e. what a user would get, post-processing included. Cost: one engine
  run per case (seconds per case in fast mode on a CPU with the default model size; the full mode is several
  times that).
- ``patch``: ``val_patches`` patches drawn once (fixed seed, no augmentation, same sampling as training) from
  ``val_data`` at ``val_spacing`` (default: the first training spacing); the score is the mean Dice over the
  vertebra classes present, of the argmax of the network's ``"seg"`` output, pooled over the patches. Cheap and
  deterministic, but it sees neither the sliding window, the coarse-to-fine crop nor post-processing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from SpineSegLib.checkpoint import LoadedModel
from SpineSegLib.inference import Segmenter
from SpineSegLib.labels import load_label_table

from .dataset import Case
from .metrics import identification_metrics, per_vertebra_dice, segmentation_scores
from .sampling import PatchSampler, StageCase


class PatchValidator:
    def __init__(self, cases: list[StageCase], patch: int, count: int, seed: int = 0, lesion_fraction: float = 0.2,
                 foreground_fraction: float = 0.3, batch_size: int = 2):
        sampler = PatchSampler(cases, patch, np.random.default_rng(seed + 1_000_003), augment=False,
                               lesion_fraction=lesion_fraction, foreground_fraction=foreground_fraction)
        samples = [sampler.sample() for _ in range(count)]
        self.count = count
        self.batches = [torch.stack([s["image"] for s in samples[i:i + batch_size]])
                        for i in range(0, count, batch_size)]
        self.reference = np.concatenate([s["seg"].numpy()[0].ravel() for s in samples])

    def __call__(self, network: torch.nn.Module, device: torch.device, amp: bool = False) -> dict:
        predictions = []
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.float16, enabled=amp):
            for batch in self.batches:
                out = network(batch.to(device))
                predictions.append(out["seg"].float().argmax(1).cpu().numpy().reshape(len(batch), -1))
        pred = np.concatenate([p.ravel() for p in predictions])
        scores = segmentation_scores(pred, self.reference)
        return {"dice": float(scores["mDice"]), "iou": float(scores["mIoU"]), "patches": self.count}


class EngineValidator:
    def __init__(self, cases: list[Case], fast: bool = True):
        self.cases, self.fast = cases, fast

    def __call__(self, network: torch.nn.Module, card: dict, device: torch.device, out_dir: Path) -> dict:
        table = load_label_table()
        segmenter = Segmenter(LoadedModel(network, card, Path(out_dir)), device=device.type, fast=self.fast)
        dice_all, identified, references = [], 0, 0
        for case in self.cases:
            result = segmenter(case.ct)
            dice = per_vertebra_dice(result.labels.array, case.labels.array, table.values)
            dice_all += list(dice.values())
            ident = identification_metrics(result.labels.array, case.labels.array, case.ct.affine,
                                           label_values=table.values)
            identified += ident["identification"].n_identified
            references += ident["identification"].n_reference
        return {"dice": float(np.mean(dice_all)) if dice_all else 0.0,
                "id_rate": identified / references if references else float("nan"), "cases": len(self.cases)}
