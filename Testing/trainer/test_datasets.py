"""Dataset readers: every supported layout written from phantoms, read back onto the label table (values, lesions,
metadata), unknown labels reported, and conversion into SpineSeg's dataset format."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from protocol_fixtures import label_array, phantom

from spineseg_train.dataset import Case, add_case, load_dataset, read_manifest
from spineseg_train.datasets import (
    ReadOptions,
    UnknownLabelsError,
    convert_dataset,
    detect_layout,
    mapping_from_json,
    open_dataset,
)
from spineseg_train.datasets.lesions import body_size_mm, normalise_lesion, read_fracture_grades
from spineseg_train.datasets.mapping import CTSPINE1K, TOTALSEG_V2
from spineseg_train.datasets.verse import read_centroids, write_centroids
from spineseg_train.metrics import centroids_mm
from SpineSegLib.io import write_json, write_nifti
from SpineSegLib.labels import load_label_table
from SpineSegLib.phantom import GENERATOR_VERSION
from SpineSegLib.volume import Volume

TABLE = load_label_table()
V = {name: TABLE.by_name(name).value for name in TABLE.names}


@pytest.fixture(scope="module")
def phantoms():
    """Two lumbar phantoms (one LPS-stored, one with the L6 variant) and their lesions."""
    return [phantom(11, lesions=1, orientation="LPS"), phantom(12, lesions=0, variant="L6")]


def _nifti(volume_or_array, affine, path, dtype):
    path.parent.mkdir(parents=True, exist_ok=True)
    array = volume_or_array.array if isinstance(volume_or_array, Volume) else volume_or_array
    write_nifti(Volume(array, affine), path, dtype)


# --- VerSe ----------------------------------------------------------------------------------------------------
def _verse(root, phantoms, extra_label=None):
    """sub-verse001 (one scan), sub-verse002 with two scans (split entities); centroids in PIR voxel codes."""
    scans = [("sub-verse001", "sub-verse001", phantoms[0]), ("sub-verse002", "sub-verse002_split-verse201",
                                                               phantoms[1]),
             ("sub-verse002", "sub-verse002_split-verse202", phantoms[0])]
    for subject, prefix, p in scans:
        _nifti(p.ct, p.ct.affine, root / "rawdata" / subject / f"{prefix}_ct.nii.gz", np.int16)
        labels = p.labels.array.copy()
        if extra_label is not None and prefix.endswith("202"):
            labels[labels == V["L1"]] = extra_label
        _nifti(labels, p.ct.affine, root / "derivatives" / subject / f"{prefix}_seg-vert_msk.nii.gz", np.uint8)
        write_centroids(root / "derivatives" / subject / f"{prefix}_seg-subreg_ctd.json",
                        centroids_mm(p.labels.array, p.labels.affine), p.ct.affine, p.ct.shape)
    (root / "rawdata" / "sub-verse001" / "sub-verse001_ct.json").write_text(json.dumps(
        {"StudyInstanceUID": "1.2.3", "SeriesInstanceUID": "1.2.3.4", "Modality": "CT"}))
    grades = root / "grades.csv"
    grades.write_text("verse_ID,L1_fx-g,L1_fx-s,L2_fx-g,L3_fx-g\nverse001,0,,2,\n201,,,,1\n")
    return grades


def test_verse_reader_maps_labels_centroids_grades_and_identifiers(tmp_path, phantoms):
    grades = _verse(tmp_path, phantoms)
    assert detect_layout(tmp_path) == "verse"
    cases = open_dataset(tmp_path, options=ReadOptions(grades=grades))
    assert [c.case_id for c in cases] == ["verse001", "verse002_split-verse201", "verse002_split-verse202"]
    assert [c.meta["patient"] for c in cases] == ["sub-verse001", "sub-verse002", "sub-verse002"]
    assert cases[0].meta["study_uid"] == "1.2.3" and cases[0].meta["series_uid"] == "1.2.3.4"
    first = cases[0].load()
    assert np.array_equal(first.labels.array, phantoms[0].labels.array)  # VerSe numbering is ours
    assert np.allclose(first.ct.array, phantoms[0].ct.array)
    # grade 2 at L2 -> one fracture lesion at L2's centroid; grade 0 and empty cells -> none
    (fracture,) = first.lesions
    assert fracture["class"] == "fracture" and fracture["grade"] == 2 and fracture["vertebra"] == "L2"
    centroid = centroids_mm(phantoms[0].labels.array, phantoms[0].labels.affine)[V["L2"]]
    assert np.allclose(fracture["center_ras"], centroid, atol=0.01)
    assert 25 < fracture["size_mm"] < 70
    second = cases[1].load()  # grades keyed by the split's series number
    assert [(les["vertebra"], les["grade"]) for les in second.lesions] == [("L3", 1)]


def test_verse_centroids_follow_data_utilities_convention(tmp_path, phantoms):
    p = phantoms[0]  # stored LPS: axes flipped relative to PIR and to RAS
    centroids = centroids_mm(p.labels.array, p.labels.affine)
    path = tmp_path / "ctd.json"
    write_centroids(path, centroids, p.ct.affine, p.ct.shape, ("P", "I", "R"))
    document = json.loads(path.read_text())
    assert document[0] == {"direction": ["P", "I", "R"]}
    read = read_centroids(path, p.ct.affine, p.ct.shape)
    assert set(read) == set(centroids)
    for label, xyz in centroids.items():
        assert np.allclose(read[label], xyz, atol=0.01)
    # LPS storage read in PIR codes: X = j, Y = K - k, Z = I - i (a flipped axis counts `size - c`, as VerSe's
    # reorient_centroids_to does, not `size - 1 - c`)
    assert np.allclose(np.diag(p.ct.affine)[:3], [-3.0, -3.0, 3.0])
    entry = document[1]
    ijk = np.linalg.solve(p.ct.affine[:3, :3], centroids[entry["label"]] - p.ct.affine[:3, 3])
    shape = p.ct.shape
    assert np.allclose([entry["X"], entry["Y"], entry["Z"]], [ijk[1], shape[2] - ijk[2], shape[0] - ijk[0]],
                       atol=1e-3)


def test_unknown_label_values_are_named_or_dropped_and_reported(tmp_path, phantoms):
    _verse(tmp_path, phantoms, extra_label=27)  # 27: VerSe's coccyx code, not in the label table
    case = open_dataset(tmp_path)[2]
    with pytest.raises(UnknownLabelsError, match=r"label values 27 \(\d+ voxels\).*VerSe mapping"):
        case.load()
    dropped = open_dataset(tmp_path, options=ReadOptions(unknown="background"))[2].load()
    assert 27 not in np.unique(dropped.labels.array) and V["L1"] not in np.unique(dropped.labels.array)
    assert dropped.meta["label_report"]["unknown"] == {"27": int((phantoms[0].labels.array == V["L1"]).sum())}


def test_convert_verse_resumes_and_reports_failures(tmp_path, phantoms):
    source, target = tmp_path / "verse", tmp_path / "converted"
    _verse(source, phantoms, extra_label=27)
    report = convert_dataset(source, target, log=lambda *a: None)
    assert report["converted"] == ["verse001", "verse002_split-verse201"]
    assert report["failed"][0]["case"] == "verse002_split-verse202" and "27" in report["failed"][0]["error"]
    manifest = read_manifest(target)
    assert [e["patient"] for e in manifest["cases"]] == ["sub-verse001", "sub-verse002"]
    assert manifest["cases"][0]["study_uid"] == "1.2.3" and manifest["cases"][0]["domain"] == "verse"
    loaded = load_dataset(target)
    assert np.array_equal(loaded[1].labels.array, phantoms[1].labels.array)
    assert (target / "conversion_report.json").is_file()
    again = convert_dataset(source, target, options=ReadOptions(unknown="background"), log=lambda *a: None)
    assert again["skipped"] == ["verse001", "verse002_split-verse201"]
    assert again["converted"] == ["verse002_split-verse202"] and again["label_reports"]


def test_convert_command_line_exit_code(tmp_path, phantoms):
    from spineseg_train.cli import main

    _verse(tmp_path / "verse", phantoms, extra_label=27)
    assert main(["convert", str(tmp_path / "verse"), "-o", str(tmp_path / "out")]) == 1
    assert main(["convert", str(tmp_path / "verse"), "-o", str(tmp_path / "out"), "--unknown-labels",
                 "background", "--domain", "siteX"]) == 0
    assert {e["domain"] for e in read_manifest(tmp_path / "out")["cases"]} == {"verse", "siteX"}


# --- CTSpine1K ------------------------------------------------------------------------------------------------
def test_ctspine1k_labels_subsets_and_missing_sacrum(tmp_path, phantoms):
    base = tmp_path / "data" / "raw_data"
    for index, (subset, p) in enumerate((("COLONOG", phantoms[0]), ("HNSCC-3DCT-RT", phantoms[1]))):
        stem = f"1.3.6.1.4.1.9328.50.4.{index:04d}"
        _nifti(p.ct, p.ct.affine, base / "volumes" / subset / f"{stem}.nii.gz", np.int16)
        labels = p.labels.array.copy()
        labels[labels == V["sacrum"]] = 0  # CTSpine1K does not label the sacrum
        _nifti(labels, p.ct.affine, base / "labels" / subset / f"{stem}_seg.nii.gz", np.uint8)
    assert detect_layout(tmp_path) == "ctspine1k"
    cases = open_dataset(tmp_path)
    assert [c.meta["domain"] for c in cases] == ["COLONOG", "HNSCC-3DCT-RT"]
    assert cases[0].case_id == "COLONOG_1.3.6.1.4.1.9328.50.4.0000"
    l6 = cases[1].load()  # L6 variant: CTSpine1K's 25 is L6
    assert V["L6"] in np.unique(l6.labels.array)
    expected = phantoms[1].labels.array.copy()
    expected[expected == V["sacrum"]] = 0
    assert np.array_equal(l6.labels.array, expected)
    # a value CTSpine1K does not use (26) is unknown, not silently the sacrum
    with pytest.raises(UnknownLabelsError, match="26"):
        CTSPINE1K.apply(np.array([[[0, 26]]]), "x")


# --- TotalSegmentator -----------------------------------------------------------------------------------------
def test_totalsegmentator_masks_and_multilabel(tmp_path, phantoms):
    p = phantoms[0]
    ours = p.labels.array
    masks = tmp_path / "s0001" / "segmentations"
    for name in ("L1", "L2", "L3", "L4", "L5"):
        _nifti((ours == V[name]).astype(np.uint8), p.ct.affine, masks / f"vertebrae_{name}.nii.gz", np.uint8)
    sacrum = ours == V["sacrum"]
    s1 = sacrum.copy()
    s1[..., : s1.shape[2] // 2 + 10] = False  # upper part of the sacrum as S1 (v2 splits it off)
    _nifti((sacrum & ~s1).astype(np.uint8), p.ct.affine, masks / "sacrum.nii.gz", np.uint8)
    _nifti(s1.astype(np.uint8), p.ct.affine, masks / "vertebrae_S1.nii.gz", np.uint8)
    _nifti((p.ct.array > 300).astype(np.uint8), p.ct.affine, masks / "liver.nii.gz", np.uint8)  # not spine
    _nifti(p.ct, p.ct.affine, tmp_path / "s0001" / "ct.nii.gz", np.int16)
    # v2 multilabel numbering: 25 sacrum, 26 S1, 27 L5 ... 31 L1; 5 = liver (ignored)
    v2 = label_array(ours, {V["L1"]: 31, V["L2"]: 30, V["L3"]: 29, V["L4"]: 28, V["L5"]: 27, V["sacrum"]: 25})
    v2[s1] = 26
    v2[(ours == 0) & (p.ct.array > 300)] = 5
    _nifti(p.ct, p.ct.affine, tmp_path / "s0002" / "ct.nii.gz", np.int16)
    _nifti(v2, p.ct.affine, tmp_path / "s0002" / "segmentations.nii.gz", np.uint8)
    (tmp_path / "meta.csv").write_text("image_id;age;gender;institute;study_type\ns0001;60;m;A;ct abdomen\n"
                                       "s0002;70;f;B;ct thorax\n")
    assert detect_layout(tmp_path) == "totalsegmentator"
    cases = open_dataset(tmp_path)
    assert [(c.case_id, c.meta["domain"]) for c in cases] == [("s0001", "A"), ("s0002", "B")]
    from_masks, from_v2 = cases[0].load(), cases[1].load()
    assert np.array_equal(from_masks.labels.array, ours)
    assert from_masks.meta["structures"][-1] in ("sacrum", "vertebrae_S1")
    assert np.array_equal(from_v2.labels.array, ours)
    assert from_v2.meta["label_report"]["ignored"] == {"5": int(((ours == 0) & (p.ct.array > 300)).sum())}
    assert TOTALSEG_V2.to_value[50] == V["C1"] and TOTALSEG_V2.to_value[43] == V["T1"]
    with pytest.raises(UnknownLabelsError, match="200"):
        TOTALSEG_V2.apply(np.array([[[200]]]), "x")


# --- generic folder with a JSON mapping ------------------------------------------------------------------------
def test_generic_folder_with_nnunet_mapping_lesions_and_metadata(tmp_path, phantoms):
    p = phantoms[0]
    theirs = {V["L1"]: 1, V["L2"]: 2, V["L3"]: 3, V["L4"]: 4, V["L5"]: 5, V["sacrum"]: 6}
    _nifti(p.ct, p.ct.affine, tmp_path / "imagesTr" / "spine_001_0000.nii.gz", np.int16)
    _nifti(label_array(p.labels.array, theirs), p.ct.affine, tmp_path / "labelsTr" / "spine_001.nii.gz", np.uint8)
    write_json(tmp_path / "mapping.json", {"labels": {"background": 0, "L1": 1, "L2": 2, "L3": 3, "L4": 4, "L5": 5,
                                                      "sacrum": 6}})
    write_json(tmp_path / "lesions" / "spine_001.json", {"lesions": [
        {"center_ras": [0, 10, -500], "size_mm": 9, "class": "lytic", "vertebra": "L3"}]})
    write_json(tmp_path / "metadata.json", {"spine_001": {"patient": "P7", "study_uid": "9.9"}})
    assert detect_layout(tmp_path) == "generic"
    (case,) = open_dataset(tmp_path, options=ReadOptions(domain="hospital"))
    assert case.meta == {"source": "generic", "domain": "hospital", "patient": "P7", "study_uid": "9.9"}
    loaded = case.load()
    assert np.array_equal(loaded.labels.array, p.labels.array)
    assert loaded.lesions[0]["vertebra_label"] == V["L3"] and loaded.lesions[0]["grade"] is None


def test_convert_refuses_non_ct_images_and_labels_off_the_grid(tmp_path, phantoms):
    p = phantoms[0]
    _nifti(p.ct, p.ct.affine, tmp_path / "src" / "images" / "good.nii.gz", np.int16)
    _nifti(p.labels, p.ct.affine, tmp_path / "src" / "labels" / "good.nii.gz", np.uint8)
    normalised = np.clip((p.ct.array + 1000) / 2000, 0, 1).astype(np.float32)  # a [0, 1] image, not HU
    _nifti(normalised, p.ct.affine, tmp_path / "src" / "images" / "scaled.nii.gz", np.float32)
    _nifti(p.labels, p.ct.affine, tmp_path / "src" / "labels" / "scaled.nii.gz", np.uint8)
    shifted = p.ct.affine.copy()
    shifted[2, 3] += 3.0  # labels one slice off the image's grid
    _nifti(p.ct, p.ct.affine, tmp_path / "src" / "images" / "shifted.nii.gz", np.int16)
    _nifti(p.labels, shifted, tmp_path / "src" / "labels" / "shifted.nii.gz", np.uint8)
    report = convert_dataset(tmp_path / "src", tmp_path / "out", log=lambda *a: None)
    assert report["converted"] == ["good"]
    failed = {f["case"]: f["error"] for f in report["failed"]}
    assert "does not look like a CT" in failed["scaled"] and "must lie on the image's grid" in failed["shifted"]


def test_mapping_json_forms_and_errors(tmp_path):
    path = tmp_path / "m.json"
    write_json(path, {"labels": {"1": "C1", "2": 21, "9": None}, "ignore": [40]})
    mapping = mapping_from_json(path)
    mapped, report = mapping.apply(np.array([[[1, 2, 9, 40, 0]]]), "x")
    assert mapped.tolist() == [[[V["C1"], 21, 0, 0, 0]]] and report["ignored"] == {"40": 1}
    write_json(path, {"labels": {"1": "L7"}})
    with pytest.raises(ValueError, match="L7"):
        mapping_from_json(path)


# --- SpineSeg's own format (corrected cases) --------------------------------------------------------------------
def test_corrected_case_folder_reads_in_place(tmp_path, phantoms):
    from SpineSegLib.training_case import write_case

    p = phantoms[0]
    write_case(tmp_path, "corrected_1", p.ct, p.labels, p.lesions, {"source": "corrected", "patient": "P1"})
    assert detect_layout(tmp_path) == "spineseg"
    (case,) = open_dataset(tmp_path)
    assert case.meta["source"] == "corrected" and case.meta["patient"] == "P1"
    loaded = case.load()
    assert np.array_equal(loaded.labels.array, p.labels.array)
    assert [les["class"] for les in loaded.lesions] == [les["class"] for les in p.lesions]
    # a label value outside the table in a hand-edited dataset is reported, not trained on
    add_case(tmp_path / "bad", Case("bad", p.ct, Volume(np.where(p.labels.array > 0, 99, 0).astype(np.uint8),
                                                            p.ct.affine), [], {}))
    with pytest.raises(UnknownLabelsError, match="99"):
        open_dataset(tmp_path / "bad")[0].load()


# --- lesions and grades -----------------------------------------------------------------------------------------
def test_lesion_schema_and_grade_files(tmp_path):
    with pytest.raises(ValueError, match="class must be one of"):
        normalise_lesion({"center_ras": [0, 0, 0], "size_mm": 5, "class": "cyst"})
    with pytest.raises(ValueError, match="center_ras"):
        normalise_lesion({"center_ras": [0, 0], "size_mm": 5, "class": "lytic"})
    with pytest.raises(ValueError, match="Genant"):
        normalise_lesion({"center_ras": [0, 0, 0], "size_mm": 5, "class": "fracture", "grade": 4})
    long = tmp_path / "long.csv"
    long.write_text("subject;vertebra;grade\nverse004;L1;3\nverse004;T12;0\nverse005;20;1\n")
    assert read_fracture_grades(long) == {"verse004": {V["L1"]: 3, V["T12"]: 0}, "verse005": {V["L1"]: 1}}
    as_json = tmp_path / "g.json"
    write_json(as_json, {"verse004": {"L1": 2}})
    assert read_fracture_grades(as_json) == {"verse004": {V["L1"]: 2}}
    p = phantom(15, lesions=2, orientation="LPS")  # has a fracture: the body size estimate is close to the truth
    fracture = next(les for les in p.lesions if les["class"] == "fracture")
    estimate = body_size_mm(p.labels, fracture["vertebra_label"])
    assert abs(estimate - fracture["size_mm"]) < 0.25 * fracture["size_mm"]


def test_unknown_layout_is_explained(tmp_path):
    (tmp_path / "something").mkdir()
    with pytest.raises(ValueError, match="not a known dataset layout"):
        detect_layout(tmp_path)
    shutil.rmtree(tmp_path / "something")


def test_phantoms_of_another_generator_version_are_refused(tiny_dataset, tmp_path):
    manifest = json.loads((tiny_dataset / "dataset.json").read_text())
    assert {case["phantom"]["generator"] for case in manifest["cases"]} == {GENERATOR_VERSION}
    assert len(load_dataset(tiny_dataset)) == len(manifest["cases"])
    stale = tmp_path / "stale"
    shutil.copytree(tiny_dataset, stale)
    del manifest["cases"][1]["phantom"]["generator"]  # made before the generator had versions
    (stale / "dataset.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=f"1 phantoms .first {manifest['cases'][1]['id']}.*make-phantoms"):
        load_dataset(stale)
