"""The vertebrae's surfaces refined from the CT on the input grid: fitted, kept in the card, applied."""

import json

import numpy as np
import pytest
from scipy import ndimage, special

from spineseg_train.surface_fit import band_accuracy, band_samples, fit_refinement
from SpineSegLib.checkpoint import CARD_FILE, load_checkpoint
from SpineSegLib.errors import CheckpointError
from SpineSegLib.resources import default_model_path
from SpineSegLib.results import SurfaceInputs
from SpineSegLib.surface_refinement import (
    FEATURES,
    SurfaceRefinement,
    effective_foreground,
    nearest_labels,
    refinements_from_card,
)
from SpineSegLib.volume import Volume

SPACING = (1.0, 1.0, 1.0)
L1 = 20  # label value


def bone_ball(radius_mm: float, drawn_off_mm: float, seed: int, size: int = 40):
    """A ball of bone as a CT shows it (cortex 1000 HU over 1.5 mm, cancellous 200, soft tissue 50, blurred and
    noisy) and as a network draws it: a soft foreground whose surface lies ``drawn_off_mm`` outside the truth."""
    grid = np.indices((size,) * 3, dtype=np.float32) - (size - 1) / 2
    r = np.sqrt((grid ** 2).sum(axis=0))
    truth = r <= radius_mm
    hu = np.where(truth, np.where(r > radius_mm - 1.5, 1000.0, 200.0), 50.0).astype(np.float32)
    hu = ndimage.gaussian_filter(hu, 0.8) + np.random.default_rng(seed).normal(0, 20, hu.shape).astype(np.float32)
    foreground = special.expit((radius_mm + drawn_off_mm - r) / 0.7).astype(np.float32)
    labels = np.where(foreground >= 0.5, L1, 0).astype(np.uint8)
    return truth, SurfaceInputs(labels, foreground, Volume(hu, np.eye(4)), "fine")


def dice(a, b) -> float:
    return 2 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))


@pytest.fixture(scope="module")
def refinement() -> SurfaceRefinement:
    """Fitted on balls the network drew too thick and too thin, as it does vertebrae."""
    samples = [band_samples(inputs, truth.astype(np.uint8), seed=index)
               for index, (truth, inputs) in enumerate(bone_ball(r, off, seed) for seed, (r, off) in
                                                       enumerate([(8, 1.0), (10, -0.8), (12, 0.6), (9, 1.2),
                                                                  (11, -0.5), (13, 0.9)]))]
    return fit_refinement(np.concatenate([s[0] for s in samples]), np.concatenate([s[1] for s in samples]), "fine")


@pytest.mark.parametrize("radius, drawn_off", [(10.5, 1.0), (11.5, -0.7)])
def test_a_surface_drawn_off_is_moved_onto_the_bone_edge(refinement, radius, drawn_off):
    truth, inputs = bone_ball(radius, drawn_off, seed=99)
    before = inputs.labels.copy(), inputs.foreground.copy(), inputs.ct.array.copy()
    refined = refinement.refine(inputs.labels, inputs.foreground, inputs.ct.array, SPACING)
    assert dice(refined == L1, truth) > dice(inputs.labels == L1, truth) + 0.05
    assert dice(refined == L1, truth) > 0.95
    assert set(np.unique(refined)) == {0, L1}
    for kept, given in zip(before, (inputs.labels, inputs.foreground, inputs.ct.array)):
        assert np.array_equal(kept, given)  # the inputs are not modified


def test_band_accuracy_is_reported_against_the_network_alone(refinement):
    truth, inputs = bone_ball(10.0, 1.0, seed=7)
    features, bone = band_samples(inputs, truth.astype(np.uint8))
    assert features.shape[1] == len(FEATURES)
    assert band_accuracy(refinement, features, bone) > band_accuracy(None, features, bone) + 0.1


def test_the_card_holds_the_same_refinement(refinement):
    document = json.loads(json.dumps(refinement.to_card()))
    again = refinements_from_card({"fine": document})["fine"]
    features = np.random.default_rng(0).normal(size=(50, len(FEATURES))).astype(np.float32)
    assert np.allclose(again.logits(features), refinement.logits(features), atol=1e-3)


@pytest.mark.parametrize("change, message", [
    (lambda d: d.update(features=list(FEATURES)[::-1]), "features"),
    (lambda d: d.update(band_mm=0), "band_mm"),
    (lambda d: d.update(sd=[0.0] * len(FEATURES)), "sd must be positive"),
    (lambda d: d["hidden"].update(weights=[[1.0, 2.0]]), "hidden.weights has shape"),
    (lambda d: d["output"].update(bias=float("nan")), "output.bias holds a number that is not finite"),
    (lambda d: d.update(mean="high"), "mean must hold numbers"),
])
def test_a_broken_refinement_is_refused(refinement, change, message):
    document = refinement.to_card()
    change(document)
    with pytest.raises(ValueError, match=message):
        refinements_from_card({"fine": document})
    with pytest.raises(ValueError, match="not a pass"):
        refinements_from_card({"middle": refinement.to_card()})


def test_a_checkpoint_with_a_broken_refinement_is_refused(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    for source in default_model_path().iterdir():
        (model / source.name).write_bytes(source.read_bytes())
    card = json.loads((model / CARD_FILE).read_text())
    card.setdefault("postprocessing", {})["surface_refinement"] = {"fine": {"band_mm": 2.5, "features": ["hu"]}}
    (model / CARD_FILE).write_text(json.dumps(card))
    with pytest.raises(CheckpointError, match="postprocessing.surface_refinement: fine: features"):
        load_checkpoint(model)


def test_the_foreground_agrees_with_what_the_engine_kept():
    background = np.full((6, 6, 6), 0.9, dtype=np.float32)
    background[1:5, 1:5, 1:5] = 0.1  # bone
    background[1:5, 1:5, 3] = 0.7  # a seam the network taught between two vertebrae
    background[5, 5, 5] = 0.2  # a speck the engine dropped
    labels = np.zeros((6, 6, 6), dtype=np.uint8)
    labels[1:5, 1:5, 1:3], labels[1:5, 1:5, 3:5] = 21, 20  # the seam closed: given to the vertebra above it
    foreground = effective_foreground(labels, background)
    assert (foreground[labels > 0] >= 0.5).all()
    assert foreground[5, 5, 5] < 0.5
    assert np.isclose(foreground[0, 0, 0], 0.1)  # untouched where engine and network agree


def test_new_bone_joins_the_nearest_vertebra_within_reach():
    labels = np.zeros((5, 5, 20), dtype=np.uint8)
    labels[:, :, 2:6], labels[:, :, 8:12] = 21, 20
    bone = labels > 0
    bone[:, :, 6] = bone[:, :, 7] = True  # between the two: each side takes its own
    bone[:, :, 18] = True  # 7 mm from every vertebra: not theirs
    bone[:, :, 11] = False  # a voxel layer that stopped being bone
    out = nearest_labels(labels, bone, SPACING, reach_mm=4.0)
    assert (out[:, :, 6] == 21).all() and (out[:, :, 7] == 20).all()
    assert (out[:, :, 18] == 0).all() and (out[:, :, 11] == 0).all()
    assert (out[:, :, 2:6] == 21).all()
