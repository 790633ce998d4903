"""Test-time adaptation protocol (``spineseg-train protocol tta``): the same model with no adaptation, AdaIN and
TENT on each test volume.

* **Instance normalisation** is already in the networks (MONAI UNet and the UNETR/Vertebraformer decoders use
  InstanceNorm): every feature map is normalised by its own mean and variance for each input window, so part of
  an intensity shift is absorbed with no adaptation. The ``none`` condition measures exactly that; the report
  lists the network's normalisation layers (:func:`norm_layers`).
* **AdaIN** (on the input): the CT is mapped linearly so that the mean and standard deviation of its body voxels
  (HU > -500) equal the training data's, ``hu' = (hu - μ) · σ_train / σ + μ_train`` (the whole volume, so
  structure and contrast ratios are kept). The training statistics come from the model card
  (``preprocessing.intensity_stats`` or ``training.intensity_stats``: ``{"mean", "std"}``), a JSON file, or a
  training dataset (:func:`intensity_statistics`); without them AdaIN is skipped and the report says so.
* **TENT** (Wang et al., 2021): on each test volume, a copy of the network minimises the mean voxel entropy of its
  segmentation softmax for a few steps (Adam) on random windows of the coarse-stage image, updating only the
  affine parameters of its normalisation layers (BatchNorm, InstanceNorm with affine, GroupNorm, LayerNorm), with
  batch norm on test-batch statistics; the copy then segments that volume and is dropped (episodic: every
  volume starts from the trained weights). MONAI's UNet builds InstanceNorm with ``affine=False``: such a network
  has no parameter TENT may update, so TENT is skipped with that reason in the report.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from SpineSegLib.checkpoint import LoadedModel, load_checkpoint
from SpineSegLib.inference import Segmenter, resolve_device
from SpineSegLib.preprocess import prepare
from SpineSegLib.volume import Volume

from .conditions import Condition, load_all, run_conditions
from .report import write_report

BODY_HU = -500.0
METHODS = ("none", "adain", "tent")
NORM_TYPES = (torch.nn.modules.batchnorm._BatchNorm, torch.nn.modules.instancenorm._InstanceNorm,
              torch.nn.GroupNorm, torch.nn.LayerNorm)


# --- normalisation layers --------------------------------------------------------------------------------------
def norm_layers(network: torch.nn.Module) -> dict:
    """``{"<type> (affine|no affine)": count}`` of the network's normalisation layers."""
    counts: dict[str, int] = {}
    for module in network.modules():
        if isinstance(module, NORM_TYPES):
            affine = any(p is not None for p in (getattr(module, "weight", None), getattr(module, "bias", None)))
            key = f"{type(module).__name__} ({'affine' if affine else 'no affine'})"
            counts[key] = counts.get(key, 0) + 1
    return counts


def affine_norm_parameters(network: torch.nn.Module) -> list[torch.nn.Parameter]:
    params = []
    for module in network.modules():
        if isinstance(module, NORM_TYPES):
            params += [p for p in (getattr(module, "weight", None), getattr(module, "bias", None))
                       if isinstance(p, torch.nn.Parameter)]
    return params


# --- AdaIN -----------------------------------------------------------------------------------------------------
def body_statistics(array: np.ndarray, body_hu: float = BODY_HU) -> tuple[float, float, int]:
    """``(sum, sum of squares, count)`` of the voxels above ``body_hu``."""
    values = np.asarray(array, dtype=np.float64)
    values = values[values > body_hu]
    return float(values.sum()), float(np.square(values).sum()), int(values.size)


def intensity_statistics(cases, body_hu: float = BODY_HU) -> dict:
    """Mean and standard deviation of the body voxels (HU > ``body_hu``) of a set of cases, pooled."""
    total = squares = count = 0.0
    for case in load_all(cases):
        s, q, n = body_statistics(case.ct.array, body_hu)
        total, squares, count = total + s, squares + q, count + n
    if count == 0:
        raise ValueError("no body voxels (HU > -500) in the cases: cannot compute intensity statistics")
    mean = total / count
    return {"mean": mean, "std": float(np.sqrt(max(squares / count - mean**2, 1e-6))), "voxels": int(count),
            "body_hu": body_hu}


def card_statistics(card: dict) -> dict | None:
    for section in ("preprocessing", "training"):
        stats = card.get(section, {}).get("intensity_stats")
        if isinstance(stats, dict) and "mean" in stats and "std" in stats:
            return stats
    return None


def read_statistics(path: str | Path) -> dict:
    stats = json.loads(Path(path).read_text())
    stats = stats.get("intensity_stats", stats)
    if not (isinstance(stats, dict) and "mean" in stats and "std" in stats):
        raise ValueError(f"{path}: intensity statistics are {{\"mean\": HU, \"std\": HU}}")
    return stats


def adain(ct: Volume, stats: dict, body_hu: float = BODY_HU) -> Volume:
    s, q, n = body_statistics(ct.array, body_hu)
    if n == 0:
        return Volume(np.asarray(ct.array, dtype=np.float32).copy(), ct.affine)
    mean = s / n
    std = float(np.sqrt(max(q / n - mean**2, 1e-6)))
    array = (np.asarray(ct.array, dtype=np.float32) - mean) * np.float32(float(stats["std"]) / std) + float(
        stats["mean"])
    return Volume(np.clip(array, -1024, 3071).astype(np.float32), ct.affine)


# --- TENT ------------------------------------------------------------------------------------------------------
def _windows(image: torch.Tensor, size: int, count: int, rng: np.random.Generator) -> torch.Tensor:
    """``count`` random windows (count, 1, size, size, size) of a (1, I, J, K) image, zero-padded if smaller."""
    pad = [max(0, size - s) for s in image.shape[1:]]
    if any(pad):
        image = F.pad(image, [0, pad[2], 0, pad[1], 0, pad[0]])
    out = []
    for _ in range(count):
        start = [int(rng.integers(0, s - size + 1)) for s in image.shape[1:]]
        out.append(image[:, start[0]:start[0] + size, start[1]:start[1] + size, start[2]:start[2] + size])
    return torch.stack(out)


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """Mean voxel entropy of the softmax over the class axis (dim 1)."""
    log_p = torch.log_softmax(logits.float(), dim=1)
    return -(log_p.exp() * log_p).sum(dim=1).mean()


def tent_adapt(model: LoadedModel, ct: Volume, steps: int = 3, lr: float = 1e-3, windows: int = 1, seed: int = 0,
               device: str | torch.device = "cpu") -> tuple[torch.nn.Module, list[float]]:
    """An adapted copy of ``model.network`` and the entropy before each step (see the module docstring)."""
    network = copy.deepcopy(model.network).to(device)
    params = affine_norm_parameters(network)
    if not params:
        raise ValueError("the network has no affine normalisation parameters to adapt")
    network.eval()
    for module in network.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.train()
            module.track_running_stats = False
            module.running_mean = module.running_var = None
    for p in network.parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    stage = model.card["preprocessing"]["stages"]["coarse"]
    window = tuple(model.card["preprocessing"].get("intensity_window", (-1000, 1000)))
    image = prepare(ct, stage["spacing"], window).image
    size = int(stage["patch_size"][0])
    optimizer = torch.optim.Adam(params, lr=lr)
    rng = np.random.default_rng(seed)
    losses = []
    for _ in range(steps):
        batch = _windows(image, size, windows, rng).to(device)
        loss = entropy(network(batch)["seg"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    for p in network.parameters():
        p.requires_grad_(False)
    return network, losses


# --- the protocol ----------------------------------------------------------------------------------------------
def tta(model: str | Path, cases, report_dir: str | Path, methods=METHODS, *, stats: dict | None = None,
        tent_steps: int = 3, tent_lr: float = 1e-3, tent_windows: int = 1, device: str = "auto", fast: bool = False,
        n_resamples: int = 10_000, seed: int = 0, surface: bool = True, data_description: str = "",
        log=print) -> dict:
    torch_device = resolve_device(device)
    loaded = load_checkpoint(model, torch_device)
    segmenter = Segmenter(loaded, device=device, fast=fast)
    norms = norm_layers(loaded.network)
    notes = [f"Normalisation layers: {', '.join(f'{k} × {v}' for k, v in norms.items()) or 'none'}. "
             "Instance normalisation already normalises each window's feature maps; the 'none' condition includes "
             "its effect."]
    stats = stats or card_statistics(loaded.card)
    conditions, tent_log = [], {}
    for method in methods:
        if method == "none":
            conditions.append(Condition("none", lambda case: segmenter(case.ct), "no adaptation"))
        elif method == "adain":
            if stats is None:
                notes.append("AdaIN skipped: no training intensity statistics (none in the model card; give --stats "
                             "FILE or --stats-from DATASET).")
                continue
            conditions.append(Condition("adain", lambda case: segmenter(adain(case.ct, stats)),
                                        f"body mean {stats['mean']:.1f} HU, std {stats['std']:.1f} HU"))
            notes.append(f"AdaIN target: body (HU > {BODY_HU:g}) mean {stats['mean']:.1f} HU, "
                         f"std {stats['std']:.1f} HU.")
        elif method == "tent":
            if not affine_norm_parameters(loaded.network):
                notes.append(f"TENT skipped: {loaded.card['architecture']['id']} has no affine normalisation "
                             "parameters (MONAI UNet builds InstanceNorm with affine=False), so there is nothing "
                             "TENT may update.")
                continue

            def run_tent(case):
                network, losses = tent_adapt(loaded, case.ct, tent_steps, tent_lr, tent_windows, seed, torch_device)
                tent_log[case.case_id] = losses
                adapted = LoadedModel(network, loaded.card, loaded.path)
                return Segmenter(adapted, device=device, fast=fast)(case.ct)

            conditions.append(Condition("tent", run_tent, f"{tent_steps} steps, Adam lr {tent_lr:g}"))
            notes.append(f"TENT: {tent_steps} Adam steps (lr {tent_lr:g}) of {tent_windows} window(s) per volume on "
                         f"{len(affine_norm_parameters(loaded.network))} normalisation parameter tensors; episodic.")
        else:
            raise ValueError(f"unknown TTA method {method!r}; choose from {', '.join(METHODS)}")
    if not conditions:
        raise ValueError("no TTA method can run: " + " ".join(notes[1:]))
    results = run_conditions(conditions, cases, surface, log)
    reference = "none" if "none" in results else None
    return write_report(report_dir, f"Test-time adaptation of {loaded.name}", results, reference=reference,
                        n_resamples=n_resamples, seed=seed, column="method", what="method",
                        settings={"model": str(model), "data": data_description, "methods": list(methods),
                                  "mode": "fast" if fast else "full"},
                        notes=notes, extra={"norm_layers": norms, "tent_entropy": tent_log, "intensity_stats": stats})
