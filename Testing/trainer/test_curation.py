"""Curation: the perceptual hash finds planted near-duplicates, groups follow patients, studies and duplicates,
splits never put one patient in two sets and roughly keep 60/20/20 per domain and pathology."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
from protocol_fixtures import phantom, scanner

from spineseg_train.curation import curate
from spineseg_train.curation.phash import hamming_matrix, near_duplicate_pairs, perceptual_hash
from spineseg_train.curation.splits import stratified_split
from spineseg_train.dataset import Case, add_case, read_manifest
from spineseg_train.datasets import read_splits
from SpineSegLib.volume import Volume

PER_DOMAIN = 8


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """2 domains × 8 phantoms (every other with lesions), plus: a noisy copy of siteA_600 under another patient id,
    a second scan of patient_603, and two scans sharing a DICOM study."""
    root = tmp_path_factory.mktemp("curation") / "data"
    seed = 600
    for domain in ("siteA", "siteB"):
        for index in range(PER_DOMAIN):
            p = phantom(seed, lesions=1 if index % 2 == 0 else 0)
            meta = {"source": "phantom", "patient": f"patient_{seed}", "domain": domain}
            if seed in (606, 614):
                meta["study_uid"] = "1.2.840.99"
            add_case(root, Case(f"{domain}_{seed}", scanner(p.ct, domain, seed), p.labels, p.lesions, meta))
            seed += 1
    original = phantom(600, lesions=1)
    rng = np.random.default_rng(1)
    noisy = Volume(np.round(original.ct.array + rng.normal(0, 10, original.ct.shape)), original.ct.affine)
    add_case(root, Case("copy_of_siteA_600", noisy, original.labels, original.lesions,
                        {"source": "phantom", "patient": "someone_else", "domain": "siteA"}))
    second = phantom(650, lesions=0)
    add_case(root, Case("siteA_603_rescan", second.ct, second.labels, [],
                        {"source": "phantom", "patient": "patient_603", "domain": "siteA"}))
    return root


def test_hash_properties():
    a, b = phantom(600, lesions=0), phantom(601, lesions=0)
    ha, hb = perceptual_hash(a.ct), perceptual_hash(b.ct)
    assert ha.size == 512 and ha.dtype == bool
    assert (ha != hb).sum() >= 5  # two patients (phantoms are the most alike volumes there are)
    rescaled = Volume(a.ct.array * 1.1 + 20, a.ct.affine)  # another calibration: same hash
    assert (perceptual_hash(rescaled) == ha).all()
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])  # the same volume stored LPS: flipped i and j
    flip[:2, 3] = np.array(a.ct.shape[:2]) - 1
    lps = Volume(a.ct.array[::-1, ::-1, :], a.ct.affine @ flip)
    assert np.allclose(lps.voxel_to_ras([0, 0, 0]), a.ct.voxel_to_ras([47, 47, 0]))
    assert (perceptual_hash(lps) == ha).all()
    distances = hamming_matrix(np.array([ha, hb, ha]))
    assert distances[0, 2] == 0 and distances[0, 1] == distances[1, 0]
    assert near_duplicate_pairs(np.array([ha, hb, ha])) == [(0, 2, 0)]


def test_curation_finds_duplicates_and_keeps_patients_in_one_split(dataset, tmp_path):
    before = json.loads((dataset / "dataset.json").read_text())
    report = curate(dataset, tmp_path / "report", seed=3, log=lambda *a: None)
    pairs = {(d["a"], d["b"]) for d in report["duplicates"]}
    assert pairs == {("siteA_600", "copy_of_siteA_600")}, report["duplicates"]
    split = {c["id"]: c["split"] for c in report["cases"]}
    assert split["siteA_600"] == split["copy_of_siteA_600"]  # near-duplicates stay together
    assert split["siteA_603"] == split["siteA_603_rescan"]  # one patient, one split
    assert split["siteA_606"] == split["siteB_614"]  # one DICOM study, one split
    by_patient: dict[str, set] = {}
    for case in report["cases"]:
        by_patient.setdefault(case["patient"], set()).add(case["split"])
    assert all(len(s) == 1 for s in by_patient.values())
    # roughly 60/20/20, in every domain / pathology stratum
    total = Counter(split.values())
    n = len(split)
    assert abs(total["train"] / n - 0.6) <= 0.15 and total["val"] >= 2 and total["test"] >= 2
    for stratum, counts in report["counts"]["strata"].items():
        size = sum(counts.values())
        assert counts.get("train", 0) >= max(1, round(0.6 * size) - 1), stratum
    # files: splits.json beside the manifest, report JSON + Markdown; the manifest is not touched by default
    assert read_splits(dataset) == {k: v for k, v in json.loads((dataset / "splits.json").read_text())["splits"]
                                    .items()}
    assert sorted(sum(read_splits(dataset).values(), [])) == sorted(split)
    assert json.loads((dataset / "dataset.json").read_text()) == before
    from spineseg_train.protocols.cases import evaluation_cases  # --split of the evaluation commands

    assert {c.case_id for c in evaluation_cases(dataset, split="test")} == {i for i, s in split.items() if s == "test"}
    markdown = (tmp_path / "report" / "curation.md").read_text()
    assert "copy_of_siteA_600" in markdown and "| siteA / lesions |" in markdown
    assert json.loads((tmp_path / "report" / "curation.json").read_text())["settings"]["hash_bits"] == 512


def test_curate_command_writes_splits_into_the_manifest(dataset, tmp_path):
    from spineseg_train.cli import main

    copy = tmp_path / "copy"
    manifest = read_manifest(dataset)
    import shutil

    shutil.copytree(dataset, copy)
    assert main(["curate", "--data", str(copy), "-o", str(tmp_path / "report"), "--in-manifest", "--seed", "3"]) == 0
    entries = read_manifest(copy)["cases"]
    assert len(entries) == len(manifest["cases"]) and all(e["split"] in ("train", "val", "test") for e in entries)
    assert {e["id"]: e["split"] for e in entries} == {i: s for s, ids in read_splits(copy / "").items() for i in ids}


def test_stratified_split_fractions_on_many_groups():
    records = {f"c{i}": {"domain": "ab"[i % 2], "lesions": i % 3 == 0} for i in range(600)}
    groups = [{"cases": [f"c{i}"], "lesions": int(records[f"c{i}"]["lesions"])} for i in range(600)]
    assignment = stratified_split(groups, records, seed=0)
    for domain in "ab":
        for lesions in (True, False):
            members = [c for c, r in records.items() if r["domain"] == domain and r["lesions"] == lesions]
            counts = Counter(assignment[c] for c in members)
            assert abs(counts["train"] / len(members) - 0.6) < 0.02
            assert abs(counts["test"] / len(members) - 0.2) < 0.02
    assert stratified_split(groups, records, seed=0) == assignment  # seeded
