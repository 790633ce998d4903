"""Checkpoints: round trip, and every refusal with a specific message; nothing is ever unpickled."""

import json
import pickle
import shutil
import zipfile

import pytest
import torch

from SpineSegLib.checkpoint import CARD_FILE, WEIGHTS_FILE, load_checkpoint, read_model_card, save_checkpoint
from SpineSegLib.errors import CheckpointError
from SpineSegLib.labels import load_label_table
from SpineSegLib.networks import build_network

TINY = {"channels": [4, 8, 16], "num_res_units": 0}


def tiny_card():
    return {"name": "tiny", "architecture": {"id": "unet3d", "args": TINY},
            "preprocessing": {"intensity_window": [-1000, 1000],
                              "stages": {"coarse": {"spacing": [4, 4, 4], "patch_size": [32, 32, 32]},
                                         "fine": {"spacing": [2, 2, 2], "patch_size": [32, 32, 32]}}}}


@pytest.fixture
def checkpoint(tmp_path):
    table = load_label_table()
    torch.manual_seed(0)
    network = build_network("unet3d", 1, table.num_classes, len(table.lesion_classes), **TINY)
    path = save_checkpoint(network, tiny_card(), tmp_path / "model")
    return path, network


def _edit_card(path, change):
    card = json.loads((path / CARD_FILE).read_text())
    change(card)
    (path / CARD_FILE).write_text(json.dumps(card))


def test_round_trip_gives_identical_outputs(checkpoint):
    path, network = checkpoint
    loaded = load_checkpoint(path)
    x = torch.rand(1, 1, 16, 16, 16)
    network.eval()
    with torch.no_grad():
        assert torch.equal(network(x)["seg"], loaded.network(x)["seg"])
    assert loaded.card["name"] == "tiny" and loaded.card["weights"]["sha256"]


def test_zip_archive_loads(checkpoint, tmp_path):
    path, _ = checkpoint
    archive = tmp_path / "model.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for f in path.iterdir():
            z.write(f, f"model/{f.name}")
    assert load_checkpoint(archive).card["name"] == "tiny"


def test_missing_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nowhere")


def test_missing_card(checkpoint):
    path, _ = checkpoint
    (path / CARD_FILE).unlink()
    with pytest.raises(CheckpointError, match="no model_card.json"):
        load_checkpoint(path)


def test_corrupt_weights_fail_the_checksum(checkpoint):
    path, _ = checkpoint
    data = bytearray((path / WEIGHTS_FILE).read_bytes())
    data[-10:] = b"\x00" * 10
    (path / WEIGHTS_FILE).write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(path)


def test_truncated_weights_without_checksum(checkpoint):
    path, _ = checkpoint
    _edit_card(path, lambda c: c["weights"].pop("sha256"))
    (path / WEIGHTS_FILE).write_bytes((path / WEIGHTS_FILE).read_bytes()[:100])
    with pytest.raises(CheckpointError, match="corrupt or not a safetensors file"):
        load_checkpoint(path)


def test_unknown_architecture(checkpoint):
    path, _ = checkpoint
    _edit_card(path, lambda c: c["architecture"].update(id="resnet9000"))
    with pytest.raises(CheckpointError, match="unknown architecture 'resnet9000'"):
        load_checkpoint(path)


def test_weights_that_do_not_fit_the_architecture(checkpoint):
    path, _ = checkpoint
    _edit_card(path, lambda c: c["architecture"]["args"].update(channels=[4, 8, 32]))
    with pytest.raises(CheckpointError, match="do not fit architecture 'unet3d'.*wrong shape"):
        load_checkpoint(path)


def test_different_label_table(checkpoint):
    path, _ = checkpoint
    _edit_card(path, lambda c: c["labels"].update(fingerprint="0123456789abcdef", values=[1, 2, 3]))
    with pytest.raises(CheckpointError, match="different label table"):
        load_checkpoint(path)


def test_unknown_identity_stage(checkpoint):
    path, _ = checkpoint
    _edit_card(path, lambda card: card.setdefault("postprocessing", {}).update(identity_stage="middle"))
    with pytest.raises(CheckpointError, match="identity_stage 'middle' is not one of fine, coarse"):
        load_checkpoint(path)


@pytest.mark.parametrize("post, message", [
    ({"numbering": "alphabet"}, "numbering 'alphabet' is not one of levels, regions"),
    ({"numbering": "regions", "identity_stage": "coarse"}, "identity_stage 'coarse' does not apply"),
    ({"level_sizes": {"volume_mm3": {"C3": 6000.0}, "log_sd": {"C3": 0.05}}}, "level_sizes weighs in when counting"),
    ({"numbering": "regions", "level_sizes": {"volume_mm3": {"X9": 1.0}, "log_sd": {"X9": 0.1}}},
     "level_sizes: level_sizes names levels the label table lacks: X9"),
    ({"numbering": "regions", "level_sizes": {"volume_mm3": {"C3": -5.0}, "log_sd": {"C3": 0.1}}},
     "volumes must be positive"),
    ({"numbering": "regions", "level_sizes": {"volume_mm3": {"C3": 6000.0}}}, "needs volume_mm3 and log_sd"),
])
def test_unknown_or_conflicting_numbering(checkpoint, post, message):
    path, _ = checkpoint
    _edit_card(path, lambda card: card.setdefault("postprocessing", {}).update(post))
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(path)


def _calibration(**change):
    entry = {"candidate_threshold": 0.05, "threshold": 0.1,
             "classes": {"fracture": [2.0, 0.5], "lytic": [1.5, 1.0], "sclerotic": [2.0, 0.5]}}
    return {"fine": {**entry, **change}}


@pytest.mark.parametrize("calibration, message", [
    ({"middle": _calibration()["fine"]}, "lesion_calibration: 'middle' is not a pass \\(fine, coarse\\)"),
    (_calibration(threshold=1.5), "lesion_calibration: fine: threshold must be a number in \\[0, 1\\], not 1.5"),
    (_calibration(classes={"fracture": [2.0, 0.5]}), "do not match the label table's lesion classes"),
    (_calibration(classes={"fracture": [2.0], "lytic": [1, 1], "sclerotic": [1, 1]}), "two finite numbers"),
    (_calibration(classes={"fracture": [float("nan"), 0], "lytic": [1, 1], "sclerotic": [1, 1]}), "finite"),
    (_calibration(classes={"fracture": [-1.0, 0], "lytic": [1, 1], "sclerotic": [1, 1]}), "slope must be positive"),
    (_calibration(size_scale={"metal": 2.0}), "size_scale names 'metal', not a lesion class"),
    (_calibration(size_scale={"lytic": 0.0}), "size_scale.lytic must be a positive number"),
])
def test_a_lesion_calibration_that_does_not_fit_is_refused(checkpoint, calibration, message):
    path, _ = checkpoint
    _edit_card(path, lambda card: card.setdefault("postprocessing", {}).update(lesion_calibration=calibration))
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(path)


def test_newer_format_version(checkpoint):
    path, _ = checkpoint
    _edit_card(path, lambda c: c.update(format_version=99))
    with pytest.raises(CheckpointError, match="version 99 is newer"):
        read_model_card(path)


class _RunsCode:
    """Unpickling this creates a marker file: proof that code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("where", ["pt_file", "disguised_as_safetensors"])
def test_pickle_payload_never_runs(checkpoint, tmp_path, where):
    path, _ = checkpoint
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"state_dict": _RunsCode(marker)})
    if where == "pt_file":
        target = tmp_path / "evil.pt"
        target.write_bytes(payload)
        with pytest.raises(CheckpointError, match="refuses to unpickle"):
            load_checkpoint(target)
    else:
        (path / WEIGHTS_FILE).write_bytes(payload)
        _edit_card(path, lambda c: c["weights"].pop("sha256"))
        with pytest.raises(CheckpointError, match="corrupt or not a safetensors file"):
            load_checkpoint(path)
    assert not marker.exists()


def test_zip_with_unsafe_paths_is_refused(checkpoint, tmp_path):
    path, _ = checkpoint
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.write(path / CARD_FILE, "../model_card.json")
    with pytest.raises(CheckpointError, match="unsafe path"):
        load_checkpoint(archive)


def test_save_is_atomic_and_replaces_old(checkpoint):
    path, network = checkpoint
    shutil.copy(path / CARD_FILE, path.parent / "old_card.json")
    save_checkpoint(network, {**tiny_card(), "name": "tiny-2"}, path)
    assert read_model_card(path)["name"] == "tiny-2"
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]
