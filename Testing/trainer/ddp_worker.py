"""Run under torchrun by test_training.py: train a few steps with DDP, then save this rank's weights and losses.

    torchrun --nproc-per-node 2 ddp_worker.py CONFIG.yaml RUN_DIR
"""

import json
import sys
from pathlib import Path

import torch

from spineseg_train.config import TrainConfig
from spineseg_train.train import Trainer


def main(config_path: str, run_dir: str) -> None:
    trainer = Trainer(TrainConfig.from_yaml(config_path), run_dir)
    try:
        trainer.load_data()
        first = trainer.samplers[0].rng.bit_generator.state["state"]["state"]  # this rank's patch stream
        trainer.fit()
        rank = trainer.dist.rank
        out = Path(run_dir)
        torch.save(trainer.model.state_dict(), out / f"rank{rank}.pt")
        (out / f"rank{rank}.json").write_text(json.dumps({
            "rank": rank, "world_size": trainer.dist.world_size, "steps": trainer.step, "rng": str(first),
            "batch_checksum": float(trainer.next_batch()["image"].sum())}))
    finally:
        trainer.close()


if __name__ == "__main__":
    main(*sys.argv[1:3])
