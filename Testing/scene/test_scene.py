"""Scene logic against slicer-core: volumes in and out, result nodes, display, replace/keep, save and reload."""

import json

import numpy as np
import pytest

from SpineSegLib import scene
from SpineSegLib.errors import InputError
from SpineSegLib.labels import load_label_table
from SpineSegLib.volume import Volume

pytestmark = pytest.mark.slicer


def _oblique_affine():
    angle = np.deg2rad(20)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([0.8, 1.1, 2.5]) @ np.diag([-1, -1, 1])  # LPS-stored, oblique
    affine[:3, 3] = [12.5, -30.0, 101.0]
    return affine


def test_volume_round_trip_converts_kji_and_keeps_ijk_to_ras(slicer_scene):
    import slicer

    rng = np.random.default_rng(0)
    array = rng.integers(-1000, 2000, size=(9, 11, 13)).astype(np.int16)  # distinct sizes catch transposes
    volume = Volume(array, _oblique_affine())
    node = scene.volume_to_node(slicer_scene, volume, "oblique")
    assert slicer.util.arrayFromVolume(node).shape == (13, 11, 9)  # Slicer's (k, j, i)
    assert node.GetImageData().GetDimensions() == (9, 11, 13)
    back = scene.node_to_volume(node)
    assert back.array.dtype == np.int16
    np.testing.assert_array_equal(back.array, array)
    np.testing.assert_allclose(back.affine, volume.affine, atol=1e-9)
    # a voxel lands where the affine says, as Slicer computes it
    ras = [0.0, 0.0, 0.0, 1.0]
    import vtk

    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    matrix.MultiplyPoint([3, 4, 5, 1], ras)
    np.testing.assert_allclose(ras[:3], volume.voxel_to_ras([3, 4, 5])[0], atol=1e-9)


def test_volume_to_node_updates_an_existing_node(slicer_scene):
    first = scene.volume_to_node(slicer_scene, Volume(np.zeros((8, 8, 8), np.float32), np.eye(4)), "v")
    again = scene.volume_to_node(slicer_scene, Volume(np.ones((10, 9, 8), np.float32), np.diag([2, 2, 2, 1.0])),
                                 node=first)
    assert again is first and scene.node_to_volume(first).shape == (10, 9, 8)
    assert np.allclose(scene.node_to_volume(first).spacing, 2)


def test_input_checks(slicer_scene, phantom):
    ct_node = scene.volume_to_node(slicer_scene, phantom.ct, "CT")
    checked = scene.check_input_volume_node(ct_node)
    assert checked.array.dtype == np.float32 and checked.shape == phantom.ct.shape

    with pytest.raises(InputError, match="No input volume"):
        scene.check_input_volume_node(None)
    labelmap = scene.volume_to_node(slicer_scene, phantom.labels, "labels", labelmap=True)
    with pytest.raises(InputError, match="labelmap"):
        scene.check_input_volume_node(labelmap)
    flat = scene.volume_to_node(slicer_scene, Volume(np.asarray(phantom.ct.array)[:, :, 40:41], np.eye(4)), "2D")
    with pytest.raises(InputError, match="2D image or a single slice"):
        scene.check_input_volume_node(flat)
    mr = scene.volume_to_node(slicer_scene, Volume(np.random.default_rng(0).random((32, 32, 32)).astype(np.float32),
                                                   np.eye(4)), "normalised")
    with pytest.raises(InputError, match="does not look like a CT"):
        scene.check_input_volume_node(mr)
    nan = np.asarray(phantom.ct.array, dtype=np.float32).copy()
    nan[3, 3, 3] = np.nan
    with pytest.raises(InputError, match="NaN"):
        scene.check_input_volume_node(scene.volume_to_node(slicer_scene, Volume(nan, np.eye(4)), "nan"))
    vector = slicer_scene.AddNewNodeByClass("vtkMRMLVectorVolumeNode", "rgb")
    with pytest.raises(InputError, match="scalar CT"):
        scene.check_input_volume_node(vector)
    empty = slicer_scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "empty")
    with pytest.raises(InputError, match="no image data"):
        scene.check_input_volume_node(empty)


def test_result_nodes(slicer_scene, input_node, truth):
    table = load_label_table()
    nodes = scene.add_result_to_scene(slicer_scene, truth, input_node)
    expected = [v["name"] for v in truth.vertebrae]
    present = set(np.unique(truth.labels.array).tolist()) - {0}
    assert expected == [label.name for label in table if label.value in present] and len(expected) >= 3

    # segmentation: one segment per vertebra, named, coloured, label values, SNOMED terminology, one shared layer
    segmentation = nodes.segmentation
    info = scene.segments_info(segmentation)
    assert [s["name"] for s in info] == expected
    assert [s["id"] for s in info] == expected
    for segment in info:
        label = table.by_name(segment["name"])
        assert segment["label"] == label.value
        np.testing.assert_allclose(segment["color"], label.color_float, atol=1e-6)
        assert segment["terminology"] == table.terminology_entry(label.value)
        assert f"SCT^{label.snomed_code}^{label.snomed_meaning}" in segment["terminology"]
        assert segment["terminology"].startswith("Segmentation category and type - SpineSeg~SCT^123037004^")
    assert segmentation.GetSegmentation().GetNumberOfLayers() == 1
    reference_role = segmentation.GetReferenceImageGeometryReferenceRole()
    assert segmentation.GetNodeReferenceID(reference_role) == input_node.GetID()
    exported = scene.segmentation_to_labels(segmentation, input_node)
    np.testing.assert_array_equal(exported.array, truth.labels.array)  # exact round trip, label values kept

    # closed surfaces for 3D
    import slicer

    surface = slicer.vtkSegmentationConverter.GetClosedSurfaceRepresentationName()
    assert segmentation.GetSegmentation().ContainsRepresentation(surface)
    assert segmentation.GetDisplayNode().GetVisibility3D()

    # all result nodes sit in the input's study, tagged with role, input and run
    sh = slicer_scene.GetSubjectHierarchyNode()
    study = sh.GetItemParent(sh.GetItemByDataNode(input_node))
    assert sh.GetItemLevel(study) == "Study"
    for role, node in zip(scene.ROLES, (nodes.segmentation, nodes.heatmap, nodes.lesions, nodes.table), strict=True):
        assert sh.GetItemParent(sh.GetItemByDataNode(node)) == study
        assert node.GetAttribute(scene.ATTR_ROLE) == role
        assert node.GetAttribute(scene.ATTR_INPUT) == input_node.GetID()
        assert node.GetAttribute(scene.ATTR_RUN) == nodes.run_id
        assert node.GetAttribute(scene.ATTR_MODEL) == "phantom truth"

    # heatmap: PET-Heat over 0-1, thresholded, in every slice view's foreground with the input as background
    heat = nodes.heatmap
    np.testing.assert_allclose(scene.node_to_volume(heat).array, truth.heatmap.array)
    display = heat.GetDisplayNode()
    assert display.GetColorNode().GetName() == "PET-Heat"
    assert not display.GetAutoWindowLevel() and display.GetWindow() == pytest.approx(1.0)
    assert display.GetLevel() == pytest.approx(0.5)
    assert display.GetApplyThreshold() and display.GetLowerThreshold() == pytest.approx(0.3)
    composites = scene._composite_nodes(slicer_scene)
    assert len(composites) == 3
    for composite in composites:
        assert composite.GetBackgroundVolumeID() == input_node.GetID()
        assert composite.GetForegroundVolumeID() == heat.GetID()
        assert composite.GetForegroundOpacity() == pytest.approx(0.5)

    # lesions: a locked point list labelled "L1 fracture 0.92"
    markups = nodes.lesions
    assert markups.GetLocked()
    assert markups.GetNumberOfControlPoints() == len(truth.lesions)
    for index, lesion in enumerate(truth.lesions):
        label = markups.GetNthControlPointLabel(index)
        assert label == f"{lesion['vertebra']} {lesion['class']} {lesion['score']:.2f}"
        assert markups.GetNthControlPointLocked(index)
        position = [0.0, 0.0, 0.0]
        markups.GetNthControlPointPosition(index, position)
        np.testing.assert_allclose(position, lesion["center_ras"], atol=1e-4)
        assert lesion["class"] in markups.GetNthControlPointDescription(index)
    rows = scene.lesion_rows(markups)
    assert [(r["class"], r["score"], r["vertebra"]) for r in rows] == \
        [(le["class"], le["score"], le["vertebra"]) for le in truth.lesions]

    # the vertebra report table
    table_rows = scene.vertebra_rows(nodes.table)
    assert [r["name"] for r in table_rows] == expected
    for row, vertebra in zip(table_rows, truth.vertebrae, strict=True):
        assert row["label"] == vertebra["label"]
        assert row["volume_mm3"] == pytest.approx(vertebra["volume_mm3"])
        assert row["lesions"] == len(vertebra["lesions"])
    assert sum(r["lesions"] for r in table_rows) == sum(1 for le in truth.lesions if le.get("vertebra"))
    assert nodes.table.GetTable().GetNumberOfColumns() == len(scene.VERTEBRA_TABLE_COLUMNS)
    assert json.loads(nodes.table.GetAttribute(scene.ATTR_REPORT))["model"]["name"] == "phantom truth"


def test_lesion_label_format():
    assert scene.lesion_label({"vertebra": "L1", "class": "fracture", "score": 0.923}) == "L1 fracture 0.92"
    assert scene.lesion_label({"vertebra": None, "class": "lytic", "score": 0.5}) == "lytic 0.50"


def test_heatmap_threshold_and_opacity_setters(slicer_scene, input_node, truth):
    nodes = scene.add_result_to_scene(slicer_scene, truth, input_node, heatmap_threshold=0.1, heatmap_opacity=0.8)
    assert scene.heatmap_threshold(nodes.heatmap) == pytest.approx(0.1)
    assert scene.heatmap_opacity(slicer_scene, nodes.heatmap) == pytest.approx(0.8)
    scene.set_heatmap_threshold(nodes.heatmap, 0.65)
    scene.set_heatmap_opacity(slicer_scene, 0.25, nodes.heatmap)
    assert scene.heatmap_threshold(nodes.heatmap) == pytest.approx(0.65)
    assert nodes.heatmap.GetDisplayNode().GetUpperThreshold() >= 1.0
    assert all(c.GetForegroundOpacity() == pytest.approx(0.25) for c in scene._composite_nodes(slicer_scene))
    scene.set_heatmap_opacity(slicer_scene, 7.0, nodes.heatmap)  # clamped
    assert scene.heatmap_opacity(slicer_scene, nodes.heatmap) == pytest.approx(1.0)


def test_own_heat_colour_table_when_pet_heat_is_missing(slicer_scene, input_node, truth):
    slicer_scene.RemoveNode(slicer_scene.GetNodeByID(scene.HEAT_COLOR_NODE_ID))
    nodes = scene.add_result_to_scene(slicer_scene, truth, input_node)
    color = nodes.heatmap.GetDisplayNode().GetColorNode()
    assert color.GetName() == scene.FALLBACK_HEAT_COLOR_NAME and color.GetNumberOfColors() == 256
    again = scene.add_result_to_scene(slicer_scene, truth, input_node)
    assert again.heatmap.GetDisplayNode().GetColorNode() is color  # made once


def test_3d_toggle(slicer_scene, input_node, truth):
    import slicer

    nodes = scene.add_result_to_scene(slicer_scene, truth, input_node, show_3d=False)
    surface = slicer.vtkSegmentationConverter.GetClosedSurfaceRepresentationName()
    assert not nodes.segmentation.GetDisplayNode().GetVisibility3D()
    assert not nodes.segmentation.GetSegmentation().ContainsRepresentation(surface)
    scene.set_segmentation_3d_visible(nodes.segmentation, True)
    assert nodes.segmentation.GetDisplayNode().GetVisibility3D()
    assert nodes.segmentation.GetSegmentation().ContainsRepresentation(surface)


def test_rerun_replaces_unless_keep(slicer_scene, input_node, truth, phantom):
    first = scene.add_result_to_scene(slicer_scene, truth, input_node)
    count = slicer_scene.GetNumberOfNodes()
    second = scene.add_result_to_scene(slicer_scene, truth, input_node)
    assert slicer_scene.GetNumberOfNodes() == count  # old nodes (and their display nodes) are gone
    assert all(slicer_scene.GetNodeByID(i) is None or slicer_scene.GetNodeByID(i) in second.nodes()
               for i in first.ids().values())
    assert [r.run_id for r in scene.find_results(slicer_scene, input_node)] == [second.run_id]
    assert second.segmentation.GetName() == "CT vertebrae"

    third = scene.add_result_to_scene(slicer_scene, truth, input_node, keep_previous=True)
    assert [r.run_id for r in scene.find_results(slicer_scene, input_node)] == [second.run_id, third.run_id]
    assert scene.latest_result(slicer_scene, input_node).run_id == third.run_id
    assert third.segmentation.GetName() != second.segmentation.GetName()

    # results of another input are never touched
    other = scene.volume_to_node(slicer_scene, phantom.ct, "other CT")
    theirs = scene.add_result_to_scene(slicer_scene, truth, other)
    scene.add_result_to_scene(slicer_scene, truth, input_node)
    assert [r.run_id for r in scene.find_results(slicer_scene, other)] == [theirs.run_id]
    assert len(scene.find_results(slicer_scene)) == 2


def test_existing_segmentation_is_filled(slicer_scene, input_node, truth):
    mine = slicer_scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "my segmentation")
    mine.GetSegmentation().AddEmptySegment("junk", "junk")
    nodes = scene.add_result_to_scene(slicer_scene, truth, input_node, segmentation_node=mine)
    assert nodes.segmentation is mine
    assert [s["name"] for s in scene.segments_info(mine)] == [v["name"] for v in truth.vertebrae]
    again = scene.add_result_to_scene(slicer_scene, truth, input_node, segmentation_node=mine)  # replace: kept
    assert again.segmentation is mine and mine.GetScene() is slicer_scene
    assert len(scene.find_results(slicer_scene, input_node)) == 1


def test_results_follow_the_input_transform(slicer_scene, input_node, truth):
    transform = slicer_scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "shift")
    input_node.SetAndObserveTransformNodeID(transform.GetID())
    nodes = scene.add_result_to_scene(slicer_scene, truth, input_node)
    for node in (nodes.segmentation, nodes.heatmap, nodes.lesions):
        assert node.GetTransformNodeID() == transform.GetID()


def test_jump_to_lesion_centres_slice_views(slicer_scene, input_node, truth):
    nodes = scene.add_result_to_scene(slicer_scene, truth, input_node)
    target = scene.jump_to_lesion(slicer_scene, nodes.lesions, 0)
    np.testing.assert_allclose(target, truth.lesions[0]["center_ras"], atol=1e-4)
    red = slicer_scene.GetNodeByID("vtkMRMLSliceNodeRed")
    slice_to_ras = red.GetSliceToRAS()
    np.testing.assert_allclose([slice_to_ras.GetElement(i, 3) for i in range(3)], target, atol=1e-3)


def test_remove_results(slicer_scene, input_node, truth):
    before = scene.scene_snapshot(slicer_scene)
    scene.add_result_to_scene(slicer_scene, truth, input_node)
    assert scene.remove_results(slicer_scene, input_node) == 4
    after = scene.scene_snapshot(slicer_scene)
    # what is left are only singletons the segmentation display made (none) or nothing at all
    assert [n for n in after if n not in before] == []


@pytest.mark.parametrize("heatmap_format", [".nrrd", ".nii.gz"])
def test_save_and_reload_scene(slicer_scene, input_node, truth, tmp_path, heatmap_format):
    first = scene.add_result_to_scene(slicer_scene, truth, input_node)
    scene.set_heatmap_threshold(first.heatmap, 0.4)
    kept = scene.add_result_to_scene(slicer_scene, truth, input_node, keep_previous=True)
    mrml = scene.save_scene(slicer_scene, tmp_path / "saved" / "spine.mrml", heatmap_format=heatmap_format)
    files = sorted(p.name for p in mrml.parent.iterdir())
    assert "spine.mrml" in files
    assert sum(f.endswith(".seg.nrrd") for f in files) == 2
    assert sum(f.endswith(heatmap_format) and "heatmap" in f for f in files) == 2
    assert sum(f.endswith(".mrk.json") for f in files) == 2
    assert "CT.nrrd" in files
    text = mrml.read_text()
    assert str(tmp_path) not in text  # data files are referenced relative to the scene

    context = scene.load_scene(mrml)
    try:
        loaded = context.scene
        loaded_input = loaded.GetNodeByID(input_node.GetID())
        np.testing.assert_array_equal(scene.node_to_volume(loaded_input).array, scene.node_to_volume(input_node).array)
        results = scene.find_results(loaded, loaded_input)
        assert [r.run_id for r in results] == [first.run_id, kept.run_id]
        for original, reloaded in zip((first, kept), results, strict=True):
            _same_segments(scene.segments_info(reloaded.segmentation), scene.segments_info(original.segmentation))
            np.testing.assert_array_equal(scene.segmentation_to_labels(reloaded.segmentation, loaded_input).array,
                                          truth.labels.array)
            np.testing.assert_allclose(scene.node_to_volume(reloaded.heatmap).array, truth.heatmap.array, atol=1e-6)
            assert reloaded.heatmap.GetDisplayNode().GetColorNode().GetName() == "PET-Heat"
            assert reloaded.lesions.GetLocked()
            assert [reloaded.lesions.GetNthControlPointLabel(i)
                    for i in range(reloaded.lesions.GetNumberOfControlPoints())] == \
                [scene.lesion_label(le) for le in truth.lesions]
            assert scene.lesion_rows(reloaded.lesions)[0]["class"] == truth.lesions[0]["class"]
            assert scene.vertebra_rows(reloaded.table) == scene.vertebra_rows(original.table)
        assert scene.heatmap_threshold(results[0].heatmap) == pytest.approx(0.4)
        sh = loaded.GetSubjectHierarchyNode()
        study = sh.GetItemParent(sh.GetItemByDataNode(loaded_input))
        assert sh.GetItemParent(sh.GetItemByDataNode(results[1].segmentation)) == study
    finally:
        scene.release_scene(context)


def _same_segments(a, b):
    assert [(s["id"], s["name"], s["label"], s["terminology"]) for s in a] == \
        [(s["id"], s["name"], s["label"], s["terminology"]) for s in b]
    for x, y in zip(a, b, strict=True):
        np.testing.assert_allclose(x["color"], y["color"], atol=1e-5)


def test_a_result_is_added_whole_or_not_at_all(slicer_scene, input_node, truth):
    from SpineSegLib.results import SegmentationResult

    first = scene.add_result_to_scene(slicer_scene, truth, input_node)
    before = scene.scene_snapshot(slicer_scene)
    broken = SegmentationResult(truth.labels, Volume(np.zeros((4, 4), np.float32), np.eye(4)), truth.lesions,
                                truth.vertebrae, truth.report)
    with pytest.raises(InputError, match="3D array"):
        scene.add_result_to_scene(slicer_scene, broken, input_node)  # fails after the segmentation was made
    assert scene.scene_snapshot(slicer_scene) == before
    assert [r.run_id for r in scene.find_results(slicer_scene, input_node)] == [first.run_id]
    unknown = truth.labels.array.copy()
    unknown[0, 0, 0] = 99
    with pytest.raises(ValueError, match="not in the label table"):
        scene.add_result_to_scene(slicer_scene, SegmentationResult(Volume(unknown, truth.labels.affine), truth.heatmap),
                                  input_node)
    assert scene.scene_snapshot(slicer_scene) == before
