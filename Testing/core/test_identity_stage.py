"""The segmenter's two passes with ``identity_stage: coarse``: the coarse pass, which sees the whole column, names
the vertebrae; the fine pass gives their shape. The network's outputs are replaced by probabilities made from the
image, so the test checks the wiring (grids, crops, projections), not a trained model."""

import numpy as np
import pytest
import torch
from scipy import ndimage

from SpineSegLib.checkpoint import save_checkpoint
from SpineSegLib.inference import Segmenter
from SpineSegLib.labels import load_label_table
from SpineSegLib.networks import build_network
from SpineSegLib.volume import Volume

TABLE = load_label_table()
LUT = TABLE.value_to_class_lut()
NAMES = ["L1", "L2", "L3"]  # top to bottom
# Three bone blocks along S (k runs superior on this RAS grid), top first.
BLOCKS = [(slice(22, 42), slice(22, 42), slice(k, k + 22)) for k in (78, 46, 14)]


@pytest.fixture
def column():
    ct = np.full((64, 64, 112), -1000.0, dtype=np.float32)
    for block in BLOCKS:
        ct[block] = 800.0
    return Volume(ct, np.diag([1.0, 1.0, 1.0, 1.0]))


def _segmenter(tmp_path, identity_stage):
    tiny = {"channels": [4, 8, 16], "num_res_units": 0}
    card = {"name": "wiring", "architecture": {"id": "unet3d", "args": tiny},
            "preprocessing": {"intensity_window": [-1000, 1000],
                              "stages": {"coarse": {"spacing": [4, 4, 4], "patch_size": [32, 32, 32]},
                                         "fine": {"spacing": [1.5, 1.5, 1.5], "patch_size": [32, 32, 32]}}},
            "postprocessing": {"identity_stage": identity_stage, "min_vertebra_mm3": 100.0}}
    network = build_network("unet3d", 1, TABLE.num_classes, len(TABLE.lesion_classes), **tiny)
    segmenter = Segmenter(save_checkpoint(network, card, tmp_path / identity_stage), device="cpu")

    def predict(image: torch.Tensor, stage: dict, progress):
        """Coarse: each bone block (grown by a voxel) named by its height; fine: all bone called sacrum."""
        bone = image[0].numpy() > 0.75
        probs = np.zeros((TABLE.num_classes, *bone.shape), dtype=np.float32)
        if stage is segmenter.stages["coarse"]:
            parts, count = ndimage.label(ndimage.binary_dilation(bone))
            heights = ndimage.center_of_mass(bone, parts, range(1, count + 1))
            for rank, part in enumerate(np.argsort([-h[2] for h in heights]), start=0):
                probs[LUT[TABLE.by_name(NAMES[rank]).value]][parts == part + 1] = 1.0
        else:
            probs[LUT[TABLE.by_name("sacrum").value]][bone] = 1.0
        probs[0] = 1.0 - probs[1:].sum(axis=0)
        progress(1.0, "")
        return probs, np.zeros((len(TABLE.lesion_classes), *bone.shape), dtype=np.float32)

    segmenter._predict = predict
    return segmenter


def test_the_coarse_pass_names_the_vertebrae_and_the_fine_pass_shapes_them(column, tmp_path):
    labels = _segmenter(tmp_path, "coarse")(column).labels.array
    for block, name in zip(BLOCKS, NAMES):
        truth = np.zeros(labels.shape, dtype=bool)
        truth[block] = True
        predicted = labels == TABLE.by_name(name).value
        dice = 2 * (predicted & truth).sum() / (predicted.sum() + truth.sum())
        assert dice > 0.9, (name, dice)  # the coarse label was a 4 mm voxel larger all round: the fine pass cut it


def test_with_fine_identity_the_coarse_names_are_not_used(column, tmp_path):
    labels = _segmenter(tmp_path, "fine")(column).labels.array
    named = {TABLE.by_value(int(v)).name for v in np.unique(labels) if v}
    assert len(named) == 3 and named != set(NAMES)  # numbered from the fine pass's "sacrum" up instead
