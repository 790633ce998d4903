"""Training configuration: one dataclass, loadable from YAML, overridable from the command line.

Every setting has a default (the papers' values where they give one: AdamW, lr 1e-4, weight decay 1e-5, cosine
schedule with warm-up, clipping at norm 1.0, λseg/λid/λdet/λdom = 1.0/0.5/0.5/0.1 with a curriculum, rotation
±15°, scaling ±10 %, translation ≤ 10 voxels). ``docs/training.md`` lists them all. A YAML file sets any of them;
``--set key=value`` on the command line overrides one (``--set augment.elastic=true``,
``--set architecture_args.channels=[8,16,32]``); values are parsed as YAML and checked against the field's type.

Configurations written for the trainer before the multi-task loss used ``lesion_weight`` for the heatmap loss.
Such a file keeps its old meaning: ``lesion_weight`` becomes ``det_weight`` and the settings that trainer had
built in (no curriculum, 30 % lesion / 50 % vertebra-centred patches, translation ≤ 4 voxels) apply unless the
file sets them.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from SpineSegLib.postprocess import IDENTITY_STAGES

SEG_TARGETS = ("levels", "regions")
SEG_LOSSES = ("ce_dice", "dice_focal", "bdou", "ce_dice_bdou")
VAL_MODES = ("engine", "patch")

# What the trainer before the multi-task loss did without being told (see the module docstring).
LEGACY_DEFAULTS = {"seg_only_epochs": 0, "ramp_epochs": 0, "lesion_fraction": 0.3, "foreground_fraction": 0.5}
LEGACY_AUGMENT = {"translate_voxels": 4.0}


@dataclass
class StageData:
    """A dataset used at one stage's spacing; ``weight`` is how often its patches are drawn."""

    path: str
    spacing: float
    weight: float = 1.0
    crop_margin_mm: float | None = None  # cut in-plane to the spine plus this margin (the fine pass's view)


@dataclass
class AugmentConfig:
    """Patch augmentation (MONAI dict transforms; labels and lesion targets move with the image)."""

    prob: float = 0.5  # probability of the random affine (rotation, scaling, translation)
    rotate_deg: float = 15.0  # ± per axis
    scale: float = 0.1  # ± fraction per axis
    translate_voxels: float = 10.0  # ± per axis
    elastic: bool = False  # MONAI Rand3DElasticd: slow on CPU (a dense deformation per patch)
    elastic_prob: float = 0.2
    elastic_sigma: tuple[float, float] = (5.0, 8.0)  # smoothing of the random offsets (voxels)
    elastic_magnitude: tuple[float, float] = (50.0, 150.0)  # offset magnitude before smoothing
    lr_flip: bool = True  # left-right flips (prob 0.5): the only flip that keeps cranio-caudal labels valid
    paper_flips: bool = False  # the papers' random flips on every axis + 90° rotations (binary tasks only)
    smooth_prob: float = 0.15  # Gaussian smoothing of the image
    noise_prob: float = 0.3
    noise_std: float = 0.01  # of the [0, 1] intensity range (20 HU with the default window)
    intensity_prob: float = 0.3  # each of scale and shift jitter
    intensity_scale: float = 0.08  # ± fraction
    intensity_shift: float = 0.02  # ± of the [0, 1] range


@dataclass
class TrainConfig:
    # --- model -----------------------------------------------------------------------------------------------
    name: str = "spineseg-model"
    architecture: str = "unet3d"
    architecture_args: dict = field(default_factory=lambda: {"channels": [16, 32, 64, 128, 192]})
    init_from: str | None = None  # a checkpoint whose weights start the run (same architecture and arguments)
    # --- data ------------------------------------------------------------------------------------------------
    data: list[StageData] = field(default_factory=list)
    coarse_spacing: float = 3.0
    fine_spacing: float = 1.5
    patch_size: int = 64
    inference_patch_size: int = 96
    coarse_inference_patch_size: int | None = None  # the coarse pass's windows (None: inference_patch_size)
    identity_stage: str = "fine"  # which pass names the vertebrae: fine, or coarse (the whole column in view)
    intensity_window: tuple[float, float] = (-1000.0, 1000.0)
    lesion_fraction: float = 0.2  # patches centred on a lesion ...
    foreground_fraction: float = 0.3  # ... or a vertebra voxel (together 0.5: 1:1 foreground / background)
    balance_levels: bool = False  # vertebra patches: each of a case's vertebrae equally often (not by volume)
    domains: list[str] | None = None  # domain names (manifest "domain") in id order; None: sorted names found
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    # --- optimisation ----------------------------------------------------------------------------------------
    batch_size: int = 2
    steps: int = 1000
    lr: float = 1e-4
    weight_decay: float = 1e-5
    warmup_steps: int = 50
    min_lr_factor: float = 0.01  # the cosine decays to lr · min_lr_factor
    grad_clip: float = 1.0  # max gradient norm (0: off)
    amp: bool = True  # mixed precision (float16 autocast + gradient scaling) on CUDA
    grad_checkpointing: bool = False  # recompute block activations in backward (less memory, ~30 % slower)
    # --- losses: total = λseg·Lseg + λid·Lid + λdet·Ldet + λdom·Ldom ------------------------------------------
    seg_loss: str = "ce_dice"  # ce_dice | dice_focal | bdou (CE + BDoU) | ce_dice_bdou
    seg_target: str = "levels"  # levels: learn each vertebra's name; regions: learn its region, name by counting
    border_voxels: int = 1  # regions: where vertebrae touch, this many voxels each side are taught as background
    dice_weight: float = 1.0  # λ in CE + λ·Dice
    ce_balance: bool = False  # ce_dice: CE averaged over vertebra and background voxels separately
    focal_weight: float = 1.0  # dice_focal: Dice + w·focal
    focal_gamma: float = 2.0
    focal_alpha: float = 0.25
    bdou_weight: float = 1.0
    mask_weight: float = 1.0  # networks with a "mask" head: BCE + Dice of vertebra-vs-rest, added to Lseg
    seg_weight: float = 1.0
    id_weight: float = 0.5
    det_weight: float = 0.5
    dom_weight: float = 0.1
    epoch_steps: int = 25  # patches have no natural epoch: the curriculum counts epochs of this many steps
    seg_only_epochs: int = 10  # segmentation only for the first N epochs (λid = λdet = λdom = 0)
    ramp_epochs: int = 10  # then λid and λdet ramp linearly to full over M epochs; λdom is on
    offset_weight: float = 1.0  # CenterNet smooth-L1 on centre offsets (networks with an "offset" head)
    size_weight: float = 0.1  # ... and on log sizes
    order_weight: float = 1.0  # identification: CE + w·order consistency
    order_margin: float = 1.0
    min_box_voxels: int = 64  # a vertebra needs this many voxels in the patch to get an identification box
    domain_temperature: float = 0.1  # τ of the domain InfoNCE
    # --- validation and early stopping --------------------------------------------------------------------------
    val_data: str | None = None
    val_spacing: float | None = None  # patch mode: grid of the validation patches (None: the first data spacing)
    val_every: int = 0  # steps between validations (0: never)
    val_mode: str = "engine"  # engine: SpineSegLib.inference.Segmenter on whole cases; patch: patch-wise Dice
    val_cases: int = 3  # engine mode: the first N cases of val_data
    val_fast: bool = True  # engine mode: coarse pass only
    val_patches: int = 16  # patch mode: fixed patches (drawn once, no augmentation)
    patience: int = 0  # stop after this many validations without a better Dice (0: never stop early)
    restore_best: bool = True  # with validation: the exported weights are the best validated ones
    # --- bookkeeping -----------------------------------------------------------------------------------------
    checkpoint_every: int = 100
    tensorboard: bool = True  # RUN_DIR/tensorboard (needs the tensorboard package)
    seed: int = 0
    threads: int = 0  # 0 = torch default
    device: str = "auto"
    dist_backend: str = "auto"  # torchrun: gloo on CPU, nccl on CUDA
    ddp_find_unused: bool = False

    # --- reading and writing ---------------------------------------------------------------------------------
    @classmethod
    def from_yaml(cls, path: str | Path) -> TrainConfig:
        document = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(document, dict):
            raise ValueError(f"{path}: a training configuration is a YAML mapping of settings")
        return cls.from_dict(document)

    @classmethod
    def from_dict(cls, document: dict) -> TrainConfig:
        document = dict(document)
        if "lesion_weight" in document:  # a configuration written for the trainer before the multi-task loss
            document.setdefault("det_weight", document.pop("lesion_weight"))
            for key, value in LEGACY_DEFAULTS.items():
                document.setdefault(key, value)
            augment = dict(document.get("augment") or {})
            for key, value in LEGACY_AUGMENT.items():
                augment.setdefault(key, value)
            document["augment"] = augment
        return _build(cls, document, "").validate()

    def to_dict(self) -> dict:
        return _plain(dataclasses.asdict(self))

    def to_yaml(self, path: str | Path | None = None) -> str:
        text = yaml.safe_dump(self.to_dict(), sort_keys=False)
        if path is not None:
            Path(path).write_text(text)
        return text

    def override(self, assignments: list[str]) -> TrainConfig:
        """Apply ``key=value`` strings (dotted keys reach nested settings); returns a new configuration."""
        document = self.to_dict()
        for assignment in assignments:
            key, sep, raw = assignment.partition("=")
            if not sep or not key.strip():
                raise ValueError(f"--set needs key=value, got {assignment!r}")
            value = yaml.safe_load(raw) if raw.strip() else None
            target, parts = document, key.strip().split(".")
            for part in parts[:-1]:
                if not isinstance(target.get(part), dict):
                    if part in target and target[part] is not None:
                        raise ValueError(f"--set {key}: {part} is not a group of settings")
                    target[part] = {}
                target = target[part]
            target[parts[-1]] = value
        return TrainConfig.from_dict(document)

    def validate(self) -> TrainConfig:
        if self.seg_loss not in SEG_LOSSES:
            raise ValueError(f"seg_loss must be one of {', '.join(SEG_LOSSES)}, not {self.seg_loss!r}")
        if self.seg_target not in SEG_TARGETS:
            raise ValueError(f"seg_target must be one of {', '.join(SEG_TARGETS)}, not {self.seg_target!r}")
        if self.seg_target == "regions" and self.identity_stage != "fine":
            raise ValueError("seg_target regions names vertebrae by counting in the last pass; "
                             "identity_stage coarse does not apply to it")
        if self.val_mode not in VAL_MODES:
            raise ValueError(f"val_mode must be one of {', '.join(VAL_MODES)}, not {self.val_mode!r}")
        if self.identity_stage not in IDENTITY_STAGES:
            raise ValueError(f"identity_stage must be one of {', '.join(IDENTITY_STAGES)}, not {self.identity_stage!r}")
        if self.ce_balance and self.seg_loss != "ce_dice":
            raise ValueError(f"ce_balance applies to seg_loss ce_dice only, not {self.seg_loss!r}")
        if self.epoch_steps < 1:
            raise ValueError("epoch_steps must be at least 1")
        if not 0 <= self.lesion_fraction + self.foreground_fraction <= 1:
            raise ValueError("lesion_fraction + foreground_fraction must lie in [0, 1]")
        for name in ("batch_size", "steps", "patch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        return self


# --- typed construction from plain data -------------------------------------------------------------------------
def _plain(value):
    """Tuples → lists, recursively (YAML-safe and JSON-equal after a round trip)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _build(cls, document: dict, where: str):
    if not isinstance(document, dict):
        raise ValueError(f"{where.rstrip('.') or 'configuration'} must be a mapping, got {document!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(document) - known)
    if unknown:
        raise ValueError(f"unknown training settings: {', '.join(where + k for k in unknown)}")
    values = {key: _coerce(value, hints[key], where + key) for key, value in document.items()}
    return cls(**values)


def _coerce(value, hint, name: str):
    """``value`` (from YAML or JSON) as type ``hint``; a clear error names the setting otherwise."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        errors = []
        for option in options:
            try:
                return _coerce(value, option, name)
            except (TypeError, ValueError) as error:
                errors.append(str(error))
        raise ValueError(errors[0] if errors else f"{name}: invalid value {value!r}")
    if dataclasses.is_dataclass(hint):
        if isinstance(value, hint):
            return value
        return _build(hint, value or {}, name + ".")
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "on", "off", "1", "0"):
            return value.lower() in ("true", "yes", "on", "1")
        raise ValueError(f"{name}: expected true or false, got {value!r}")
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ValueError(f"{name}: expected an integer, got {value!r}")
        try:
            number = float(value)
        except ValueError:
            raise ValueError(f"{name}: expected an integer, got {value!r}") from None
        if number != int(number):
            raise ValueError(f"{name}: expected an integer, got {value!r}")
        return int(number)
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ValueError(f"{name}: expected a number, got {value!r}")
        try:
            return float(value)  # "1e-4" is a string to YAML 1.1
        except ValueError:
            raise ValueError(f"{name}: expected a number, got {value!r}") from None
    if hint is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ValueError(f"{name}: expected text, got {value!r}")
        return str(value)
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ValueError(f"{name}: expected {len(args)} values, got {value!r}")
        return tuple(_coerce(v, a, f"{name}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{name}: expected a list, got {value!r}")
        return [_coerce(v, args[0], f"{name}[{i}]") for i, v in enumerate(value)] if args else list(value)
    if hint is dict or origin is dict:
        if not isinstance(value, dict):
            raise ValueError(f"{name}: expected a mapping, got {value!r}")
        return dict(value)
    return value
