"""Distributed data-parallel training under ``torchrun`` (gloo on CPU, NCCL on CUDA).

    torchrun --nproc-per-node 2 -m spineseg_train.cli train --config cfg.yaml -o RUN_DIR

``torchrun`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``; without them
training runs in one process as before. Every rank builds the same model (same seed; DDP also broadcasts rank
0's weights when it wraps the model), samples its own patches (numpy/python seeds ``seed + rank``), and DDP
averages the gradients, so all ranks hold identical weights after every step. Rank 0 alone logs, validates and
writes resume files, TensorBoard logs and checkpoints.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class DistributedContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False  # this context initialised the process group (and destroys it on close)

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls, device_type: str, backend: str = "auto") -> DistributedContext:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
        owns = False
        if not dist.is_initialized():
            if backend == "auto":
                backend = "nccl" if device_type == "cuda" else "gloo"
            if device_type == "cuda":
                torch.cuda.set_device(local)
            dist.init_process_group(backend=backend, init_method="env://", rank=rank, world_size=world)
            owns = True
        return cls(dist.get_rank(), dist.get_world_size(), local, owns)

    def device(self, device: torch.device) -> torch.device:
        if self.enabled and device.type == "cuda":
            return torch.device("cuda", self.local_rank)
        return device

    def mean(self, values: torch.Tensor) -> torch.Tensor:
        """The mean over ranks of a tensor (itself when not distributed)."""
        if not self.enabled:
            return values
        values = values.clone()
        dist.all_reduce(values)
        return values / self.world_size

    def gather(self, obj) -> list:
        if not self.enabled:
            return [obj]
        out = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def broadcast(self, obj):
        """Rank 0's ``obj`` on every rank."""
        if not self.enabled:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def close(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()
            self.owns_group = False
