"""Lesion calibration: per-class scores fitted on tuning cases put every class on one scale, and the card's
calibration is what the segmenter and the evaluation then use."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from protocol_fixtures import domain_dataset, tiny_checkpoint

from spineseg_train.lesion_calibration import fit_calibration
from spineseg_train.metrics import recall_at_fp_per_scan
from SpineSegLib.checkpoint import CARD_FILE, load_checkpoint
from SpineSegLib.labels import load_label_table
from SpineSegLib.lesion_scores import LesionCalibration

CLASSES = load_label_table().lesion_class_names
MATCHING = {"iou_threshold": 0.0, "max_center_distance_mm": 10.0}


def _lesion(cls, x, peak=None, size_mm=8.0):
    lesion = {"class": cls, "center_ras": [float(x), 0.0, 0.0], "size_mm": size_mm}
    return lesion if peak is None else {**lesion, "peak": peak, "score": peak}


def _over_calling_fractures(scans=12):
    """Each scan: one sclerotic lesion the network finds with a modest peak (and draws half its size), two normal
    vertebrae it calls fractured with higher peaks, and now and then a real fracture with a high one (its vertebra
    measured a quarter larger than the body)."""
    rng = np.random.default_rng(0)
    pairs = []
    for scan in range(scans):
        references = [_lesion("sclerotic", 0)]
        false_alarms = [_lesion("fracture", x, rng.uniform(0.35, 0.5)) for x in (100, 200)]
        predictions = [_lesion("sclerotic", 1, rng.uniform(0.25, 0.35), 4.0), *false_alarms]
        if scan % 3 == 0:
            references.append(_lesion("fracture", 300, size_mm=40.0))
            predictions.append(_lesion("fracture", 301, rng.uniform(0.6, 0.8), 50.0))
        pairs.append((predictions, references))
    return pairs


def test_the_calibration_ranks_an_over_calling_class_below_the_others():
    pairs = _over_calling_fractures()
    calibration, report = fit_calibration(pairs, CLASSES, "fine")
    assert calibration.score("sclerotic", 0.3) > calibration.score("fracture", 0.4)
    assert calibration.score("fracture", 0.7) > calibration.score("fracture", 0.4)  # a higher peak still ranks higher
    assert calibration.classes["lytic"] == pytest.approx((1.0, 0.0), abs=1e-3)  # never seen: raw peaks kept
    assert report["detections"] == {"fracture": 28, "lytic": 0, "sclerotic": 12}
    assert report["hits"] == {"fracture": 4, "lytic": 0, "sclerotic": 12}
    assert calibration.size_scale == pytest.approx({"fracture": 0.8, "sclerotic": 2.0})  # lytic: nothing to go by
    assert calibration.size_mm("lytic", 5.0) == 5.0
    # Raw, the fractures' false alarms fill the allowance of one per scan before any sclerotic hit; calibrated,
    # every lesion is found within it.
    assert report["recall_raw"] == pytest.approx(4 / 16)
    assert report["recall_calibrated"] == 1.0
    listed = [([les for les in preds if calibration.score(les["class"], les["peak"]) >= calibration.threshold], refs)
              for preds, refs in pairs]
    false_alarms = sum(len(preds) for preds, _ in listed) - 16
    assert false_alarms <= len(pairs)
    assert recall_at_fp_per_scan(listed, 1.0, **MATCHING) == 1.0


def test_cases_without_lesions_cannot_calibrate():
    with pytest.raises(ValueError, match="hold no lesions"):
        fit_calibration([([_lesion("fracture", 0, 0.5)], [])], CLASSES, "fine")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return domain_dataset(tmp_path_factory.mktemp("tuning") / "data", per_domain=1, domains=("siteA", "siteB"))


def test_a_model_without_heatmap_peaks_cannot_calibrate(data, tmp_path):
    from spineseg_train.cli import main

    model = tiny_checkpoint(tmp_path / "model", 0, "tiny")  # random weights: its heatmap stays near zero
    before = (model / CARD_FILE).read_bytes()
    with pytest.raises(SystemExit, match="calibrate-lesions: the model found no heatmap peak of 0.05"):
        main(["calibrate-lesions", "--model", str(model), "--data", str(data), "--fast", "--device", "cpu"])
    assert (model / CARD_FILE).read_bytes() == before


def test_calibrate_lesions_writes_a_card_the_segmenter_and_the_evaluation_use(data, tmp_path):
    from spineseg_train.cli import main
    from spineseg_train.evaluate import evaluate
    from SpineSegLib.inference import Segmenter
    from SpineSegLib.resources import default_model_path

    model = shutil.copytree(default_model_path(), tmp_path / "model")
    bundled = json.loads((model / CARD_FILE).read_text())["postprocessing"]["lesion_calibration"]
    assert main(["calibrate-lesions", "--model", str(model), "--data", str(data), "--fast", "--device", "cpu"]) == 0
    written = json.loads((model / CARD_FILE).read_text())["postprocessing"]["lesion_calibration"]
    assert written["coarse"]["fitted_on"]["cases"] == 2 and written["coarse"] != bundled["coarse"]
    assert written["fine"] == bundled["fine"]  # the other pass's calibration stays as it was
    load_checkpoint(model)  # the card still passes every check
    calibration = LesionCalibration.from_card("coarse", written["coarse"], load_label_table())
    assert Segmenter(model, device="cpu", fast=True).lesion_rule("coarse") == (calibration, calibration.threshold)
    quiet = {"log": lambda *_: None}
    report = evaluate(model, data=str(data), device="cpu", fast=True, **quiet)
    assert report["lesion_scores"] == "calibrated" and report["lesion_threshold"] == calibration.threshold
    # a pass without a calibration lists raw peaks from the card's lesion_threshold
    card = json.loads((model / CARD_FILE).read_text())
    del card["postprocessing"]["lesion_calibration"]["fine"]
    (model / CARD_FILE).write_text(json.dumps(card))
    assert Segmenter(model, device="cpu").lesion_rule("fine") == (None, card["postprocessing"]["lesion_threshold"])
