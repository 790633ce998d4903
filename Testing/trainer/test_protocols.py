"""Evaluation protocols end to end on phantom "domains" (scanners simulated by intensity scaling, noise and slice
thickness) with tiny random-weight checkpoints: the evaluate report, robustness, test-time adaptation,
domain-code noise and leave-one-domain-out; plus the perturbations and the per-region summary."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image
from protocol_fixtures import domain_dataset, phantom, tiny_checkpoint, tiny_vertebraformer

from spineseg_train.dataset import load_dataset, read_manifest
from spineseg_train.metrics import pooled_region_means, region_means
from spineseg_train.protocols import perturbations as P
from spineseg_train.protocols.cases import evaluation_cases
from spineseg_train.protocols.report import CASE_COLUMNS, FIGURES
from SpineSegLib.volume import Volume

BOOTSTRAP = 200
QUIET = {"log": lambda *a, **k: None}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One torch thread: on a shared CPU, more threads only contend (the tiny networks gain nothing from them)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return domain_dataset(tmp_path_factory.mktemp("domains") / "data", per_domain=2)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return [tiny_checkpoint(root / "a", 0, "tiny-a"), tiny_checkpoint(root / "b", 1, "tiny-b")]


def _png_ok(path) -> None:
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.format == "PNG" and min(image.size) > 100


# --- perturbations and regions ----------------------------------------------------------------------------------
def test_perturbations():
    p = phantom(40, lesions=0)
    ct = p.ct
    assert np.allclose(P.hu_scale(ct, 1.15).array, np.clip(ct.array * 1.15, -1024, 3071), atol=0.01)
    noisy = P.noise(ct, 40.0, seed=3)
    assert np.array_equal(noisy.array, P.noise(ct, 40.0, seed=3).array)
    assert abs(float(np.std(noisy.array - ct.array)) - 40.0) < 2.0
    # thick slices act along the superior-inferior axis only, wherever it is stored
    assert P.superior_axis(ct.affine) == 2
    assert np.array_equal(P.thick_slices(ct, 2.0).array, ct.array)  # already 3 mm slices
    step = np.zeros((8, 8, 30), dtype=np.float32)
    step[..., 15:] = 1000.0
    along_k = P.thick_slices(Volume(step, np.diag([1.0, 1.0, 1.0, 1.0])), 5.0).array
    assert np.allclose(along_k, along_k[:1, :1, :])  # no change within a slice
    assert 0 < along_k[0, 0, 14] < 1000 and along_k[0, 0, 0] == 0 and along_k[0, 0, 29] == 1000
    swapped = np.diag([1.0, 1.0, 1.0, 1.0])[[2, 1, 0, 3]]  # i runs along S
    assert P.superior_axis(swapped) == 0
    assert np.array_equal(P.thick_slices(Volume(step, swapped), 5.0).array, step)  # k is now left-right
    operator = P.thick_slice_operator(17, 2.5)
    assert np.allclose(np.asarray(operator.sum(axis=1)).ravel(), 1.0)
    centre = P.spine_centre(p.labels)
    with_metal = P.metal(ct, centre, seed=1)
    assert (with_metal.array >= 3000).sum() > 10
    changed = np.flatnonzero(np.abs(with_metal.array - ct.array).max(axis=(0, 1)) > 0)
    z = ct.affine[2, 2] * changed + ct.affine[2, 3]
    assert np.all(np.abs(z - centre[2]) <= 12 + 3)  # only the slices the screws cross


def test_region_means():
    values = {1: 0.9, 2: 0.7, 8: 0.5, 20: 0.8, 21: float("nan"), 26: 0.2}
    assert region_means(values) == pytest.approx({"cervical": 0.8, "thoracic": 0.5, "lumbar": 0.8,
                                                  "sacral": 0.2})
    records = [{"label": 20, "dice": 0.5}, {"label": 21, "dice": 1.0}, {"label": 28, "dice": 0.3}]
    pooled = pooled_region_means(records)
    assert pooled["lumbar"] == 0.75 and pooled["thoracic"] == 0.3 and np.isnan(pooled["cervical"])


# --- evaluate --report --------------------------------------------------------------------------------------------
def test_evaluate_report_of_two_models_with_baseline(data, models, tmp_path):
    from spineseg_train.cli import main

    report = tmp_path / "report"
    assert main(["evaluate", "--model", str(models[0]), "--model", str(models[1]), "--baseline", str(models[0]),
                 "--data", str(data), "--report", str(report), "--bootstrap", str(BOOTSTRAP), "--fast",
                 "--device", "cpu"]) == 0
    for name in ("report.json", "report.md", "cases.csv", *FIGURES.values()):
        assert (report / name).is_file(), name
    for figure in FIGURES.values():
        _png_ok(report / figure)
    with open(report / "cases.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    header = list(rows[0])
    assert header[: len(CASE_COLUMNS) + 1] == ["model", *CASE_COLUMNS] and "dice_L1" in header and "dice_C1" in header
    assert len(rows) == 2 * 6 and {r["model"] for r in rows} == {"tiny-a", "tiny-b"}
    assert {r["domain"] for r in rows} == {"siteA", "siteB", "siteC"}
    document = json.loads((report / "report.json").read_text())
    summary = document["summaries"]["tiny-b"]
    dice = summary["mean_vertebra_dice"]
    assert dice["n_patients"] == 6 and dice["n"] == sum(int(r["vertebrae_ref"]) for r in rows if r["model"] == "tiny-b")
    assert dice["low"] is None or dice["low"] <= dice["estimate"] <= dice["high"]
    assert set(summary["dice_by_region"]) == {"lumbar", "sacral"} and set(summary["dice_by_domain"]) == {
        "siteA", "siteB", "siteC"}
    assert {"ap", "froc_at_1fp", "froc_at_4fp", "mAP_class_aware"} <= set(summary["lesions"])
    comparisons = document["comparisons"]
    assert {c["metric"] for c in comparisons} == {"mean_vertebra_dice", "identification_rate", "hd95_mm"}
    assert all(c["condition"] == "tiny-b" and c["reference"] == "tiny-a" and "p_holm" in c for c in comparisons)
    markdown = (report / "report.md").read_text()
    assert "Paired comparison with tiny-a" in markdown and "![domain_heatmap](domain_heatmap.png)" in markdown
    with pytest.raises(SystemExit, match="--report"):
        main(["evaluate", "--model", str(models[0]), "--model", str(models[1]), "--data", str(data)])


def test_plain_evaluation_keeps_its_summary(data, models):
    from spineseg_train.evaluate import evaluate_cases
    from SpineSegLib.inference import Segmenter

    result = evaluate_cases(Segmenter(models[0], device="cpu", fast=True), load_dataset(data)[:1], **QUIET)
    assert {"cases", "mean_vertebra_dice", "identification_rate", "lesion_recall_at_1fp",
            "lesion_recall_at_1fp_strict", "mean_seconds", "mean_instance_dice", "spine_dice"} <= set(result["summary"])
    summary = result["summary"]
    assert summary["mean_vertebra_dice"] <= summary["mean_instance_dice"] <= 1.0  # a named match is a match
    assert set(result["summary"]["dice_by_region"]) == {"cervical", "thoracic", "lumbar", "sacral"}


def test_evaluation_can_try_another_lesion_threshold(data, models, tmp_path):
    """Tuning the card's lesion threshold: the evaluation runs with another one and says which score gives at
    most one false positive per scan; it will not record such a run in the card."""
    from spineseg_train.cli import main
    from spineseg_train.evaluate import evaluate

    quiet = {"log": lambda *_: None}
    none = evaluate(models[0], data=str(data), device="cpu", fast=True, lesion_threshold=1.01, **quiet)
    every = evaluate(models[0], data=str(data), device="cpu", fast=True, lesion_threshold=0.0, **quiet)
    assert none["lesion_threshold"] == 1.01 and all(c["lesions_pred"] == 0 for c in none["cases"])
    assert sum(c["lesions_pred"] for c in every["cases"]) > 0
    assert "lesion_score_at_1fp" in every["summary"]
    with pytest.raises(SystemExit, match="without --lesion-threshold"):
        main(["evaluate", "--model", str(models[0]), "--data", str(data), "--lesion-threshold", "0.1",
              "--update-card"])


# --- robustness -------------------------------------------------------------------------------------------------
def test_robustness_protocol(data, models, tmp_path):
    from spineseg_train.cli import main
    from spineseg_train.protocols.robustness import parse_perturbation

    assert main(["protocol", "robustness", "--model", str(models[0]), "--data", str(data), "--limit", "2",
                 "--report", str(tmp_path), "--perturb", "hu_scale:0.7", "--perturb", "thick:5", "--perturb", "metal",
                 "--fast", "--device", "cpu", "--bootstrap", str(BOOTSTRAP), "--no-surface"]) == 0
    document = json.loads((tmp_path / "report.json").read_text())
    assert list(document["summaries"]) == ["clean", "HU x0.7", "thick 5 mm", "metal"]
    assert document["summaries"]["clean"]["cases"] == 2
    assert {c["condition"] for c in document["comparisons"]} == {"HU x0.7", "thick 5 mm", "metal"}
    assert all(c["reference"] == "clean" for c in document["comparisons"])
    assert "lumbar" in document["summaries"]["metal"]["dice_by_region"]
    assert "## Dice by spinal region" in (tmp_path / "report.md").read_text()
    _png_ok(tmp_path / "region_heatmap.png")
    with pytest.raises(ValueError, match="unknown perturbation"):
        parse_perturbation("blur:2")


# --- test-time adaptation -----------------------------------------------------------------------------------------
def test_tta_protocol_adain_and_tent_skipped_for_unet(data, models, tmp_path):
    import shutil

    from spineseg_train.cli import main
    from spineseg_train.protocols.tta import adain, body_statistics, intensity_statistics

    stats = intensity_statistics(evaluation_cases(data, domains=["siteA"]))
    assert stats["voxels"] > 0 and 0 < stats["std"] < 1000
    case = load_dataset(data)[2]  # siteB: HU x1.15 and noise
    adapted = adain(case.ct, stats)
    total, squares, count = body_statistics(adapted.array)
    assert abs(total / count - stats["mean"]) < 15  # the body set moves a little with the mapping
    model = shutil.copytree(models[0], tmp_path / "model")
    assert main(["protocol", "tta", "--model", str(model), "--data", str(data), "--limit", "2", "--report",
                 str(tmp_path / "tta"), "--stats-from", str(data), "--record-stats", "--fast", "--device", "cpu",
                 "--bootstrap", str(BOOTSTRAP), "--no-surface"]) == 0
    card = json.loads((model / "model_card.json").read_text())
    assert card["preprocessing"]["intensity_stats"]["voxels"] > stats["voxels"]  # all three domains
    document = json.loads((tmp_path / "tta" / "report.json").read_text())
    assert list(document["summaries"]) == ["none", "adain"]
    assert [c["condition"] for c in document["comparisons"]][:1] == ["adain"]
    notes = " ".join(document["notes"])
    assert "TENT skipped" in notes and "affine=False" in notes and "InstanceNorm3d (no affine) × 4" in notes
    assert document["extra"]["norm_layers"] == {"InstanceNorm3d (no affine)": 4}


@pytest.fixture(scope="module")
def vertebraformer(tmp_path_factory):
    return tiny_vertebraformer(tmp_path_factory.mktemp("vf") / "model", ["siteA", "siteB"])


def test_tent_updates_only_normalisation_affines(data, vertebraformer):
    from spineseg_train.protocols.tta import affine_norm_parameters, tent_adapt
    from SpineSegLib.checkpoint import load_checkpoint

    model = load_checkpoint(vertebraformer)
    before = {k: v.clone() for k, v in model.network.state_dict().items()}
    case = load_dataset(data)[0]
    adapted, losses = tent_adapt(model, case.ct, steps=2, lr=1e-2)
    assert len(losses) == 2 and all(np.isfinite(losses))
    norm_ids = {id(p) for p in affine_norm_parameters(adapted)}
    names = {n for n, p in adapted.named_parameters() if id(p) in norm_ids}
    assert names and all("norm" in n for n in names)
    after = adapted.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and changed <= names
    assert all(torch.equal(before[k], v) for k, v in model.network.state_dict().items())  # episodic: a copy


def test_domain_code_protocol(data, vertebraformer, models, tmp_path):
    from spineseg_train.protocols.domain_codes import DomainCoded, code_assignments, domain_codes
    from SpineSegLib.checkpoint import load_checkpoint

    network = load_checkpoint(vertebraformer).network.eval()
    wrapped, x = DomainCoded(network), torch.rand(1, 1, 32, 32, 32)
    with torch.no_grad():
        outputs = {}
        for code in (None, 0, 1):
            wrapped.code = code
            outputs[code] = wrapped(x)["seg"]
        assert torch.equal(outputs[None], network(x)["seg"])  # no code: the classifier's mix, as the engine runs
        assert not torch.allclose(outputs[0], outputs[1])  # the code reaches the network

    plans = code_assignments([0, 1, 0, 1, 0, 1, 0, 1, 0, 1], 2, (0.1, 0.2, 0.3), seed=0)
    true = plans["true codes"]
    wrong = {name: sum(a != b for a, b in zip(codes, true)) for name, codes in plans.items()}
    assert wrong["10% wrong"] == 1 and wrong["20% wrong"] == 2 and wrong["30% wrong"] == 3
    assert wrong["swapped codes"] == 10
    cases = [c for c in evaluation_cases(data) if c.case_id.endswith(("500", "502", "504"))]  # one per domain
    document = domain_codes(vertebraformer, cases, tmp_path, [0.5], device="cpu", fast=True,
                            n_resamples=BOOTSTRAP, surface=False, **QUIET)
    assert list(document["summaries"]) == ["true codes", "50% wrong", "random codes", "swapped codes", "inferred"]
    assert document["summaries"]["true codes"]["cases"] == 2  # siteC is not one of the model's domains
    assert any("siteC" in note for note in document["notes"])
    assert document["extra"]["plans"]["swapped codes"] == ["siteB", "siteA"]
    with pytest.raises(ValueError, match="no domain modulation"):
        domain_codes(models[0], cases, tmp_path / "unet", device="cpu", **QUIET)


# --- leave one domain out -------------------------------------------------------------------------------------------
def test_leave_one_domain_out(data, tmp_path):
    from tiny_training import tiny_config

    from spineseg_train.cli import main
    from spineseg_train.protocols.lodo import train_fold

    config = tiny_config(data, steps=1, batch_size=1, coarse_spacing=4.0, warmup_steps=1)
    config.to_yaml(tmp_path / "tiny.yaml")
    out = tmp_path / "lodo"
    assert main(["protocol", "lodo", "--config", str(tmp_path / "tiny.yaml"), "-o", str(out), "--held-out-only",
                 "--fast", "--device", "cpu", "--bootstrap", str(BOOTSTRAP), "--no-surface"]) == 0
    for domain in ("siteA", "siteB", "siteC"):
        view = read_manifest(out / "folds" / domain / "data0")
        assert len(view["cases"]) == 4 and domain not in {e["domain"] for e in view["cases"]}
        assert (out / "folds" / domain / "model" / "model_card.json").is_file()
    document = json.loads((out / "report" / "report.json").read_text())
    rows = document["tables"]["Leave-one-domain-out"]
    assert [r["held-out domain"] for r in rows] == ["siteA", "siteB", "siteC"]
    assert all(r["test cases"] == 2 for r in rows)
    assert set(document["summaries"]["without siteB"]["dice_by_domain"]) == {"siteB"}  # held-out cases only
    assert "| held-out domain |" in (out / "report" / "report.md").read_text()
    _png_ok(out / "report" / "domain_heatmap.png")
    messages = []
    train_fold(config, out / "folds" / "siteA", log=messages.append)  # an exported fold is not retrained
    assert messages == ["siteA: model already exported, not retrained"]


# --- the statistics of a report, on synthetic scores -------------------------------------------------------------
def _synthetic(offset: float, rng) -> list:
    from spineseg_train.protocols.scoring import CaseScore

    scores = []
    for patient in range(12):
        dice = np.clip(0.8 + 0.05 * rng.standard_normal(3) + offset, 0, 1)
        vertebrae = [{"label": label, "name": name, "region": "lumbar", "dice": float(d), "identified": d > 0.8,
                      "id_correct": d > 0.8, "localisation_mm": 2.0, "hd95_mm": 5 - 10 * offset, "assd_mm": 1.0}
                     for label, name, d in zip((20, 21, 22), ("L1", "L2", "L3"), dice)]
        refs = [{"center_ras": [0.0, 0.0, 10.0 * patient], "size_mm": 10.0, "class": "lytic"}]
        preds = [{"center_ras": [0.5, 0.0, 10.0 * patient], "size_mm": 10.0, "class": "lytic",
                  "score": float(rng.uniform(0.5, 1.0))},
                 {"center_ras": [40.0, 0.0, 10.0 * patient], "size_mm": 10.0, "class": "lytic",
                  "score": float(rng.uniform(0.0, 0.7))}] if patient % 3 else []
        row = {"condition": "", "case": f"c{patient}", "patient": f"p{patient}", "domain": "ab"[patient % 2],
               "source": "synthetic", "seconds": 0.1, "mean_dice": float(np.mean(dice)), "vertebrae_ref": 3}
        scores.append(CaseScore(row, vertebrae, preds, refs))
    return scores


def test_report_statistics_and_figures_on_synthetic_scores(tmp_path):
    from spineseg_train.metrics import evaluate_lesions, pooled_ranking
    from spineseg_train.protocols.report import write_report
    from spineseg_train.protocols.summary import pooled_from_parts, scan_rankings

    rng = np.random.default_rng(0)
    results = {"baseline": _synthetic(0.0, rng), "better": _synthetic(0.1, np.random.default_rng(0))}
    for name, scores in results.items():
        for s in scores:
            s.row["condition"] = name
    scores = results["baseline"]
    pooled = pooled_from_parts(scan_rankings(scores))  # the bootstrap's pooling = the metrics' pooled ranking
    reference = pooled_ranking([(s.lesions_pred, s.lesions_ref) for s in scores], class_aware=False)
    for key in ("scores", "tp", "fp"):
        assert np.array_equal(pooled[key], reference[key])
    document = write_report(tmp_path, "synthetic", results, reference="baseline", n_resamples=500, seed=1)
    summary = document["summaries"]["baseline"]
    lesions = evaluate_lesions([(s.lesions_pred, s.lesions_ref) for s in scores])
    assert summary["lesions"]["ap"]["estimate"] == pytest.approx(lesions["class_agnostic"]["ap"])
    assert summary["lesions"]["froc_at_1fp"]["estimate"] == pytest.approx(lesions["froc"]["class_agnostic"][1.0])
    for entry in (summary["mean_vertebra_dice"], summary["lesions"]["ap"], summary["hd95_mm"]):
        assert entry["low"] <= entry["estimate"] <= entry["high"]
    dice = {c["metric"]: c for c in document["comparisons"]}["mean_vertebra_dice"]
    assert dice["median_difference"] == pytest.approx(0.1, abs=0.02) and dice["significant"]
    assert dice["p_holm"] == pytest.approx(dice["p"])  # one comparison per metric: Holm changes nothing
    _png_ok(tmp_path / "precision_recall.png")
    _png_ok(tmp_path / "dice_per_vertebra.png")
