"""The training loop: configuration, targets that move with the image, the multi-task curriculum, exact resume,
data-parallel training, gradient checkpointing, and every architecture through the checkpoint format and the
inference engine (CPU, tiny sizes)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from tiny_training import TINY_ARCHS, tiny_config

from spineseg_train.config import AugmentConfig, TrainConfig
from spineseg_train.sampling import PatchSampler, StageCase
from spineseg_train.targets import lesion_targets, vertebra_boxes
from spineseg_train.train import Trainer, enable_gradient_checkpointing

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent


# --- configuration --------------------------------------------------------------------------------------------
def test_config_yaml_round_trip_and_overrides(tmp_path):
    config = TrainConfig.from_dict({"architecture": "vertebraformer", "architecture_args": {"num_layers": 4},
                                    "data": [{"path": "d", "spacing": 1.5}], "augment": {"elastic": True}})
    path = tmp_path / "config.yaml"
    config.to_yaml(path)
    again = TrainConfig.from_yaml(path)
    assert again == config and again.to_dict() == config.to_dict()
    assert again.augment.elastic and again.data[0].spacing == 1.5

    changed = config.override(["lr=3e-4", "augment.translate_voxels=6", "architecture_args.hidden_size=64",
                               "seg_loss=bdou", "val_data=/val", "amp=false", "intensity_window=[-500, 1500]"])
    assert changed.lr == pytest.approx(3e-4) and isinstance(changed.lr, float)  # "3e-4" is a string to YAML
    assert changed.augment.translate_voxels == 6.0 and changed.augment.elastic
    assert changed.architecture_args == {"num_layers": 4, "hidden_size": 64}
    assert (changed.seg_loss, changed.val_data, changed.amp) == ("bdou", "/val", False)
    assert changed.intensity_window == (-500.0, 1500.0)
    assert config.lr == pytest.approx(1e-4)  # the original is left alone
    # The papers' defaults.
    default = TrainConfig()
    assert (default.lr, default.weight_decay, default.grad_clip) == (1e-4, 1e-5, 1.0)
    assert (default.seg_weight, default.id_weight, default.det_weight, default.dom_weight) == (1.0, 0.5, 0.5, 0.1)
    for bad, message in (["nope=1"], "unknown"), (["steps=many"], "integer"), (["augment.elastic=maybe"], "true"), \
                        (["seg_loss=l2"], "seg_loss"), (["lr"], "key=value"):
        with pytest.raises(ValueError, match=message):
            config.override(bad)


def test_cli_set_overrides_the_file_and_flags(tmp_path):
    from spineseg_train.cli import build_parser, training_config

    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"architecture": "unet3d", "steps": 50, "lr": 0.002}))
    args = build_parser().parse_args(["train", "-o", str(tmp_path / "run"), "--config", str(path), "--steps", "7",
                                      "--set", "lr=0.01", "--set", "augment.lr_flip=false",
                                      "--data", f"{tmp_path}:2.5"])
    config = training_config(args)
    assert (config.steps, config.lr, config.augment.lr_flip) == (7, 0.01, False)
    assert config.data[0].path == str(tmp_path) and config.data[0].spacing == 2.5


def test_default_yaml_keeps_the_default_models_recipe():
    """default.yaml (the bundled unet3d) keeps its behaviour: det weight 1, no curriculum, the old sampling."""
    config = TrainConfig.from_yaml(REPO / "trainer" / "configs" / "default.yaml")
    assert config.architecture == "unet3d" and config.lr == 0.002 and config.identity_stage == "fine"
    assert (config.det_weight, config.seg_only_epochs, config.ramp_epochs) == (1.0, 0, 0)
    assert (config.lesion_fraction, config.foreground_fraction, config.augment.translate_voxels) == (0.3, 0.5, 4.0)
    # A configuration written for the earlier trainer (lesion_weight) means what it meant then.
    legacy = TrainConfig.from_dict({"lesion_weight": 2.0, "steps": 10})
    assert (legacy.det_weight, legacy.seg_only_epochs, legacy.augment.translate_voxels) == (2.0, 0, 4.0)
    # The bundled model's second stage teaches regions and the seams between touching vertebrae.
    regions = TrainConfig.from_yaml(REPO / "trainer" / "configs" / "regions.yaml")
    assert (regions.seg_target, regions.border_voxels, regions.init_from) == ("regions", 1, "runs/model_v0")
    # The coarse-identity experiment (docs/training.md) stays a valid configuration.
    experiment = TrainConfig.from_yaml(REPO / "trainer" / "configs" / "coarse_identity.yaml")
    assert (experiment.coarse_spacing, experiment.identity_stage, experiment.ce_balance) == (5.0, "coarse", True)


# --- targets --------------------------------------------------------------------------------------------------
def test_lesion_targets_move_with_the_image():
    """A bright blob at each lesion centre: after rotation, scaling, translation, flips and elastic deformation
    the recorded centre still sits on the blob, and the heatmap peak (exactly 1) is at its rounded position."""
    from scipy import ndimage

    shape = (72, 72, 72)
    grid = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    centres = np.array([[36.3, 33.6, 40.2], [28.0, 44.5, 31.7]])
    image = sum(np.exp(-sum((g - c) ** 2 for g, c in zip(grid, centre)) / 8.0) for centre in centres)
    classes = np.zeros(shape, np.uint8)
    classes[30:42, 30:42, 30:42] = 5
    case = StageCase(image.astype(np.float32), classes, centres, np.array([2.0, 2.0]), np.array([0, 2]),
                     np.argwhere(classes > 0), np.array([8.0, 8.0]))
    augment = AugmentConfig(prob=1.0, elastic=True, elastic_prob=0.5, paper_flips=True, noise_prob=0,
                            intensity_prob=0, smooth_prob=0)
    sampler = PatchSampler([case], 48, np.random.default_rng(3), augment, lesion_fraction=1.0)
    checked = 0
    for _ in range(8):
        item = sampler.sample()
        picture = item["image"][0].numpy()
        for row in item["lesions"].numpy():
            centre, cls = row[:3], int(row[6])
            if np.any(centre < 5) or np.any(centre > 42):
                continue
            lo = np.round(centre).astype(int) - 4
            window = picture[lo[0]:lo[0] + 9, lo[1]:lo[1] + 9, lo[2]:lo[2] + 9]
            found = np.array(ndimage.center_of_mass(np.clip(window - 0.5 * window.max(), 0, None))) + lo
            assert np.linalg.norm(found - centre) < 0.5
            assert item["heat"][cls][tuple(np.round(centre).astype(int))] == 1.0
            assert 6.0 < row[3] < 10.0  # 8 voxels, scaled by at most ±10 %
            checked += 1
    assert checked >= 4


def test_balanced_patches_visit_small_vertebrae_as_often_as_large_ones():
    """A 2-voxel-thick vertebra beside a 30-voxel one: by volume it gets ~6 % of the vertebra patches, with
    ``balance_levels`` about half."""
    classes = np.zeros((40, 40, 40), np.uint8)
    classes[5:35, 5:35, 2:32] = 20  # a large lumbar body
    classes[5:35, 5:35, 34:36] = 3  # a thin cervical one
    case = StageCase(np.zeros(classes.shape, np.float32), classes, np.zeros((0, 3)), np.zeros(0),
                     np.zeros(0, np.int64), np.argwhere(classes > 0))

    def share_of_small(balance: bool) -> float:
        sampler = PatchSampler([case], 16, np.random.default_rng(0), False, lesion_fraction=0.0,
                               foreground_fraction=1.0, balance_levels=balance)
        centres = np.array([sampler._centre(case) for _ in range(2000)]).astype(int)
        return float(np.mean(classes[tuple(centres.T)] == 3))

    assert share_of_small(False) < 0.1
    assert 0.45 < share_of_small(True) < 0.55


def test_vertebra_boxes_and_lesion_targets():
    seg = torch.zeros(2, 1, 16, 16, 16, dtype=torch.long)
    seg[0, 0, 2:6, 3:9, 4:12] = 20  # L1 (class 20 → id 19)
    seg[0, 0, 8:14, 3:9, 4:12] = 21
    seg[1, 0, 0:2, 0:2, 0:2] = 5  # 8 voxels: too small for a box
    boxes, ids = vertebra_boxes(seg, min_voxels=10)
    assert boxes.tolist() == [[0, 2, 3, 4, 6, 9, 12], [0, 8, 3, 4, 14, 9, 12]] and ids.tolist() == [19, 20]
    lesions = torch.tensor([[0, 3.4, 5.6, 7.5, 4.0, 4.0, 0.5, 1], [1, 20.0, 1.0, 1.0, 3.0, 3.0, 3.0, 0]])
    centers, offsets, log_sizes = lesion_targets(lesions, (16, 16, 16))
    assert centers.tolist() == [[0, 3, 6, 8]]  # the second centre is outside the patch
    assert torch.allclose(offsets, torch.tensor([[0.4, -0.4, -0.5]]), atol=1e-6)
    assert torch.allclose(log_sizes, torch.log(torch.tensor([[4.0, 4.0, 1.0]])))


# --- the multi-task curriculum ----------------------------------------------------------------------------------
def _grad_norm(model, fragment: str) -> float:
    grads = [p.grad for n, p in model.named_parameters() if fragment in n and p.grad is not None]
    assert grads, fragment
    return float(sum(g.abs().sum() for g in grads))


def test_curriculum_switches_on_identification_and_lesion_heads(tiny_dataset, tmp_path):
    """Vertebraformer: segmentation only in epoch 0 (the heads get exactly zero gradient), full λid / λdet after
    the ramp (epoch 1), and every head then learns."""
    config = tiny_config(tiny_dataset, "vertebraformer", epoch_steps=1, seg_only_epochs=1, ramp_epochs=1,
                         lesion_fraction=1.0, foreground_fraction=0.0, min_box_voxels=8)
    trainer = Trainer(config, tmp_path / "run", log=lambda *a: None)
    trainer.load_data()
    heads = ["id_classifier", "lesion_out.offset", "lesion_out.log_size", "lesion_out.heatmap"]
    first = trainer.train_step()
    assert (first["w_id"], first["w_det"], first["w_dom"]) == (0.0, 0.0, 0.0) and first["w_seg"] == 1.0
    assert first["loss"] == pytest.approx(first["seg"], rel=1e-6)
    for head in heads:
        assert _grad_norm(trainer.model, head) == 0.0, head
    assert _grad_norm(trainer.model, "seg_head") > 0
    second = trainer.train_step()
    assert (second["w_id"], second["w_det"], second["w_dom"]) == (0.5, 0.5, 0.1)
    assert second["loss"] == pytest.approx(second["seg"] + 0.5 * second["id"] + 0.5 * second["det"]
                                           + 0.1 * second["dom"], rel=1e-5)
    assert second["id"] > 0 and second["det"] > 0 and second["dom"] > 0
    for head in heads + ["domain.prototypes", "domain.classifier"]:
        assert _grad_norm(trainer.model, head) > 0, head
    trainer.close()


# --- exact resume ---------------------------------------------------------------------------------------------
def test_resume_reproduces_the_next_step_exactly(tiny_dataset, tmp_path):
    config = tiny_config(tiny_dataset, "unet3d", steps=10, augment={"elastic": True, "elastic_prob": 0.5})
    first = Trainer(config, tmp_path / "run", log=lambda *a: None)
    first.load_data()
    first.train_step()
    first.train_step()
    first.save_resume()
    expected = first.train_step()
    first.close()

    second = Trainer(config, tmp_path / "run", log=lambda *a: None)
    second.load_data()
    assert second.try_resume() and second.step == 2
    record = second.train_step()
    assert record["loss"] == expected["loss"] and record["seg"] == expected["seg"] and record["lr"] == expected["lr"]
    for (name, a), b in zip(first.model.state_dict().items(), second.model.state_dict().values()):
        assert torch.equal(a, b), name
    second.close()


# --- distributed data parallel ----------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_ddp_ends_with_identical_weights(tiny_dataset, tmp_path):
    """torchrun, two CPU processes, gloo on 127.0.0.1: two steps, different patches per rank, same weights."""
    config = tiny_config(tiny_dataset, "unet3d", steps=2)
    config.to_yaml(tmp_path / "config.yaml")
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2",
               "--master-addr", "127.0.0.1", "--master-port", str(_free_port()), str(HERE / "ddp_worker.py"),
               str(tmp_path / "config.yaml"), str(run)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    infos = [json.loads((run / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [i["world_size"] for i in infos] == [2, 2] and [i["steps"] for i in infos] == [2, 2]
    assert infos[0]["batch_checksum"] != infos[1]["batch_checksum"]  # each rank draws its own patches
    weights = [torch.load(run / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    initial = Trainer(config, tmp_path / "fresh", log=lambda *a: None).model.state_dict()
    moved = 0
    for name, value in weights[0].items():
        assert torch.equal(value, weights[1][name]), name
        moved += not torch.equal(value, initial[name])
    assert moved > 0
    assert (run / "resume.pt").is_file()  # rank 0 wrote it


# --- gradient checkpointing -----------------------------------------------------------------------------------
@pytest.mark.parametrize("architecture", ["unet3d", "unetr"])
def test_gradient_checkpointing_gives_the_same_gradients(architecture, tiny_dataset):
    from spineseg_train.train import build_model

    config = tiny_config(tiny_dataset, architecture)
    torch.manual_seed(0)
    plain = build_model(config)
    wrapped = build_model(config)
    wrapped.load_state_dict(plain.state_dict())
    assert enable_gradient_checkpointing(wrapped) > 0
    x = torch.randn(1, 1, 32, 32, 32)
    grads = []
    for net in (plain, wrapped):
        out = net(x)
        (out["seg"].square().mean() + out["lesion"].sigmoid().mean()).backward()
        grads.append({n: p.grad.clone() for n, p in net.named_parameters()})
    for name, g in grads[0].items():
        assert torch.allclose(g, grads[1][name], atol=1e-6, rtol=1e-4), name


# --- every architecture: checkpoint format and inference engine ------------------------------------------------
@pytest.fixture(scope="module")
def tiny_ct():
    from SpineSegLib.phantom import PhantomConfig, generate_phantom

    return generate_phantom(PhantomConfig(seed=7, region="lumbar", shape=(48, 48, 64), spacing=(3.0, 3.0, 3.0),
                                          lesions=1)).ct


@pytest.mark.parametrize("architecture", sorted(TINY_ARCHS))
def test_every_architecture_exports_loads_and_segments(architecture, tiny_dataset, tiny_ct, tmp_path):
    from SpineSegLib.checkpoint import load_checkpoint
    from SpineSegLib.inference import Segmenter

    trainer = Trainer(tiny_config(tiny_dataset, architecture), tmp_path / "run", log=lambda *a: None)
    card = trainer.model_card("test", 0.0, "none")
    card["preprocessing"]["stages"]["coarse"]["spacing"] = [4.0] * 3
    path = trainer.export(tmp_path / "model", card)
    loaded = load_checkpoint(path)
    assert loaded.card["architecture"] == {"id": architecture, "args": TINY_ARCHS[architecture]}
    original = trainer.model.eval()
    x = torch.rand(1, 1, 32, 32, 32)
    with torch.no_grad():
        assert torch.equal(original(x)["seg"], loaded.network(x)["seg"])
    # Coarse and fine passes for the default architecture; the coarse pass (fast mode) for the others: the
    # crop between the passes does not depend on the network.
    result = Segmenter(loaded, device="cpu", fast=architecture != "unet3d")(tiny_ct)
    assert result.labels.array.shape == tiny_ct.shape and result.heatmap.array.shape == tiny_ct.shape
    trainer.close()


def test_init_from_starts_from_a_checkpoints_weights_and_the_card_records_the_passes(tiny_dataset, tmp_path):
    from SpineSegLib.checkpoint import read_model_card

    quiet = {"log": lambda *a: None}
    first = Trainer(tiny_config(tiny_dataset, coarse_inference_patch_size=48, identity_stage="coarse"),
                    tmp_path / "first", **quiet)
    path = first.export(tmp_path / "model", first.model_card("test", 0.0, "none"))
    card = read_model_card(path)
    assert card["preprocessing"]["stages"]["coarse"]["patch_size"] == [48] * 3
    assert card["preprocessing"]["stages"]["fine"]["patch_size"] == [32] * 3
    assert card["postprocessing"]["identity_stage"] == "coarse"
    assert card["postprocessing"]["numbering"] == "levels"

    warm = Trainer(tiny_config(tiny_dataset, init_from=str(path), seed=5), tmp_path / "warm", **quiet)
    cold = Trainer(tiny_config(tiny_dataset, seed=5), tmp_path / "cold", **quiet)
    for name, weight in first.model.state_dict().items():
        assert torch.equal(warm.model.state_dict()[name], weight), name
    assert not all(torch.equal(cold.model.state_dict()[n], w) for n, w in first.model.state_dict().items())
    other = {"channels": [4, 8, 16], "num_res_units": 1}
    with pytest.raises(ValueError, match="init_from .* architecture"):
        Trainer(tiny_config(tiny_dataset, init_from=str(path), architecture_args=other), tmp_path / "bad", **quiet)
    with pytest.raises(ValueError, match="identity_stage"):
        tiny_config(tiny_dataset, identity_stage="middle")
    with pytest.raises(ValueError, match="ce_balance applies to seg_loss ce_dice only"):
        tiny_config(tiny_dataset, ce_balance=True, seg_loss="dice_focal")
    with pytest.raises(ValueError, match="seg_target must be one of levels, regions"):
        tiny_config(tiny_dataset, seg_target="letters")
    with pytest.raises(ValueError, match="identity_stage coarse does not apply"):
        tiny_config(tiny_dataset, seg_target="regions", identity_stage="coarse")
    for trainer in (first, warm, cold):
        trainer.close()


def test_level_sizes_of_the_training_data_go_into_a_counting_models_card(tiny_dataset, tmp_path):
    import nibabel as nib

    from spineseg_train.cli import main
    from SpineSegLib.checkpoint import load_checkpoint, save_checkpoint
    from SpineSegLib.labels import load_label_table
    from SpineSegLib.level_sizes import whole_vertebra_volumes
    from SpineSegLib.networks import build_network

    table = load_label_table()
    tiny = {"channels": [4, 8, 16], "num_res_units": 0}
    card = {"name": "counting", "architecture": {"id": "unet3d", "args": tiny},
            "preprocessing": {"stages": {"fine": {"spacing": [3, 3, 3], "patch_size": [32, 32, 32]}}},
            "postprocessing": {"numbering": "levels"}}
    network = build_network("unet3d", 1, table.num_classes, len(table.lesion_classes), **tiny)
    model = save_checkpoint(network, card, tmp_path / "model")
    with pytest.raises(ValueError, match="numbering: regions"):
        main(["level-sizes", "--model", str(model), "--data", str(tiny_dataset)])
    card["postprocessing"]["numbering"] = "regions"
    model = save_checkpoint(network, card, tmp_path / "model")
    assert main(["level-sizes", "--model", str(model), "--data", str(tiny_dataset)]) == 0
    sizes = load_checkpoint(model).card["postprocessing"]["level_sizes"]
    manifest = json.loads((tiny_dataset / "dataset.json").read_text())
    measured = []
    for entry in manifest["cases"]:
        image = nib.load(str(tiny_dataset / entry["labels"]))
        measured.append(whole_vertebra_volumes(np.asarray(image.dataobj), 27.0))
    assert set(sizes["volume_mm3"]) == {name for case in measured for name in case} - {"sacrum"}
    assert sizes["cases"] == 2 and sizes["data"] == [str(tiny_dataset)]
    for name, volume in sizes["volume_mm3"].items():  # two cases: the fit lies between their volumes
        seen = [case[name] for case in measured if name in case]
        assert min(seen) * 0.85 <= volume <= max(seen) * 1.15, (name, volume, seen)

    # Training a counting model writes its own data's profile into the exported card.
    trainer = Trainer(tiny_config(tiny_dataset, seg_target="regions"), tmp_path / "run", log=lambda *a: None)
    exported = trainer.export(tmp_path / "trained", trainer.model_card("test", 0.0, "tiny"))
    trainer.close()
    assert load_checkpoint(exported).card["postprocessing"]["level_sizes"] == sizes
