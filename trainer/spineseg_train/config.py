"""Training configuration: one dataclass, loadable from YAML, overridable from the command line."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import yaml


@dataclass
class StageData:
    """A dataset used at one stage's spacing; ``weight`` is how often its patches are drawn."""

    path: str
    spacing: float
    weight: float = 1.0
    crop_margin_mm: float | None = None  # cut in-plane to the spine plus this margin (the fine pass's view)


@dataclass
class TrainConfig:
    name: str = "spineseg-model"
    architecture: str = "unet3d"
    architecture_args: dict = field(default_factory=lambda: {"channels": [16, 32, 64, 128, 192]})
    data: list[StageData] = field(default_factory=list)
    val_data: str | None = None
    coarse_spacing: float = 3.0
    fine_spacing: float = 1.5
    patch_size: int = 64
    inference_patch_size: int = 96
    intensity_window: tuple[float, float] = (-1000.0, 1000.0)
    batch_size: int = 2
    steps: int = 1000
    lr: float = 2e-3
    weight_decay: float = 1e-5
    warmup_steps: int = 50
    grad_clip: float = 1.0
    dice_weight: float = 1.0  # λ in CE + λ·Dice
    lesion_weight: float = 1.0
    checkpoint_every: int = 100
    seed: int = 0
    threads: int = 0  # 0 = torch default
    device: str = "auto"
    amp: bool = True  # mixed precision on CUDA

    @classmethod
    def from_yaml(cls, path: str | Path) -> TrainConfig:
        document = yaml.safe_load(Path(path).read_text()) or {}
        return cls.from_dict(document)

    @classmethod
    def from_dict(cls, document: dict) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(document) - known)
        if unknown:
            raise ValueError(f"unknown training settings: {', '.join(unknown)}")
        document = dict(document)
        document["data"] = [StageData(**d) if isinstance(d, dict) else d for d in document.get("data", [])]
        return cls(**document)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
