"""Fitting a model's surface refinement on tuning cases (``spineseg-train fit-surface``).

The segmenter runs with the refinement off and hands back what the refinement would see
(``SegmentationResult.surface_inputs``); every case gives the voxels of the band around the network's surface,
their features (``SpineSegLib.surface_refinement.FEATURES``) and whether the reference calls them bone. A one-layer
perceptron is fitted to them by cross-entropy (Adam, a fixed seed: the same cases give the same weights). The
last ``HELD_OUT`` of the cases are kept out of the fit and report how often the band is classified right before
and after. Fit on tuning cases, never on the ones the card's metrics are measured on.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from SpineSegLib.checkpoint import CARD_FILE
from SpineSegLib.inference import Segmenter
from SpineSegLib.io import write_json
from SpineSegLib.preprocess import Orientation
from SpineSegLib.results import SurfaceInputs
from SpineSegLib.surface_refinement import SurfaceRefinement, band_features, work_box

from .dataset import load_dataset
from .evaluate import phantom_cases
from .lesion_calibration import TUNING_SEED_START

BAND_MM = 2.5
HIDDEN_UNITS = 16
MAX_SAMPLES_PER_CASE = 200_000  # a whole-spine view has about 10^6 band voxels; a sample of them is plenty
HELD_OUT = 0.25  # share of the cases kept out of the fit to report on
EPOCHS = 4
BATCH = 8192


def band_samples(inputs: SurfaceInputs, reference: np.ndarray, band_mm: float = BAND_MM,
                 max_samples: int = MAX_SAMPLES_PER_CASE, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """One case's band voxels: features (N, F) and whether the reference (canonical, like the inputs) is bone."""
    spacing = inputs.ct.spacing
    box = work_box(inputs.foreground >= 0.5, spacing)
    if box is None:
        return np.zeros((0, 0), dtype=np.float32), np.zeros(0, dtype=bool)
    band, features = band_features(inputs.ct.array[box], inputs.foreground[box], spacing, band_mm)
    bone = (reference[box] > 0)[band]
    if len(bone) > max_samples:
        keep = np.sort(np.random.default_rng(seed).choice(len(bone), max_samples, replace=False))
        features, bone = features[keep], bone[keep]
    return features, bone


def fit_refinement(features: np.ndarray, bone: np.ndarray, stage: str, band_mm: float = BAND_MM,
                   hidden: int = HIDDEN_UNITS, epochs: int = EPOCHS, seed: int = 0) -> SurfaceRefinement:
    """The perceptron that tells the band's bone from the rest, as a :class:`SurfaceRefinement`."""
    if len(bone) == 0 or bone.all() or not bone.any():
        raise ValueError("the band holds no voxels, or only bone or only background: nothing to learn from")
    mean, sd = features.mean(axis=0), features.std(axis=0) + 1e-6
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    x = torch.from_numpy((features - mean) / sd).float()
    y = torch.from_numpy(bone.astype(np.float32))
    network = torch.nn.Sequential(torch.nn.Linear(x.shape[1], hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, 1))
    optimiser = torch.optim.Adam(network.parameters(), lr=1e-2)
    for _ in range(epochs):
        for batch in torch.randperm(len(x), generator=generator).split(BATCH):
            loss = torch.nn.functional.binary_cross_entropy_with_logits(network(x[batch])[:, 0], y[batch])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    first, last = network[0], network[2]
    return SurfaceRefinement(stage, band_mm, mean.astype(np.float64), sd.astype(np.float64),
                             first.weight.detach().double().numpy(), first.bias.detach().double().numpy(),
                             last.weight.detach().double().numpy()[0], float(last.bias.detach()))


def band_accuracy(refinement: SurfaceRefinement | None, features: np.ndarray, bone: np.ndarray) -> float:
    """How often the band's voxels are classified right: by the refinement, or (None) by the network alone."""
    if len(bone) == 0:
        return float("nan")
    called = refinement.logits(features) > 0 if refinement else features[:, 0] > 0  # feature 0: the network's logit
    return float(np.mean(called == bone))


def fit_surface(model, count: int = 16, seed_start: int = TUNING_SEED_START, data: str | None = None,
                device: str = "auto", fast: bool = False, hidden: int = HIDDEN_UNITS, update_card: bool = False,
                log=print) -> dict:
    """Run the model on the cases, fit the refinement of the pass that makes its labels in this mode and
    (``update_card``) write it into its card, beside the other pass's if there is one."""
    segmenter = Segmenter(model, device=device, fast=fast, refine_surfaces=False)
    cases = list(load_dataset(data) if data else phantom_cases(count, seed_start))
    if len(cases) < 2:
        raise ValueError("fitting needs at least two cases (one is kept out to report on)")
    samples, stage = [], None
    for index, case in enumerate(cases):
        inputs = segmenter(case.ct).surface_inputs
        if inputs is None:
            log(f"{case.case_id}: no vertebra found, nothing to learn from")
            continue
        stage = inputs.stage
        reference = Orientation.of(case.ct).to_canonical(np.asarray(case.labels.array))
        samples.append(band_samples(inputs, reference, seed=index))
        log(f"{case.case_id}: {len(samples[-1][1])} band voxels sampled ({stage} pass)")
    if len(samples) < 2:
        raise ValueError(f"the model found vertebrae in {len(samples)} of {len(cases)} cases: too few to fit on "
                         "and report on")
    held_out = max(1, round(HELD_OUT * len(samples)))
    fitted = [s for s in samples[:-held_out] if len(s[1])]
    kept_out = [s for s in samples[-held_out:] if len(s[1])]
    refinement = fit_refinement(np.concatenate([f for f, _ in fitted]), np.concatenate([b for _, b in fitted]),
                                stage, hidden=hidden)
    report = {
        "cases": len(cases), "fitted_cases": len(samples) - held_out, "held_out_cases": held_out,
        "samples": int(sum(len(b) for _, b in fitted)),
        "held_out_band_accuracy_network": round(np.mean([band_accuracy(None, *s) for s in kept_out]), 4),
        "held_out_band_accuracy_refined": round(np.mean([band_accuracy(refinement, *s) for s in kept_out]), 4),
        "data": data or f"{count} phantoms, seeds {seed_start}-{seed_start + count - 1}",
    }
    document = {**refinement.to_card(), "fitted_on": report}
    if update_card:
        card_path = Path(model) / CARD_FILE
        card = json.loads(card_path.read_text())
        card.setdefault("postprocessing", {}).setdefault("surface_refinement", {})[stage] = document
        write_json(card_path, card)
    return document
