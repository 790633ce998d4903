"""Phantom datasets: synthetic spine CTs written in the trainer's dataset format.

Training phantoms are generated directly at a stage's spacing (fine 1.5 mm, coarse 3 mm by default) so no
resampling is needed; seeds are recorded in the manifest so a dataset can be rebuilt exactly.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from SpineSegLib.phantom import GENERATOR_VERSION, PhantomConfig, generate_phantom

from .dataset import MANIFEST, Case, add_case, read_manifest

REGION_MIX = ("whole", "cervical", "thoracic", "lumbar", "thoracolumbar")


def phantom_config(seed: int, spacing: float, region: str | None = None,
                   shape: tuple[int, int, int] | None = None) -> PhantomConfig:
    """The phantom settings used for a training or evaluation seed (regions, variants, lesions vary by seed).

    ``shape`` (voxels) fixes the field of view (centred on the region); None keeps the region plus margins.
    """
    rng = np.random.default_rng(seed + 7919)
    return PhantomConfig(
        seed=seed,
        region=region or str(rng.choice(REGION_MIX, p=[0.3, 0.15, 0.2, 0.15, 0.2])),
        shape=tuple(int(s) for s in shape) if shape is not None else None,
        spacing=(spacing, spacing, spacing),
        lesions=int(rng.integers(0, 5)),
        variant="random",
        metal=bool(rng.random() < 0.1),
    )


def make_phantom_dataset(root: str | Path, count: int, seed_start: int, spacing: float,
                         region: str | None = None, progress=None,
                         shape: tuple[int, int, int] | None = None, domain: str = "phantom") -> Path:
    """Generate ``count`` phantoms (seeds seed_start, seed_start+1, ...) into a dataset folder; resumable.

    ``domain`` is recorded in each manifest entry (the trainer's domain id for the domain loss).
    """
    root = Path(root)
    done = {e["id"] for e in read_manifest(root)["cases"]} if (root / MANIFEST).is_file() else set()
    for index in range(count):
        seed = seed_start + index
        case_id = f"phantom_{seed:06d}"
        if case_id not in done:
            config = phantom_config(seed, spacing, region, shape)
            phantom = generate_phantom(config)
            add_case(root, Case(case_id, phantom.ct, phantom.labels, phantom.lesions,
                                {"source": "phantom", "patient": case_id, "domain": domain,
                                 "phantom": {**config.to_dict(), "generator": GENERATOR_VERSION}}), name=root.name)
        if progress:
            progress((index + 1) / count, f"phantom {index + 1}/{count}")
    return root
