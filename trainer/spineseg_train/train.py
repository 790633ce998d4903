"""The training loop.

Patches from phantom or real datasets (:mod:`.sampling`); the multi-task objective ``λseg·Lseg + λid·Lid +
λdet·Ldet + λdom·Ldom`` with its curriculum (:mod:`.objective`); AdamW with linear warm-up and cosine decay,
gradient clipping, mixed precision on CUDA, optional gradient checkpointing; validation with early stopping
(:mod:`.validation`); exact resume (model, optimiser, scheduler, gradient scaler, every RNG, early-stopping
state); TensorBoard logs and a progress bar; distributed data-parallel under ``torchrun`` (:mod:`.distributed`);
export in the checkpoint format.
"""

from __future__ import annotations

import functools
import json
import math
import platform
import random
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
from torch.utils.checkpoint import checkpoint

import SpineSegLib
from SpineSegLib.checkpoint import label_card, save_checkpoint
from SpineSegLib.inference import resolve_device
from SpineSegLib.labels import load_label_table
from SpineSegLib.networks import build_network

from .config import TrainConfig
from .dataset import load_dataset, read_manifest
from .distributed import DistributedContext
from .level_sizes import level_sizes_of
from .objective import Objective
from .sampling import PatchSampler, to_stage_grid
from .validation import EngineValidator, PatchValidator

RESUME_FILE = "resume.pt"
BEST_FILE = "best.pt"
TENSORBOARD_DIR = "tensorboard"

# Blocks whose activations gradient checkpointing recomputes (outermost match only): transformer and Swin blocks,
# residual units and the conv stages of the U-Net style encoders and decoders (MONAI ``Convolution`` = conv + norm +
# activation, for the U-Net without residual units).
CHECKPOINTED_BLOCKS = ("TransformerBlock", "SwinTransformerBlock", "ResidualUnit", "UnetBasicBlock", "UnetResBlock",
                       "UnetrBasicBlock", "UnetrPrUpBlock", "UnetrUpBlock", "UpStage", "MultiScaleFusion", "MASAG",
                       "Convolution")


def build_model(config: TrainConfig) -> torch.nn.Module:
    table = load_label_table()
    return build_network(config.architecture, in_channels=1, num_classes=table.num_classes,
                         num_lesion_classes=len(table.lesion_classes), **config.architecture_args)


def lr_factor(step: int, config: TrainConfig) -> float:
    """Linear warm-up over ``warmup_steps``, then cosine decay to ``min_lr_factor`` at ``steps``."""
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    floor = config.min_lr_factor
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def enable_gradient_checkpointing(model: torch.nn.Module, block_names=CHECKPOINTED_BLOCKS) -> int:
    """Recompute the activations of every outermost block of the listed classes in the backward pass
    (``torch.utils.checkpoint``, non-reentrant; the RNG state is replayed so dropout matches). Returns the number
    of wrapped blocks. Batch-norm running statistics are updated twice per step (use instance norm)."""
    wrapped = 0

    def visit(module: torch.nn.Module) -> None:
        nonlocal wrapped
        for child in module.children():
            if type(child).__name__ in block_names:
                original = child.forward

                @functools.wraps(original)
                def forward(*args, _original=original, **kwargs):
                    if torch.is_grad_enabled():
                        return checkpoint(_original, *args, use_reentrant=False, **kwargs)
                    return _original(*args, **kwargs)

                child.forward = forward
                wrapped += 1
            else:
                visit(child)

    visit(model)
    return wrapped


def _rng_state(rng: np.random.Generator) -> dict:
    state = {"torch": torch.get_rng_state(), "numpy": rng.bit_generator.state, "python": list(random.getstate()[1]),
             "python_version": random.getstate()[0], "python_gauss": random.getstate()[2]}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _set_rng_state(state: dict, rng: np.random.Generator) -> None:
    torch.set_rng_state(state["torch"].cpu() if hasattr(state["torch"], "cpu") else state["torch"])
    rng.bit_generator.state = state["numpy"]
    random.setstate((state["python_version"], tuple(state["python"]), state["python_gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"].cpu())


class Trainer:
    """``Trainer(config, out_dir)``; then ``load_data()``, ``try_resume()``, ``fit()``, ``model_card(...)``,
    ``export(...)``. ``model`` is the plain network (never the DDP wrapper): its state dict has no prefixes."""

    def __init__(self, config: TrainConfig, out_dir: str | Path, log=print):
        config.validate()
        self.config, self.out_dir = config, Path(out_dir)
        if config.threads:
            torch.set_num_threads(config.threads)
        device = resolve_device(config.device)
        self.dist = DistributedContext.from_env(device.type, config.dist_backend)
        self.device = self.dist.device(device)
        self.log = log if self.dist.is_main else (lambda *a, **k: None)
        if self.dist.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        # Same weights on every rank (DDP checks it); different patches per rank.
        torch.manual_seed(config.seed)
        random.seed(config.seed + self.dist.rank)
        self.rng = np.random.default_rng(config.seed + self.dist.rank)
        self.model = build_model(config).to(self.device)
        if config.init_from:
            self._warm_start(config.init_from)
        if config.grad_checkpointing:
            self.log(f"gradient checkpointing on {enable_gradient_checkpointing(self.model)} blocks")
        torch.manual_seed(config.seed + self.dist.rank)  # dropout etc. differ per rank, like the patches
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: lr_factor(s, config))
        self.objective = Objective(config, self.model)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.device.type == "cuda" and config.amp)
        self.step = 0
        self.history: list[dict] = []
        self.samplers: list[PatchSampler] = []
        self.weights: list[float] = []
        self.domains: list[str] = list(config.domains or [])
        self.validator = None
        self.best = {"dice": None, "step": None, "bad": 0, "stopped": False}
        self.train_seconds = 0.0
        self._ddp = None
        self._writer = None

    def _warm_start(self, path: str) -> None:
        """Start from a checkpoint's weights (loaded without unpickling); its network must be this one."""
        from SpineSegLib.checkpoint import load_checkpoint

        base = load_checkpoint(path, "cpu")
        wanted = {"id": self.config.architecture, "args": self.config.architecture_args}
        found = {"id": base.card["architecture"]["id"], "args": base.card["architecture"].get("args", {})}
        if found != wanted:
            raise ValueError(f"init_from {path}: its architecture {found} is not this run's {wanted}")
        self.model.load_state_dict(base.network.state_dict())
        self.log(f"starting from the weights of {base.card.get('name')} ({path})")

    # --- data -----------------------------------------------------------------------------------------------------
    def _domain_vocabulary(self) -> list[str]:
        if self.config.domains:
            return list(self.config.domains)
        names = set()
        for stage in self.config.data:
            names |= {str(e["domain"]) for e in read_manifest(stage.path)["cases"] if e.get("domain") is not None}
        return sorted(names)

    def load_data(self) -> None:
        config = self.config
        self.domains = self._domain_vocabulary()
        limit = self.objective.num_domains
        if limit is not None and len(self.domains) > limit:
            raise ValueError(f"the data has {len(self.domains)} domains ({', '.join(self.domains)}) but the network "
                             f"has num_domains={limit}; raise architecture_args.num_domains")
        index = {name: i for i, name in enumerate(self.domains)}
        for stage in config.data:
            cases = [to_stage_grid(case, (stage.spacing,) * 3, config.intensity_window, self.rng,
                                   stage.crop_margin_mm, index.get(str(case.meta.get("domain")), -1))
                     for case in load_dataset(stage.path)]
            self.samplers.append(PatchSampler(cases, config.patch_size, self.rng, config.augment,
                                              config.lesion_fraction, config.foreground_fraction,
                                              config.balance_levels))
            self.weights.append(stage.weight)
            self.log(f"loaded {len(cases)} cases from {stage.path} at {stage.spacing} mm")
        if not self.samplers:
            raise ValueError("no training data: give at least one dataset")
        if config.val_data and config.val_every and self.dist.is_main:
            if config.val_mode == "patch":
                spacing = config.val_spacing or config.data[0].spacing
                rng = np.random.default_rng(config.seed + 7)
                cases = [to_stage_grid(case, (spacing,) * 3, config.intensity_window, rng)
                         for case in load_dataset(config.val_data)]
                self.validator = PatchValidator(cases, config.patch_size, config.val_patches, config.seed,
                                                config.lesion_fraction, config.foreground_fraction, config.batch_size)
            else:
                self.validator = EngineValidator(load_dataset(config.val_data)[: config.val_cases], config.val_fast)
            self.log(f"validation every {config.val_every} steps on {config.val_data} ({config.val_mode} mode)")

    # --- resume ---------------------------------------------------------------------------------------------------
    def save_resume(self) -> None:
        """Rank 0 writes the state (with every rank's RNG); the other ranks only take part in the gather."""
        rng_all = self.dist.gather(_rng_state(self.rng))
        if not self.dist.is_main:
            return
        state = {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(), "step": self.step,
                 "rng": rng_all[0], "history": json.dumps(self.history), "best": json.dumps(self.best),
                 "domains": json.dumps(self.domains)}
        if self.dist.enabled:
            state["rng_ranks"] = rng_all
        tmp = self.out_dir / (RESUME_FILE + ".tmp")
        torch.save(state, tmp)
        tmp.replace(self.out_dir / RESUME_FILE)

    def try_resume(self) -> bool:
        path = self.out_dir / RESUME_FILE
        if not path.is_file():
            return False
        state = torch.load(path, map_location=self.device, weights_only=True)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.step = int(state["step"])
        self.history = json.loads(state["history"])
        if "best" in state:
            self.best = json.loads(state["best"])
        ranks = state.get("rng_ranks")
        if ranks is not None and len(ranks) == self.dist.world_size:
            _set_rng_state(ranks[self.dist.rank], self.rng)
        elif self.dist.rank == 0:
            _set_rng_state(state["rng"], self.rng)
        else:  # resumed with more processes than saved: a fresh, still rank-specific stream
            seed = self.config.seed + self.dist.rank + 1_000 * self.step
            self.rng = np.random.default_rng(seed)
            for sampler in self.samplers:
                sampler.rng = self.rng
            torch.manual_seed(seed)
            random.seed(seed)
        self.log(f"resumed from step {self.step}")
        return True

    # --- one step -------------------------------------------------------------------------------------------------
    def _network(self) -> torch.nn.Module:
        """The network to train with: the DDP wrapper when distributed (made on first use, after any weights were
        loaded, so rank 0's broadcast carries them), else the model itself."""
        if not self.dist.enabled:
            return self.model
        if self._ddp is None:
            from torch.nn.parallel import DistributedDataParallel

            self._ddp = DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=self.config.ddp_find_unused)
        return self._ddp

    def next_batch(self) -> dict:
        p = np.array(self.weights) / sum(self.weights)
        sampler = self.samplers[int(self.rng.choice(len(self.samplers), p=p))]
        return {k: v.to(self.device) for k, v in sampler.batch(self.config.batch_size).items()}

    def train_step(self) -> dict:
        config = self.config
        batch = self.next_batch()
        network = self._network()
        self.model.train()
        kwargs = self.objective.forward_kwargs(batch)
        with torch.autocast("cuda", dtype=torch.float16, enabled=self.scaler.is_enabled()):
            out = network(batch["image"], **kwargs)
        loss, parts = self.objective(out, batch, self.step)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        grad_norm = (torch.nn.utils.clip_grad_norm_(self.model.parameters(), config.grad_clip)
                     if config.grad_clip > 0 else torch.tensor(0.0))
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        names = ["loss", *parts]
        values = self.dist.mean(torch.stack([loss.detach().float(), *(v.detach().float() for v in parts.values())]))
        record = {"step": self.step + 1, **{n: float(v) for n, v in zip(names, values.cpu())},
                  "lr": self.scheduler.get_last_lr()[0], "grad_norm": float(grad_norm)}
        if "lesion" not in record and "det" in record:
            record["lesion"] = record["det"]  # the name the earlier trainer used
        record.update({f"w_{k}": w for k, w in self.objective.weights(self.step).items() if k in parts})
        self.step += 1
        return record

    # --- validation -----------------------------------------------------------------------------------------------
    def validate(self) -> dict | None:
        """Rank 0: the validation score (see :mod:`.validation`); None without validation data."""
        if self.validator is None:
            return None
        was_training = self.model.training
        self.model.eval()
        try:
            if isinstance(self.validator, PatchValidator):
                return self.validator(self.model, self.device, self.scaler.is_enabled())
            card = self.model_card("validation", 0.0, str(self.config.val_data))
            return self.validator(self.model, card, self.device, self.out_dir)
        finally:
            self.model.train(was_training)

    def _validate_and_check(self) -> bool:
        """Validate (rank 0), track the best Dice and patience; True when training should stop (on all ranks)."""
        stop = False
        if self.dist.is_main and self.validator is not None:
            started = time.time()
            scores = self.validate()
            dice = scores["dice"] if np.isfinite(scores["dice"]) else 0.0
            improved = self.best["dice"] is None or dice > self.best["dice"]
            if improved:
                self.best.update(dice=dice, step=self.step, bad=0)
                tmp = self.out_dir / (BEST_FILE + ".tmp")
                torch.save({"model": self.model.state_dict(), "step": self.step, "dice": dice}, tmp)
                tmp.replace(self.out_dir / BEST_FILE)
            else:
                self.best["bad"] += 1
            stop = bool(self.config.patience) and self.best["bad"] >= self.config.patience
            self.best["stopped"] = stop
            record = {"step": self.step, **{f"val_{k}": v for k, v in scores.items()},
                      "val_seconds": round(time.time() - started, 1)}
            self.history.append(record)
            self._scalars(record, prefix="val/")
            self.log(f"step {self.step}: validation Dice {dice:.4f} (best {self.best['dice']:.4f} at step "
                     f"{self.best['step']})" + (", stopping early" if stop else ""))
        stop = self.dist.broadcast(stop)
        self.best["stopped"] = stop
        return stop

    # --- logging --------------------------------------------------------------------------------------------------
    def _open_writer(self) -> None:
        if not (self.config.tensorboard and self.dist.is_main) or self._writer is not None:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            self.log("TensorBoard logs are off: install the tensorboard package (pip install 'spineseg[train]')")
            self.config.tensorboard = False
            return
        self._writer = SummaryWriter(str(self.out_dir / TENSORBOARD_DIR), purge_step=self.step or None)

    def _scalars(self, record: dict, prefix: str = "train/") -> None:
        if self._writer is None:
            return
        for key, value in record.items():
            if key != "step" and isinstance(value, (int, float)) and math.isfinite(value):
                name = key[4:] if prefix == "val/" and key.startswith("val_") else key
                self._writer.add_scalar(prefix + name, value, record["step"])

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self.dist.close()

    # --- the loop -------------------------------------------------------------------------------------------------
    def fit(self, progress=None) -> None:
        """Train until ``config.steps`` (or early stopping); resume files every ``checkpoint_every`` steps."""
        config = self.config
        started = time.time()
        from tqdm import tqdm

        self._open_writer()
        validating = self.validator is not None or (bool(config.val_data and config.val_every) and self.dist.enabled)
        bar = tqdm(total=config.steps, initial=self.step, desc="training", file=sys.stderr,
                   disable=not self.dist.is_main)
        stop = bool(self.best.get("stopped"))
        while self.step < config.steps and not stop:
            record = self.train_step()
            self.history.append(record)
            self._scalars(record)
            bar.update(1)
            bar.set_postfix(loss=f"{record['loss']:.3f}", seg=f"{record['seg']:.3f}", det=f"{record['det']:.3f}")
            if validating and (self.step % config.val_every == 0 or self.step == config.steps):
                stop = self._validate_and_check()
            if self.step % config.checkpoint_every == 0 or self.step == config.steps or stop:
                self.save_resume()
            if progress:
                progress(self.step / config.steps, "training")
        bar.close()
        if self._writer is not None:
            self._writer.flush()
        if validating and config.restore_best and self.dist.is_main and (self.out_dir / BEST_FILE).is_file():
            best = torch.load(self.out_dir / BEST_FILE, map_location=self.device, weights_only=True)
            self.model.load_state_dict(best["model"])
            self.log(f"best validation Dice {best['dice']:.4f} at step {best['step']}: those weights are kept")
        self.train_seconds = time.time() - started

    # --- export ---------------------------------------------------------------------------------------------------
    def model_card(self, command: str, duration_s: float, data_description: str) -> dict:
        config = self.config
        table = load_label_table()
        card = {
            "name": config.name,
            "description": "Vertebra labels and lesion heatmap for spine CT. Research use only; not a medical "
                           "device and not for diagnosis.",
            "architecture": {"id": config.architecture, "args": config.architecture_args},
            "in_channels": 1,
            "labels": label_card(table),
            "preprocessing": {
                "orientation": "RAS",
                "intensity_window": list(config.intensity_window),
                "stages": {
                    "coarse": {"spacing": [config.coarse_spacing] * 3,
                               "patch_size": [config.coarse_inference_patch_size or config.inference_patch_size] * 3},
                    "fine": {"spacing": [config.fine_spacing] * 3, "patch_size": [config.inference_patch_size] * 3},
                },
            },
            "postprocessing": {"lesion_threshold": 0.3, "nms_radius_mm": 5.0, "min_vertebra_mm3": 300.0,
                               "identity_stage": config.identity_stage, "numbering": config.seg_target},
            "training": {
                "data": data_description,
                "command": command,
                "date": datetime.now(UTC).isoformat(timespec="seconds"),
                "code_version": SpineSegLib.__version__,
                "hardware": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
                            f"{'CUDA ' + torch.cuda.get_device_name() if self.device.type == 'cuda' else 'CPU'}"
                            + (f", {self.dist.world_size} processes" if self.dist.enabled else ""),
                "duration_s": round(duration_s, 1),
                "steps": self.step,
                "config": config.to_dict(),
                "final_loss": float(np.mean([h["loss"] for h in self.history[-50:] if "loss" in h]))
                if any("loss" in h for h in self.history) else None,
            },
            "metrics": {},
        }
        if self.domains:
            card["training"]["domains"] = list(self.domains)
        if config.seg_target == "regions" and config.data:  # the count's second witness: its data's sizes
            card["postprocessing"]["level_sizes"] = level_sizes_of(list(dict.fromkeys(d.path for d in config.data)))
        if self.best.get("dice") is not None:
            card["training"]["validation"] = {"mode": config.val_mode, "data": config.val_data,
                                              "best_dice": self.best["dice"], "best_step": self.best["step"]}
        return card

    def export(self, out_dir: str | Path, card: dict) -> Path:
        return save_checkpoint(self.model, card, out_dir)
