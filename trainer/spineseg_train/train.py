"""The training loop: patches from phantom or real datasets, CE + λ·Dice and a lesion-heatmap loss,
AdamW with warm-up and cosine decay, gradient clipping, exact resume, and export in the checkpoint format."""

from __future__ import annotations

import json
import math
import platform
import random
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from monai.losses import DiceCELoss

import SpineSegLib
from SpineSegLib.checkpoint import label_card, save_checkpoint
from SpineSegLib.inference import resolve_device
from SpineSegLib.labels import load_label_table
from SpineSegLib.networks import build_network

from .config import TrainConfig
from .dataset import load_dataset
from .losses import centernet_focal_loss
from .sampling import PatchSampler, to_stage_grid

RESUME_FILE = "resume.pt"


def build_model(config: TrainConfig) -> torch.nn.Module:
    table = load_label_table()
    return build_network(config.architecture, in_channels=1, num_classes=table.num_classes,
                         num_lesion_classes=len(table.lesion_classes), **config.architecture_args)


def lr_factor(step: int, config: TrainConfig) -> float:
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def _rng_state(rng: np.random.Generator) -> dict:
    return {"torch": torch.get_rng_state(), "numpy": rng.bit_generator.state, "python": list(random.getstate()[1]),
            "python_version": random.getstate()[0], "python_gauss": random.getstate()[2]}


def _set_rng_state(state: dict, rng: np.random.Generator) -> None:
    torch.set_rng_state(state["torch"])
    rng.bit_generator.state = state["numpy"]
    random.setstate((state["python_version"], tuple(state["python"]), state["python_gauss"]))


class Trainer:
    def __init__(self, config: TrainConfig, out_dir: str | Path, log=print):
        self.config, self.out_dir, self.log = config, Path(out_dir), log
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if config.threads:
            torch.set_num_threads(config.threads)
        torch.manual_seed(config.seed)
        random.seed(config.seed)
        self.rng = np.random.default_rng(config.seed)
        self.device = resolve_device(config.device)
        self.model = build_model(config).to(self.device)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: lr_factor(s, config))
        self.seg_loss = DiceCELoss(to_onehot_y=True, softmax=True, include_background=False, batch=True,
                                   lambda_ce=1.0, lambda_dice=config.dice_weight)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.device.type == "cuda" and config.amp)
        self.step = 0
        self.history: list[dict] = []
        self.samplers: list[PatchSampler] = []
        self.weights: list[float] = []

    def load_data(self) -> None:
        for stage in self.config.data:
            cases = [to_stage_grid(case, (stage.spacing,) * 3, self.config.intensity_window, self.rng,
                                   stage.crop_margin_mm) for case in load_dataset(stage.path)]
            self.samplers.append(PatchSampler(cases, self.config.patch_size, self.rng))
            self.weights.append(stage.weight)
            self.log(f"loaded {len(cases)} cases from {stage.path} at {stage.spacing} mm")
        if not self.samplers:
            raise ValueError("no training data: give at least one dataset")

    # --- resume ---------------------------------------------------------------------------------------------------
    def save_resume(self) -> None:
        state = {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(), "step": self.step,
                 "rng": _rng_state(self.rng), "history": json.dumps(self.history)}
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
        _set_rng_state(state["rng"], self.rng)
        self.log(f"resumed from step {self.step}")
        return True

    # --- one step -------------------------------------------------------------------------------------------------
    def train_step(self) -> dict:
        config = self.config
        sampler = self.samplers[int(self.rng.choice(len(self.samplers), p=np.array(self.weights) / sum(self.weights)))]
        batch = {k: v.to(self.device) for k, v in sampler.batch(config.batch_size).items()}
        self.model.train()
        with torch.autocast("cuda", dtype=torch.float16, enabled=self.scaler.is_enabled()):
            out = self.model(batch["image"])
        seg = self.seg_loss(out["seg"].float(), batch["seg"])
        lesion = centernet_focal_loss(out["lesion"].float(), batch["heat"])
        loss = seg + config.lesion_weight * lesion
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), config.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.step += 1
        return {"step": self.step, "loss": float(loss), "seg": float(seg), "lesion": float(lesion),
                "lr": self.scheduler.get_last_lr()[0]}

    def fit(self, progress=None) -> None:
        started = time.time()
        from tqdm import tqdm

        bar = tqdm(total=self.config.steps, initial=self.step, desc="training", file=sys.stderr)
        while self.step < self.config.steps:
            record = self.train_step()
            self.history.append(record)
            bar.update(1)
            bar.set_postfix(loss=f"{record['loss']:.3f}", seg=f"{record['seg']:.3f}", les=f"{record['lesion']:.3f}")
            if self.step % self.config.checkpoint_every == 0 or self.step == self.config.steps:
                self.save_resume()
            if progress:
                progress(self.step / self.config.steps, "training")
        bar.close()
        self.train_seconds = time.time() - started

    # --- export ---------------------------------------------------------------------------------------------------
    def model_card(self, command: str, duration_s: float, data_description: str) -> dict:
        config = self.config
        table = load_label_table()
        return {
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
                    "coarse": {"spacing": [config.coarse_spacing] * 3, "patch_size": [config.inference_patch_size] * 3},
                    "fine": {"spacing": [config.fine_spacing] * 3, "patch_size": [config.inference_patch_size] * 3},
                },
            },
            "postprocessing": {"lesion_threshold": 0.3, "nms_radius_mm": 5.0, "min_vertebra_mm3": 300.0},
            "training": {
                "data": data_description,
                "command": command,
                "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "code_version": SpineSegLib.__version__,
                "hardware": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
                            f"{'CUDA ' + torch.cuda.get_device_name() if self.device.type == 'cuda' else 'CPU'}",
                "duration_s": round(duration_s, 1),
                "steps": self.step,
                "config": config.to_dict(),
                "final_loss": float(np.mean([h["loss"] for h in self.history[-50:]])) if self.history else None,
            },
            "metrics": {},
        }

    def export(self, out_dir: str | Path, card: dict) -> Path:
        return save_checkpoint(self.model, card, out_dir)
