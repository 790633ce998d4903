"""Corrections on slicer-core scenes: renumbering (T13/L6), shift, merge and split, lesions, undo, saving a
training case the trainer reads, and fine-tuning on it."""

import json
import shutil

import numpy as np
import pytest

from SpineSegLib import scene
from SpineSegLib.corrections import Corrections
from SpineSegLib.errors import InputError
from SpineSegLib.labels import load_label_table
from SpineSegLib.results import SegmentationResult, vertebra_summary
from SpineSegLib.segstate import read_segments
from SpineSegLib.training_case import CaseExistsError
from SpineSegLib.volume import Volume

pytestmark = pytest.mark.slicer

TABLE = load_label_table()
SPACING = 2.0


# --- scenes --------------------------------------------------------------------------------------------------------
def column_volumes(names, lesions=()):
    """A CT and labels with one box per vertebra, ``names`` cranio-caudal (the first at the top)."""
    height, gap = 6, 2
    depth = len(names) * (height + gap) + 4
    affine = np.diag([SPACING, SPACING, SPACING, 1.0])
    affine[:3, 3] = [-30.0, -30.0, -depth * SPACING / 2]
    labels = np.zeros((30, 30, depth), dtype=np.uint8)
    for n, name in enumerate(names):
        top = depth - 2 - n * (height + gap)
        labels[8:22, 8:22, top - height:top] = TABLE.by_name(name).value
    ct = np.where(labels > 0, 400, -1000).astype(np.int16)
    ct[0, 0, 0] = 1500
    return Volume(ct, affine), Volume(labels, affine)


def add_result(context, ct: Volume, labels: Volume, lesions=()):
    node = scene.volume_to_node(context.scene, ct, "CT")
    lesions = [dict(lesion) for lesion in lesions]
    result = SegmentationResult(labels, Volume(np.zeros(ct.shape, np.float32), ct.affine), lesions,
                                vertebra_summary(labels, lesions), {"model": {"name": "test"}})
    return node, scene.add_result_to_scene(context.scene, result, node, show_3d=False)


@pytest.fixture
def column(slicer_context):
    """T11-L5 and the sacrum, as boxes."""
    ct, labels = column_volumes(["T11", "T12", "L1", "L2", "L3", "L4", "L5", "sacrum"])
    node, nodes = add_result(slicer_context, ct, labels)
    return Corrections.from_result(nodes), labels


@pytest.fixture
def phantom_result(slicer_context, input_node, truth):
    nodes = scene.add_result_to_scene(slicer_context.scene, truth, input_node, show_3d=False)
    return Corrections.from_result(nodes)


def names(corrections):
    return [v["name"] for v in corrections.vertebrae()]


def voxel_identity(corrections):
    """Each segment's voxels, keyed by the segment's voxel count and first voxel (stable across renaming)."""
    arrays = read_segments(corrections.segmentation_node)
    return arrays.index.copy(), [info.segment_id for info in arrays.segments]


def full_state(corrections):
    """Everything undo must restore: segment IDs, order, metadata and voxels; lesion markups; report rows."""
    segmentation = corrections.segmentation_node.GetSegmentation()
    segments = []
    for index in range(segmentation.GetNumberOfSegments()):
        segment = segmentation.GetNthSegment(index)
        segments.append((segmentation.GetNthSegmentID(index), segment.GetName(), tuple(segment.GetColor()),
                         segment.GetLabelValue(), segment.GetTerminology()))
    arrays = read_segments(corrections.segmentation_node)
    masks = {info.segment_id: np.flatnonzero(arrays.index == p + 1).tobytes() for p, info in enumerate(arrays.segments)}
    lesions = corrections.lesions_node
    points = []
    for index in range(lesions.GetNumberOfControlPoints() if lesions is not None else 0):
        position = [0.0, 0.0, 0.0]
        lesions.GetNthControlPointPosition(index, position)
        points.append((tuple(position), lesions.GetNthControlPointLabel(index),
                       lesions.GetNthControlPointDescription(index)))
    attribute = lesions.GetAttribute(scene.ATTR_LESIONS) if lesions is not None else None
    rows = scene.vertebra_rows(corrections.table_node) if corrections.table_node is not None else []
    return segments, masks, points, attribute, rows, segmentation.GetNumberOfLayers()


def check_segment_looks(corrections):
    """Every vertebra segment's ID, colour, label value and terminology are the label table's for its name."""
    for info in scene.segments_info(corrections.segmentation_node):
        label = TABLE.by_name(info["name"])
        assert info["id"] == label.name
        assert info["label"] == label.value
        assert np.allclose(info["color"], label.color_float)
        assert info["terminology"] == TABLE.terminology_entry(label.value)


# --- renumbering -------------------------------------------------------------------------------------------------
def test_renumber_renames_the_column_and_keeps_every_voxel(phantom_result):
    corrections = phantom_result
    before_names = names(corrections)
    assert before_names == ["L2", "L3", "L4", "L5", "sacrum"]
    index_before, ids_before = voxel_identity(corrections)
    counts_before = {v["name"]: v["voxels"] for v in corrections.vertebrae()}

    changed = corrections.renumber("L3", "L2")  # the model was one off: everything moves up by one
    assert changed == {"L2": "L1", "L3": "L2", "L4": "L3", "L5": "L4"}
    assert names(corrections) == ["L1", "L2", "L3", "L4", "sacrum"]
    check_segment_looks(corrections)
    index_after, ids_after = voxel_identity(corrections)
    mapping = dict(zip(before_names, ["L1", "L2", "L3", "L4", "sacrum"], strict=True))
    for old_id in ids_before:
        old_mask = index_before == ids_before.index(old_id) + 1
        new_mask = index_after == ids_after.index(mapping[old_id]) + 1
        np.testing.assert_array_equal(old_mask, new_mask)
    assert {mapping[k]: v for k, v in counts_before.items()} == {v["name"]: v["voxels"] for v in
                                                                 corrections.vertebrae()}
    # the saved label volume carries the new label values on the same voxels
    labels = corrections.labels().array
    for old, new in mapping.items():
        assert (labels == TABLE.by_name(new).value).sum() == counts_before[old]
    # the lesions follow their vertebra and the report shows the new names
    for lesion in corrections.lesions():
        assert lesion["vertebra"] in mapping.values()
    assert [row["name"] for row in scene.vertebra_rows(corrections.table_node)] == ["L1", "L2", "L3", "L4", "sacrum"]


def test_inserting_and_removing_t13(column):
    corrections, _ = column
    assert names(corrections) == ["T11", "T12", "L1", "L2", "L3", "L4", "L5", "sacrum"]
    corrections.renumber("L1", "T13")  # the vertebra below T12 has ribs: it is T13
    assert names(corrections) == ["T11", "T12", "T13", "L1", "L2", "L3", "L4", "sacrum"]
    check_segment_looks(corrections)
    assert TABLE.by_name("T13").value in np.unique(corrections.labels().array)
    corrections.renumber("T13", "L1")  # it was L1 after all: T13 removed, the lumbar vertebrae follow
    assert names(corrections) == ["T11", "T12", "L1", "L2", "L3", "L4", "L5", "sacrum"]
    check_segment_looks(corrections)
    assert TABLE.by_name("T13").value not in np.unique(corrections.labels().array)


def test_inserting_and_removing_l6(column):
    corrections, _ = column
    corrections.renumber("T12", "L1")  # six lumbar vertebrae above the sacrum: L1-L6
    assert names(corrections) == ["T12", "L1", "L2", "L3", "L4", "L5", "L6", "sacrum"]
    check_segment_looks(corrections)
    assert TABLE.by_name("L6").value in np.unique(corrections.labels().array)
    corrections.renumber("L6", "L5")  # L6 removed: the column moves up again
    assert names(corrections) == ["T11", "T12", "L1", "L2", "L3", "L4", "L5", "sacrum"]
    check_segment_looks(corrections)


def test_t13_stays_when_another_vertebra_is_renamed(slicer_context):
    ct, labels = column_volumes(["T12", "T13", "L1", "L2", "L3", "L4", "sacrum"])
    _, nodes = add_result(slicer_context, ct, labels)
    corrections = Corrections.from_result(nodes)
    corrections.renumber("L3", "L4")
    assert names(corrections) == ["T13", "L1", "L2", "L3", "L4", "L5", "sacrum"]


def test_impossible_names_are_refused_and_change_nothing(column):
    corrections, _ = column
    before = full_state(corrections)
    with pytest.raises(InputError, match="above C1"):
        corrections.renumber("L1", "C2")
    with pytest.raises(InputError, match="unknown vertebra"):
        corrections.renumber("L1", "L9")
    with pytest.raises(InputError, match="lowest"):
        corrections.renumber("L1", "sacrum")
    assert full_state(corrections) == before
    assert not corrections.can_undo


def test_shift_up_and_down(column):
    corrections, _ = column
    corrections.shift(-1)
    assert names(corrections) == ["T10", "T11", "T12", "L1", "L2", "L3", "L4", "sacrum"]
    corrections.shift(+1)
    corrections.shift(+1)
    assert names(corrections) == ["T12", "L1", "L2", "L3", "L4", "L5", "L6", "sacrum"]
    check_segment_looks(corrections)


# --- merge and split -----------------------------------------------------------------------------------------------
def test_merge_then_split_by_components_conserves_voxels(column):
    corrections, labels = column
    counts = {v["name"]: v["voxels"] for v in corrections.vertebrae()}
    index_before, _ = voxel_identity(corrections)
    corrections.merge("L2", "L3")
    assert names(corrections) == ["T11", "T12", "L1", "L2", "L4", "L5", "sacrum"]
    merged = {v["name"]: v["voxels"] for v in corrections.vertebrae()}
    assert merged["L2"] == counts["L2"] + counts["L3"]
    assert sum(merged.values()) == sum(counts.values())

    new_id = corrections.split_components("L2")  # the two boxes are apart: two components
    assert new_id == "L3"
    assert names(corrections) == ["T11", "T12", "L1", "L2", "L3", "L4", "L5", "sacrum"]
    assert {v["name"]: v["voxels"] for v in corrections.vertebrae()} == counts
    np.testing.assert_array_equal(corrections.labels().array, labels.array)  # back to the original labels exactly
    assert (voxel_identity(corrections)[0] > 0).sum() == (index_before > 0).sum()


def test_split_by_plane_across_the_spine_axis(column):
    corrections, _ = column
    counts = {v["name"]: v["voxels"] for v in corrections.vertebrae()}
    l2 = next(v for v in corrections.vertebrae() if v["name"] == "L2")
    new_id = corrections.split_plane("L2", l2["centroid_ras"])  # through the middle, perpendicular to the column
    after = corrections.vertebrae()
    assert names(corrections) == ["T11", "T12", "L1", "L2", "L3", "L4", "L5", "L6", "sacrum"]
    assert new_id == "L3"
    by_name = {v["name"]: v for v in after}
    assert by_name["L2"]["voxels"] + by_name["L3"]["voxels"] == counts["L2"]
    assert by_name["L2"]["centroid_ras"][2] > by_name["L3"]["centroid_ras"][2]  # the cranial part keeps the name
    assert abs(by_name["L2"]["voxels"] - by_name["L3"]["voxels"]) <= 14 * 14  # a horizontal cut halves the box
    assert sum(v["voxels"] for v in after) == sum(counts.values())
    check_segment_looks(corrections)
    with pytest.raises(InputError, match="does not divide"):
        corrections.split_plane("L1", [0.0, 0.0, 500.0])


def test_split_plane_is_perpendicular_to_the_local_spine_axis(slicer_context):
    """A column leaning forwards: the cut through L2 follows the axis from L1's to L3's centroid, not the S axis."""
    affine = np.diag([SPACING, SPACING, SPACING, 1.0])
    labels = np.zeros((30, 50, 44), np.uint8)
    for n, name in enumerate(["L1", "L2", "L3"]):
        top, front = 40 - 14 * n, 8 + 12 * n  # each vertebra 12 voxels further anterior than the one above
        labels[8:22, front:front + 14, top - 10:top] = TABLE.by_name(name).value
    ct = Volume(np.where(labels > 0, 400, -1000).astype(np.int16), affine)
    _, nodes = add_result(slicer_context, ct, Volume(labels, affine))
    corrections = Corrections.from_result(nodes)
    by_name = {v["name"]: v for v in corrections.vertebrae()}
    axis = np.subtract(by_name["L1"]["centroid_ras"], by_name["L3"]["centroid_ras"])
    axis /= np.linalg.norm(axis)
    point = np.asarray(by_name["L2"]["centroid_ras"])
    ijk = np.argwhere(labels == TABLE.by_name("L2").value)
    cranial = (((ijk * SPACING) - point) @ axis) >= 0
    corrections.split_plane("L2", point)
    after = corrections.labels().array
    np.testing.assert_array_equal(np.argwhere(after == TABLE.by_name("L2").value), ijk[cranial])
    np.testing.assert_array_equal(np.argwhere(after == TABLE.by_name("L3").value), ijk[~cranial])
    assert (after == TABLE.by_name("L4").value).sum() == by_name["L3"]["voxels"]  # the old L3 moved on to L4
    horizontal = (ijk * SPACING)[:, 2] >= point[2]
    assert (cranial != horizontal).sum() > 50  # the tilt matters: a cut along S would differ


def test_split_refuses_a_single_component(column):
    corrections, _ = column
    with pytest.raises(InputError, match="one connected piece"):
        corrections.split_components("L1")


# --- lesions -------------------------------------------------------------------------------------------------------
def _rows(corrections):
    return {row["name"]: row for row in scene.vertebra_rows(corrections.table_node)}


def test_lesion_add_class_change_delete_update_assignment_and_report(column):
    corrections, _ = column
    l1 = next(v for v in corrections.vertebrae() if v["name"] == "L1")
    lesion = corrections.add_lesion(l1["centroid_ras"], "fracture", size_mm=12.0, grade=2)
    assert lesion["vertebra"] == "L1" and lesion["vertebra_label"] == TABLE.by_name("L1").value
    assert lesion["grade"] == 2 and lesion["source"] == "manual"
    assert _rows(corrections)["L1"]["lesions"] == 1 and "fracture" in _rows(corrections)["L1"]["details"]
    markups = corrections.lesions_node
    assert markups.GetNumberOfControlPoints() == 1 and markups.GetNthControlPointLabel(0).startswith("L1 fracture")

    changed = corrections.set_lesion_class(lesion["id"], "lytic")
    assert changed["class"] == "lytic" and changed["grade"] is None
    assert "lytic" in _rows(corrections)["L1"]["details"]

    corrections.renumber("L1", "L2")  # the assignment follows the vertebra's new name
    assert corrections.lesions()[0]["vertebra"] == "L2"
    assert _rows(corrections)["L2"]["lesions"] == 1

    outside = corrections.add_lesion([200.0, 200.0, 0.0], "sclerotic")
    assert outside["vertebra"] is None
    corrections.delete_lesion(lesion["id"])
    assert [les["id"] for les in corrections.lesions()] == [outside["id"]]
    assert all(row["lesions"] == 0 for row in _rows(corrections).values())
    with pytest.raises(InputError, match="unknown lesion class"):
        corrections.add_lesion([0, 0, 0], "tumour")
    with pytest.raises(InputError, match="no lesion"):
        corrections.delete_lesion(99)


def test_phantom_lesions_are_reassigned_after_a_merge(phantom_result):
    corrections = phantom_result
    before = {les["id"]: les["vertebra"] for les in corrections.lesions()}
    assert set(before.values()) <= {"L4", "L5"}
    corrections.merge("L4", "L5")
    after = {les["id"]: les["vertebra"] for les in corrections.lesions()}
    assert set(after.values()) == {"L4"}
    assert _rows(corrections)["L4"]["lesions"] == len(before)


# --- undo ----------------------------------------------------------------------------------------------------------
OPERATIONS = {
    "renumber": lambda c: c.renumber("L1", "T13"),
    "shift": lambda c: c.shift(1),
    "merge": lambda c: c.merge("L2", "L3"),
    "split_plane": lambda c: c.split_plane("L3"),
    "split_components": lambda c: c.split_components("L4"),
    "add_lesion": lambda c: c.add_lesion(c.vertebrae()[3]["centroid_ras"], "lytic"),
    "lesion_class": lambda c: c.set_lesion_class(1, "sclerotic"),
    "delete_lesion": lambda c: c.delete_lesion(1),
}
SETUP = {"split_components": lambda c: c.merge("L4", "L5")}  # two separate boxes in one segment


@pytest.mark.parametrize("operation", sorted(OPERATIONS))
def test_undo_restores_the_exact_previous_state(column, operation):
    corrections, _ = column
    corrections.add_lesion(corrections.vertebrae()[2]["centroid_ras"], "fracture", grade=1)
    SETUP.get(operation, lambda c: None)(corrections)
    before = full_state(corrections)
    steps = len(corrections.history)
    OPERATIONS[operation](corrections)
    after = full_state(corrections)
    assert after != before
    assert len(corrections.history) == steps + 1
    corrections.undo()
    assert full_state(corrections) == before
    corrections.redo()
    assert full_state(corrections) == after
    while corrections.can_undo:
        corrections.undo()
    assert corrections.lesions() == []


def test_undo_of_a_renumber_after_several_operations(column):
    corrections, _ = column
    first = full_state(corrections)
    corrections.renumber("L1", "T13")
    second = full_state(corrections)
    corrections.split_plane("L2")
    corrections.undo()
    assert full_state(corrections) == second
    corrections.undo()
    assert full_state(corrections) == first
    with pytest.raises(InputError, match="nothing to undo"):
        corrections.undo()


# --- saving as a training case -------------------------------------------------------------------------------------
def test_save_as_training_case_is_read_by_the_trainer_and_never_overwrites(phantom_result, input_node, phantom,
                                                                          tmp_path):
    pytest.importorskip("spineseg_train")
    from spineseg_train.dataset import load_dataset, read_manifest

    corrections = phantom_result
    corrections.renumber("L3", "L2")
    corrections.add_lesion(corrections.vertebrae()[0]["centroid_ras"], "fracture", size_mm=9.0, grade=2)
    dataset = tmp_path / "corrected"
    entry = corrections.save_training_case(dataset, "case_001", patient="P1")
    assert entry["id"] == "case_001" and entry["source"] == "corrected" and entry["patient"] == "P1"
    for key in ("image", "labels", "lesions"):
        assert (dataset / entry[key]).is_file()
    manifest = read_manifest(dataset)
    assert manifest["format_version"] == 1 and manifest["label_table"] == TABLE.fingerprint()
    assert [case["id"] for case in manifest["cases"]] == ["case_001"]

    (case,) = load_dataset(dataset)
    np.testing.assert_array_equal(case.ct.array, np.asarray(phantom.ct.array, dtype=np.float32))
    np.testing.assert_allclose(case.ct.affine, phantom.ct.affine, atol=1e-5)
    np.testing.assert_array_equal(case.labels.array, corrections.labels().array)
    assert set(np.unique(case.labels.array)) == {0} | {TABLE.by_name(n).value for n in ("L1", "L2", "L3", "L4",
                                                                                         "sacrum")}
    assert len(case.lesions) == len(corrections.lesions())
    manual = [les for les in case.lesions if les.get("source") == "manual"][0]
    assert manual["class"] == "fracture" and manual["grade"] == 2 and manual["vertebra"] == "L1"
    assert manual["vertebra_label"] == TABLE.by_name("L1").value and manual["size_mm"] == 9.0
    assert case.meta["source"] == "corrected"

    image_bytes = (dataset / entry["image"]).read_bytes()
    with pytest.raises(CaseExistsError, match="already exists"):
        corrections.save_training_case(dataset, "case_001")
    (dataset / "labels" / "case_002.nii.gz").write_bytes(b"someone else's file")
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        corrections.save_training_case(dataset, "case_002")
    assert (dataset / entry["image"]).read_bytes() == image_bytes
    assert (dataset / "labels" / "case_002.nii.gz").read_bytes() == b"someone else's file"
    assert not (dataset / "images" / "case_002.nii.gz").exists()
    second = corrections.save_training_case(dataset)  # a default id from the CT's name
    assert second["id"].startswith("CT_")
    assert [c.case_id for c in load_dataset(dataset)] == ["case_001", second["id"]]
    with pytest.raises(InputError, match="invalid case id"):
        corrections.save_training_case(dataset, "../escape")


def test_a_segment_without_a_vertebra_name_is_not_training_data(column, tmp_path):
    corrections, _ = column
    segmentation = corrections.segmentation_node.GetSegmentation()
    segmentation.GetSegment("L3").SetName("my painting")
    with pytest.raises(InputError, match="'my painting' is not a vertebra"):
        corrections.save_training_case(tmp_path / "d", "x")
    assert not (tmp_path / "d" / "dataset.json").exists()


# --- fine-tuning on a saved case -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    torch = pytest.importorskip("torch")
    from SpineSegLib.checkpoint import save_checkpoint
    from SpineSegLib.networks import build_network

    torch.manual_seed(0)
    args = {"channels": [4, 8, 16], "num_res_units": 0}
    network = build_network("unet3d", 1, TABLE.num_classes, len(TABLE.lesion_classes), **args)
    card = {"name": "tiny", "architecture": {"id": "unet3d", "args": args},
            "preprocessing": {"intensity_window": [-1000, 1000],
                              "stages": {"coarse": {"spacing": [4, 4, 4], "patch_size": [32, 32, 32]},
                                         "fine": {"spacing": [2, 2, 2], "patch_size": [32, 32, 32]}}}}
    return save_checkpoint(network, card, tmp_path_factory.mktemp("tiny") / "model")


@pytest.mark.slow
def test_finetune_from_a_checkpoint_on_a_saved_case(phantom_result, tiny_checkpoint, tmp_path):
    pytest.importorskip("spineseg_train")
    import argparse

    import torch

    from spineseg_train.finetune import add_finetune_command
    from SpineSegLib.checkpoint import CARD_FILE, load_checkpoint
    from SpineSegLib.resources import default_model_path

    corrections = phantom_result
    corrections.renumber("L3", "L2")
    corrections.save_training_case(tmp_path / "data", "case")
    base_path = shutil.copytree(tiny_checkpoint, tmp_path / "base")
    card = json.loads((base_path / CARD_FILE).read_text())
    calibration = {"candidate_threshold": 0.05, "threshold": 0.1,
                   "classes": {"fracture": [2.0, 0.5], "lytic": [1.5, 1.0], "sclerotic": [2.0, 0.5]}}
    bundled = json.loads((default_model_path() / CARD_FILE).read_text())["postprocessing"]
    card["postprocessing"] = {"lesion_threshold": 0.4, "lesion_calibration": {"fine": calibration},
                              "surface_refinement": bundled["surface_refinement"]}
    (base_path / CARD_FILE).write_text(json.dumps(card))
    parser = argparse.ArgumentParser()
    add_finetune_command(parser.add_subparsers())
    args = parser.parse_args(["finetune", "--model", str(base_path), "--data", f"{tmp_path / 'data'}:2.0",
                              "-o", str(tmp_path / "run"), "--steps", "2", "--patch-size", "32", "--batch-size", "1",
                              "--threads", "1", "--device", "cpu", "--export", str(tmp_path / "tuned")])
    assert args.run(args) == 0
    tuned = load_checkpoint(tmp_path / "tuned")
    base = load_checkpoint(base_path)
    # the base's lesion calibration and surface refinement fit the base's outputs only; the rest carries over
    assert tuned.card["postprocessing"] == {"lesion_threshold": 0.4}
    assert tuned.card["architecture"] == base.card["architecture"]
    assert tuned.card["preprocessing"] == base.card["preprocessing"]
    assert tuned.card["training"]["steps"] == 2
    assert tuned.card["training"]["finetuned_from"]["sha256"] == base.card["weights"]["sha256"]
    changed = [name for name, value in tuned.network.state_dict().items()
               if value.is_floating_point() and not torch.equal(value, base.network.state_dict()[name])]
    assert changed, "fine-tuning did not change any weight"
    manifest = json.loads((tmp_path / "data" / "dataset.json").read_text())
    assert manifest["cases"][0]["id"] == "case"


def test_corrections_import_without_heavy_packages():
    """The Slicer module may import the corrections at start-up, before optional packages are installed."""
    import subprocess
    import sys
    from pathlib import Path

    module_dir = Path(__file__).resolve().parents[2] / "SpineSegModule"
    code = (
        "import builtins, sys\n"
        "real = builtins.__import__\n"
        "def guarded(name, *a, **k):\n"
        "    if name.split('.')[0] in ('qt', 'torch', 'monai', 'nibabel', 'nrrd', 'scipy', 'PIL', 'pydicom',"
        " 'trame', 'trame_slicer'):\n"
        "        raise ImportError('blocked ' + name)\n"
        "    return real(name, *a, **k)\n"
        "builtins.__import__ = guarded\n"
        f"sys.path.insert(0, {str(module_dir)!r})\n"
        "from SpineSegLib import corrections, numbering, segstate, training_case\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
