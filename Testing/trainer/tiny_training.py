"""Tiny training settings shared by the trainer tests (CPU, about a second a step)."""

from __future__ import annotations

# Small but every part present: lumbar phantoms of 48×48×64 voxels at 3 mm, each with lesions.
TINY_DATA = {"count": 2, "seed_start": 100, "spacing": 3.0, "region": "lumbar", "shape": (48, 48, 64)}

_VIT = {"feature_size": 4, "hidden_size": 32, "num_layers": 2, "num_heads": 2, "mlp_dim": 64, "img_size": 32}
_CONV = {"channels": [4, 8, 16]}
# Swin at 32³ has a one-voxel bottleneck: batch norm (instance norm needs more than one voxel).
_SWIN = {"feature_size": 12, "depths": [1, 1, 1, 1], "num_heads": [1, 2, 4, 8], "norm_name": "batch"}
TINY_ARCHS = {
    "cnn3d": _CONV,
    "unet3d": {**_CONV, "num_res_units": 0},
    "unet3d_transformer": {**_CONV, "num_layers": 1, "num_heads": 2},
    "unet_masag": _CONV,
    "swin_unetr": _SWIN,
    "swin_unetr_msf_aa": _SWIN,
    "unetr": _VIT,
    "unetr_ag": _VIT,
    "unetr_masag": _VIT,
    "vertebraformer": {**_VIT, "roi_size": 2, "id_hidden": 16, "num_domains": 2, "domain_dim": 8},
}


def tiny_config(dataset, architecture: str = "unet3d", **settings):
    """A TrainConfig that trains in about a second a step on one CPU core."""
    from spineseg_train.config import StageData, TrainConfig

    document = {"name": f"tiny-{architecture}", "architecture": architecture,
                "architecture_args": dict(TINY_ARCHS[architecture]), "data": [StageData(str(dataset), 3.0)],
                "patch_size": 32, "inference_patch_size": 32, "coarse_spacing": 3.0, "fine_spacing": 3.0,
                "batch_size": 2, "steps": 4, "warmup_steps": 1, "lr": 1e-3, "threads": 1, "device": "cpu",
                "tensorboard": False, "checkpoint_every": 1000}
    document.update(settings)
    return TrainConfig.from_dict(document).validate()
