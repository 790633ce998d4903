"""Tiny fixtures of the dataset, curation and protocol tests: lumbar phantoms (48×48×64 voxels at 3 mm),
phantom "domains" (scanners simulated by intensity scaling, noise and slice thickness) and random-weight
checkpoints."""

from __future__ import annotations

from pathlib import Path

import numpy as np

PHANTOM = {"region": "lumbar", "shape": (48, 48, 64), "spacing": (3.0, 3.0, 3.0)}
# domain -> how its "scanner" changes a phantom CT
DOMAINS = {
    "siteA": [],
    "siteB": [("hu_scale", 1.15), ("noise", 30.0)],
    "siteC": [("thick", 6.0), ("noise", 15.0)],
}
TINY_UNET = {"channels": [4, 8, 16], "num_res_units": 0}


def phantom(seed: int, lesions: int = 1, **settings):
    from SpineSegLib.phantom import PhantomConfig, generate_phantom

    return generate_phantom(PhantomConfig(seed=seed, lesions=lesions, **{**PHANTOM, **settings}))


def scanner(ct, domain: str, seed: int):
    from spineseg_train.protocols import perturbations

    for kind, value in DOMAINS[domain]:
        if kind == "hu_scale":
            ct = perturbations.hu_scale(ct, value)
        elif kind == "noise":
            ct = perturbations.noise(ct, value, seed)
        elif kind == "thick":
            ct = perturbations.thick_slices(ct, value)
    return ct


def domain_dataset(root: Path, per_domain: int = 2, seed_start: int = 500, domains=tuple(DOMAINS)) -> Path:
    """``per_domain`` phantoms per domain, every other one with lesions, in SpineSeg's format."""
    from spineseg_train.dataset import Case, add_case

    seed = seed_start
    for domain in domains:
        for index in range(per_domain):
            p = phantom(seed, lesions=2 if index % 2 == 0 else 0)
            ct = scanner(p.ct, domain, seed)
            add_case(root, Case(f"{domain}_{seed}", ct, p.labels, p.lesions,
                                {"source": "phantom", "patient": f"patient_{seed}", "domain": domain}))
            seed += 1
    return root


def card(architecture: str = "unet3d", args: dict | None = None, patch: int = 32, coarse: float = 4.0,
         **extra) -> dict:
    return {"name": f"tiny-{architecture}", "architecture": {"id": architecture, "args": args or TINY_UNET},
            "preprocessing": {"intensity_window": [-1000, 1000],
                              "stages": {"coarse": {"spacing": [coarse] * 3, "patch_size": [patch] * 3},
                                         "fine": {"spacing": [3.0] * 3, "patch_size": [patch] * 3}}},
            **extra}


def tiny_checkpoint(path: Path, seed: int = 0, name: str | None = None) -> Path:
    import torch

    from SpineSegLib.checkpoint import save_checkpoint
    from SpineSegLib.labels import load_label_table
    from SpineSegLib.networks import build_network

    table = load_label_table()
    torch.manual_seed(seed)
    network = build_network("unet3d", 1, table.num_classes, len(table.lesion_classes), **TINY_UNET)
    document = card()
    if name:
        document["name"] = name
    return save_checkpoint(network, document, path)


def tiny_vertebraformer(path: Path, domains: list[str], seed: int = 0) -> Path:
    import torch
    from tiny_training import TINY_ARCHS

    from SpineSegLib.checkpoint import save_checkpoint
    from SpineSegLib.labels import load_label_table
    from SpineSegLib.networks import build_network

    table = load_label_table()
    torch.manual_seed(seed)
    args = dict(TINY_ARCHS["vertebraformer"])
    network = build_network("vertebraformer", 1, table.num_classes, len(table.lesion_classes), **args)
    return save_checkpoint(network, card("vertebraformer", args, training={"domains": list(domains)}), path)


def label_array(values_from: np.ndarray, lut: dict[int, int]) -> np.ndarray:
    """Relabel an array with a {our value: their value} table (others to 0)."""
    out = np.zeros(values_from.shape, dtype=np.uint8)
    for ours, theirs in lut.items():
        out[values_from == ours] = theirs
    return out
