"""The Slicer module's self-test body, host-agnostic: ``SpineSegTest`` runs it in the application, CI runs it
against slicer-core (Testing/scene). It makes a phantom CT in the scene, checks the refusals (no input, a
labelmap, a broken checkpoint) and that a cancelled run changes nothing, runs the logic with the bundled model and
checks the segments (names, count, colours, label values, terminology), the heatmap node and its display, the
lesion markups and the vertebra table.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from . import logic as _logic
from . import process as _process
from . import scene as _scene
from .errors import CheckpointError, InputError
from .labels import load_label_table
from .volume import Volume

PHANTOM = {"seed": 3, "region": "lumbar", "shape": (64, 64, 96), "spacing": (2.0, 2.0, 2.0), "lesions": 2}


class SelfTestFailure(AssertionError):
    pass


def _check(condition, message: str) -> None:
    if not condition:
        raise SelfTestFailure(message)


def make_phantom_node(scene, name: str = "SpineSegTest CT", **overrides):
    """A small synthetic lumbar CT as a scalar volume node; returns (node, phantom)."""
    from .phantom import PhantomConfig, generate_phantom

    phantom = generate_phantom(PhantomConfig(**{**PHANTOM, **overrides}))
    node = _scene.volume_to_node(scene, phantom.ct, name, show=True)
    _place_in_new_study(scene, node)
    return node, phantom


def _place_in_new_study(scene, node) -> None:
    sh = scene.GetSubjectHierarchyNode()
    if sh is None:
        return
    patient = sh.CreateSubjectItem(sh.GetSceneItemID(), "SpineSeg test patient")
    study = sh.CreateStudyItem(patient, "SpineSeg test study")
    item = sh.GetItemByDataNode(node) or sh.CreateItem(study, node)
    sh.SetItemParent(item, study)


def check_refusals(scene, input_node, options_factory, log) -> None:
    """Bad inputs raise a clear error and leave the scene as it was."""
    ct = _scene.node_to_volume(input_node)
    labelmap = _scene.volume_to_node(scene, Volume((ct.array > 200).astype(np.uint8), ct.affine),
                                     "SpineSegTest labelmap", labelmap=True)
    before = _scene.scene_snapshot(scene)
    for node, expected in ((None, "No input volume"), (labelmap, "labelmap")):
        try:
            _logic.SegmentationRun(scene, node, options_factory()).start()
        except InputError as error:
            _check(expected.lower() in str(error).lower(), f"unexpected message for a bad input: {error}")
        else:
            raise SelfTestFailure(f"a run on {node.GetName() if node else 'no volume'} was not refused")
    with tempfile.TemporaryDirectory() as tmp:
        broken = Path(tmp) / "broken-checkpoint"
        broken.mkdir()
        (broken / "model_card.json").write_text("{ not json")
        options = options_factory()
        options.model = str(broken)
        try:
            _logic.SegmentationRun(scene, input_node, options).start()
        except CheckpointError as error:
            _check("model_card.json" in str(error) or "checkpoint" in str(error).lower(),
                   f"unclear checkpoint message: {error}")
        else:
            raise SelfTestFailure("a broken checkpoint was not refused")
    _check(_scene.scene_snapshot(scene) == before, "a refused run changed the scene")
    _scene._remove_node(scene, labelmap)
    log("Refusals: no input, labelmap input and a broken checkpoint give clear errors; scene unchanged")


def check_cancel(scene, input_node, options_factory, log, idle=None, wait_for_progress: float = 60.0) -> None:
    """A run cancelled while it works leaves the scene (and the disk) as they were."""
    before = _scene.scene_snapshot(scene)
    progress = []
    run = _logic.SegmentationRun(scene, input_node, options_factory(),
                                 on_progress=lambda f, s: progress.append((f, s))).start()
    workdir = run.workdir
    deadline = time.monotonic() + wait_for_progress
    while not progress and run.poll() == _process.RUNNING and time.monotonic() < deadline:
        if idle is not None:
            idle()
        time.sleep(0.02)
    _check(run.state == _process.RUNNING, f"the run ended before it could be cancelled: {run.state} {run.message}")
    run.cancel()
    _check(run.state == _process.CANCELLED, f"cancel left the run {run.state}")
    _check(_scene.scene_snapshot(scene) == before, "a cancelled run changed the scene")
    _check(workdir is None or not Path(workdir).exists(), f"a cancelled run left {workdir}")
    if isinstance(run.runner, _process.ProcessRunner) and run.runner.pid is not None:
        import psutil

        _check(not psutil.pid_exists(run.runner.pid) or psutil.Process(run.runner.pid).status() == "zombie",
               "the cancelled process is still running")
    log(f"Cancel: stopped after {len(progress)} progress report(s); scene unchanged, nothing left on disk")


def check_result(scene, input_node, nodes, phantom=None, min_recall: float = 0.0, min_overlap: float = 0.5) -> dict:
    """Segments, heatmap, lesion markups and table of a result; returns a summary.

    Against the phantom's truth: ``min_overlap`` is the share of segmented voxels that must lie on the phantom's
    vertebrae (catches flipped or shifted geometry whatever the model's accuracy); ``min_recall`` the share of its
    vertebrae that must be found (a model-quality bar, off by default: the trainer's evaluation measures quality).
    """
    table = load_label_table()
    segmentation = nodes.segmentation
    _check(segmentation is not None and segmentation.IsA("vtkMRMLSegmentationNode"), "no segmentation node")
    info = _scene.segments_info(segmentation)
    names = [s["name"] for s in info]
    _check(len(info) >= 1, "the segmentation has no segments")
    _check(len(set(names)) == len(names), f"a vertebra is segmented twice: {names}")
    for segment in info:
        label = table.by_name(segment["name"])  # raises KeyError for a name outside the label table
        _check(segment["id"] == label.name, f"segment ID {segment['id']} is not its name {label.name}")
        _check(segment["label"] == label.value, f"{label.name}: label value {segment['label']} != {label.value}")
        _check(np.allclose(segment["color"], label.color_float, atol=2e-3),
               f"{label.name}: colour {segment['color']} != {label.color_float}")
        _check(segment["terminology"] == table.terminology_entry(label.value),
               f"{label.name}: terminology {segment['terminology']!r}")
        _check(f"SCT^{label.snomed_code}^" in segment["terminology"], f"{label.name}: no SNOMED-CT code")
    orders = [table.order(table.by_name(n).value) for n in names]
    _check(orders == sorted(orders), f"segments are not in cranio-caudal order: {names}")
    reference = segmentation.GetNodeReference(segmentation.GetReferenceImageGeometryReferenceRole())
    _check(reference is not None and reference.GetID() == input_node.GetID(),
           "the input volume is not the segmentation's reference geometry")
    labels = _scene.segmentation_to_labels(segmentation, input_node)
    present = sorted(set(np.unique(labels.array).tolist()) - {0})
    _check(present == sorted(table.by_name(n).value for n in names),
           f"label values in the segmentation {present} do not match the segments {names}")
    recall = overlap = None
    if phantom is not None:
        truth = set(np.unique(phantom.labels.array).tolist()) - {0}
        found = set(present)
        recall = len(truth & found) / max(len(truth), 1)
        _check(recall >= min_recall, f"found {sorted(found)} of the phantom's vertebrae {sorted(truth)}")
        segmented = labels.array > 0
        overlap = float(np.count_nonzero(segmented & (np.asarray(phantom.labels.array) > 0))) / max(
            int(np.count_nonzero(segmented)), 1)
        _check(overlap >= min_overlap, f"only {overlap:.0%} of the segmented voxels lie on the phantom's vertebrae "
               "(flipped or shifted geometry?)")

    heat = nodes.heatmap
    _check(heat is not None and heat.IsA("vtkMRMLScalarVolumeNode"), "no heatmap volume")
    heat_array = _scene.node_to_volume(heat).array
    _check(heat_array.shape == _scene.node_to_volume(input_node).array.shape, "heatmap grid differs from the input")
    _check(float(heat_array.min()) >= 0.0 and float(heat_array.max()) <= 1.0 + 1e-6, "heatmap outside [0, 1]")
    display = heat.GetDisplayNode()
    color_node = display.GetColorNode()
    _check(color_node is not None and color_node.GetName() in ("PET-Heat", _scene.FALLBACK_HEAT_COLOR_NAME),
           f"heatmap colour table is {color_node.GetName() if color_node else None}")
    _check(display.GetApplyThreshold() and display.GetLowerThreshold() > 0, "heatmap threshold not applied")
    _check(not display.GetAutoWindowLevel() and abs(display.GetWindow() - 1.0) < 1e-6, "heatmap window is not 0-1")
    composites = _scene._composite_nodes(scene)
    if composites:
        shown = [c for c in composites if c.GetForegroundVolumeID() == heat.GetID()]
        _check(shown, "the heatmap is not in any slice view's foreground")
        _check(all(0.0 < c.GetForegroundOpacity() <= 1.0 for c in shown), "heatmap foreground opacity is 0")

    markups = nodes.lesions
    _check(markups is not None and markups.IsA("vtkMRMLMarkupsFiducialNode"), "no lesion markups")
    _check(markups.GetLocked(), "the lesion markups are not locked")
    rows = _scene.lesion_rows(markups)
    for index, row in enumerate(rows):
        _check(markups.GetNthControlPointLabel(index) == _scene.lesion_label(row),
               f"lesion {index} label {markups.GetNthControlPointLabel(index)!r}")
        _check(row["class"] in table.lesion_class_names, f"lesion {index} has class {row['class']!r}")
        _check(0.0 <= float(row["score"]) <= 1.0, f"lesion {index} score {row['score']}")

    _check(nodes.table is not None, "no vertebra table")
    vertebra_rows = _scene.vertebra_rows(nodes.table)
    _check([r["name"] for r in vertebra_rows] == names, f"table rows {[r['name'] for r in vertebra_rows]} != {names}")
    _check(all(r["volume_mm3"] > 0 for r in vertebra_rows), "a vertebra has no volume")
    _check(sum(r["lesions"] for r in vertebra_rows) <= len(rows), "the table counts more lesions than found")
    for node in nodes.nodes():
        _check(node.GetAttribute(_scene.ATTR_INPUT) == input_node.GetID(), f"{node.GetName()}: no input attribute")
    return {"segments": names, "lesions": len(rows), "recall": recall, "overlap": overlap,
            "lesion_labels": [markups.GetNthControlPointLabel(i) for i in range(markups.GetNumberOfControlPoints())]}


def run_selftest(scene, model: str | None = None, device: str = "auto", in_process: bool = False,
                 python: str | None = None, log: Callable[[str], None] | None = None, idle=None,
                 min_recall: float = 0.0, min_overlap: float = 0.5, timeout: float = 900.0,
                 phantom: dict | None = None) -> dict:
    """The module's self-test in ``scene`` (the application's scene, or one from :func:`scene.create_scene`).

    ``phantom``: overrides of :data:`PHANTOM` (e.g. a larger ``shape``, whose field of view holds lesions).
    """
    log = log or (lambda message: None)

    def options():
        return _logic.SegmentOptions(model=model, device=device, in_process=in_process, python=python)

    started = time.monotonic()
    input_node, phantom = make_phantom_node(scene, **(phantom or {}))
    log(f"Phantom CT in the scene: {phantom.ct.shape} voxels, vertebrae {', '.join(phantom.vertebrae)}, "
        f"{len(phantom.lesions)} lesion(s)")
    check_refusals(scene, input_node, options, log)
    check_cancel(scene, input_node, options, log, idle=idle)
    run_started = time.monotonic()
    nodes = _logic.run_segmentation(scene, input_node, options(), timeout=timeout, idle=idle)
    seconds = time.monotonic() - run_started
    summary = check_result(scene, input_node, nodes, phantom, min_recall=min_recall, min_overlap=min_overlap)
    log(f"Segmented in {seconds:.1f} s: {', '.join(summary['segments'])} (found {summary['recall']:.0%} of the "
        f"phantom's vertebrae, {summary['overlap']:.0%} of segmented voxels on them); lesions: "
        f"{'; '.join(summary['lesion_labels']) or 'none'}")
    summary.update(seconds=round(seconds, 2), total_seconds=round(time.monotonic() - started, 2),
                   truth=list(phantom.vertebrae))
    log("SpineSeg self-test passed: " + json.dumps({k: summary[k] for k in ("segments", "lesions", "seconds")}))
    return summary
