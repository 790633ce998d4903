"""Fitting a surface refinement on tuning cases (``spineseg-train fit-surface``): the card it writes is what the
segmenter then uses, and the fit refuses cases it cannot learn from."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from protocol_fixtures import domain_dataset

from spineseg_train.surface_fit import fit_refinement
from SpineSegLib.checkpoint import CARD_FILE, load_checkpoint
from SpineSegLib.surface_refinement import FEATURES


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return domain_dataset(tmp_path_factory.mktemp("tuning") / "data", per_domain=1, domains=("siteA", "siteB"))


def test_fit_surface_writes_a_card_the_segmenter_uses(data, tmp_path):
    from spineseg_train.cli import main
    from SpineSegLib.inference import Segmenter
    from SpineSegLib.resources import default_model_path

    model = shutil.copytree(default_model_path(), tmp_path / "model")
    card = json.loads((model / CARD_FILE).read_text())
    card["postprocessing"]["surface_refinement"].pop("coarse", None)
    (model / CARD_FILE).write_text(json.dumps(card))
    bundled = card["postprocessing"]["surface_refinement"]
    assert main(["fit-surface", "--model", str(model), "--data", str(data), "--fast", "--device", "cpu"]) == 0
    written = json.loads((model / CARD_FILE).read_text())["postprocessing"]["surface_refinement"]
    assert written["fine"] == bundled["fine"]  # the other pass's refinement stays as it was
    report = written["coarse"]["fitted_on"]
    assert (report["cases"], report["fitted_cases"], report["held_out_cases"]) == (2, 1, 1)
    assert report["samples"] > 1000 and written["coarse"]["features"] == list(FEATURES)
    load_checkpoint(model)  # the card still passes every check
    result = Segmenter(model, device="cpu", fast=True)(first_ct(data))
    assert result.report["surfaces"] == "refined from the CT"


def first_ct(data):
    from spineseg_train.dataset import load_dataset

    return next(iter(load_dataset(str(data)))).ct


def test_a_dry_run_leaves_the_card_as_it_is(data, tmp_path):
    from spineseg_train.cli import main
    from SpineSegLib.resources import default_model_path

    model = shutil.copytree(default_model_path(), tmp_path / "model")
    before = (model / CARD_FILE).read_bytes()
    assert main(["fit-surface", "--model", str(model), "--data", str(data), "--fast", "--device", "cpu",
                 "--dry-run"]) == 0
    assert (model / CARD_FILE).read_bytes() == before


def test_a_band_of_one_kind_cannot_be_fitted():
    features = np.zeros((100, len(FEATURES)), dtype=np.float32)
    with pytest.raises(ValueError, match="only bone or only background"):
        fit_refinement(features, np.ones(100, dtype=bool), "fine")
    with pytest.raises(ValueError, match="no voxels"):
        fit_refinement(features[:0], np.zeros(0, dtype=bool), "fine")
