"""Fine-tuning a SpineSeg checkpoint on a dataset folder (for example corrected cases saved from Slicer or the
browser), then exporting it as a new checkpoint.

    spineseg-train finetune --model CHECKPOINT --data DATASET[:SPACING] [DATASET[:SPACING] ...] -o RUN \\
        --steps N [--lr 2e-4] [--patch-size 64] [--batch-size 2] [--export OUT]

The trainer is :class:`spineseg_train.train.Trainer`, built with the checkpoint's architecture and settings
(intensity window, inference spacings and patch size), starting from the checkpoint's weights (the ``init_from``
setting: :func:`SpineSegLib.checkpoint.load_checkpoint`, safetensors, validated). A dataset without ``:SPACING`` is used
at the checkpoint's fine-pass spacing. A run folder that already holds ``resume.pt`` resumes that fine-tuning.
The exported card keeps the base model's preprocessing and post-processing and records where it came from.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

from .config import StageData, TrainConfig

DEFAULT_LR = 2e-4  # a tenth of training from scratch: adapt, do not forget


def parse_data(items: list[str], default_spacing: float) -> list[StageData]:
    """``DATASET`` or ``DATASET:SPACING`` (mm) -> stage data; a path may itself contain ':' (Windows drives)."""
    stages = []
    for item in items:
        path, spacing = item, default_spacing
        head, sep, tail = item.rpartition(":")
        if sep and head:
            try:
                spacing = float(tail)
                path = head
            except ValueError:
                path = item
        if spacing <= 0:
            raise ValueError(f"invalid spacing in {item!r}: it must be positive (mm)")
        stages.append(StageData(path=path, spacing=spacing))
    return stages


def config_from_card(card: dict, data: list[StageData], steps: int, name: str | None = None,
                     **overrides) -> TrainConfig:
    """A training configuration that reproduces a checkpoint's architecture and preprocessing."""
    preprocessing = card.get("preprocessing", {})
    stages = preprocessing.get("stages", {})
    fine = stages.get("fine", {})
    coarse = stages.get("coarse", fine)
    arch = card["architecture"]
    config = TrainConfig(
        name=name or f"{card.get('name', 'model')}-finetuned",
        architecture=arch["id"],
        architecture_args=dict(arch.get("args", {})),
        data=data,
        coarse_spacing=float(_first(coarse.get("spacing"), 3.0)),
        fine_spacing=float(_first(fine.get("spacing"), 1.5)),
        inference_patch_size=int(_first(fine.get("patch_size"), 96)),
        intensity_window=tuple(float(v) for v in preprocessing.get("intensity_window", (-1000.0, 1000.0))),
        steps=int(steps),
        lr=DEFAULT_LR,
        warmup_steps=min(20, max(1, int(steps) // 10)),
    )
    for key, value in overrides.items():
        if value is not None:
            setattr(config, key, value)
    return config


def _first(value, default):
    if value is None:
        return default
    if isinstance(value, (list, tuple)):
        return value[0] if value else default
    return value


def finetune(model: str | Path, data: list[StageData], out_dir: str | Path, steps: int,
             export: str | Path | None = None, command: str = "", log=print, **overrides) -> Path | None:
    """Fine-tune checkpoint ``model`` on ``data`` for ``steps`` steps in run folder ``out_dir``; export to
    ``export`` when given (returns its path)."""
    from SpineSegLib.checkpoint import read_model_card

    from .train import Trainer

    base = read_model_card(model)
    config = config_from_card(base, data, steps, init_from=str(model), **overrides)
    trainer = Trainer(config, out_dir, log=log)  # loads the checkpoint's weights (init_from)
    trainer.load_data()
    trainer.try_resume()  # an interrupted fine-tuning in the same run folder goes on where it stopped
    started = time.time()
    trainer.fit()
    if export is None:
        return None
    described = ", ".join(f"{d.path} at {d.spacing} mm" for d in config.data)
    card = trainer.model_card(command or "spineseg-train finetune", time.time() - started, described)
    card["preprocessing"] = base.get("preprocessing", card["preprocessing"])
    card["postprocessing"] = dict(base.get("postprocessing", card["postprocessing"]))
    for key, output, command in (("lesion_calibration", "heatmap", "calibrate-lesions"),
                                 ("surface_refinement", "foreground", "fit-surface")):
        if card["postprocessing"].pop(key, None):
            log(f"the base model's {key.replace('_', ' ')} was fitted on its own {output}, not the fine-tuned "
                f"one's: left out (spineseg-train {command} fits one again)")
    card["training"]["finetuned_from"] = {"name": base.get("name"), "path": str(Path(model).absolute()),
                                          "sha256": (base.get("weights") or {}).get("sha256")}
    trainer.export(export, card)
    log(f"model exported to {export}")
    return Path(export)


def _cmd_finetune(args) -> int:
    from SpineSegLib.checkpoint import read_model_card

    card = read_model_card(args.model)
    fine_spacing = float(_first(card.get("preprocessing", {}).get("stages", {}).get("fine", {}).get("spacing"), 1.5))
    data = parse_data(args.data, fine_spacing)
    command = "spineseg-train " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    finetune(args.model, data, args.output, args.steps, args.export, command=command, lr=args.lr,
             batch_size=args.batch_size, patch_size=args.patch_size, threads=args.threads, device=args.device,
             name=args.name, seed=args.seed, checkpoint_every=args.checkpoint_every)
    return 0


def add_finetune_command(subparsers) -> argparse.ArgumentParser:
    """Register ``finetune`` on the ``spineseg-train`` subparsers."""
    f = subparsers.add_parser("finetune", help="fine-tune a checkpoint on a dataset (e.g. corrected cases)")
    f.add_argument("--model", required=True, help="checkpoint folder or .zip to start from")
    f.add_argument("--data", required=True, nargs="+", help="DATASET[:SPACING_MM] (default: the model's fine spacing)")
    f.add_argument("-o", "--output", required=True, help="run folder (resume state, logs)")
    f.add_argument("--steps", type=int, required=True)
    f.add_argument("--export", help="write the fine-tuned model as a checkpoint folder here")
    f.add_argument("--lr", type=float, default=None, help=f"learning rate (default {DEFAULT_LR:g})")
    f.add_argument("--batch-size", type=int)
    f.add_argument("--patch-size", type=int)
    f.add_argument("--threads", type=int)
    f.add_argument("--device")
    f.add_argument("--name")
    f.add_argument("--seed", type=int)
    f.add_argument("--checkpoint-every", type=int)
    f.set_defaults(run=_cmd_finetune)
    return f
