"""The module logic without Qt: refusals with clear messages, a crashing process, declined installs; a failed
or cancelled run never changes the scene."""

import json
import os
import stat
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from SpineSegLib import dependencies, logic, process, scene
from SpineSegLib.errors import CheckpointError, InputError, SpineSegError
from SpineSegLib.volume import Volume

pytestmark = pytest.mark.slicer


def _options(model, **kwargs):
    return logic.SegmentOptions(**{"model": str(model), "device": "cpu", **kwargs})


def _refused(slicer_scene, node, options, error, match):
    before = scene.scene_snapshot(slicer_scene)
    run = logic.SegmentationRun(slicer_scene, node, options)
    with pytest.raises(error, match=match):
        run.start()
    assert run.workdir is None and run.runner is None
    assert scene.scene_snapshot(slicer_scene) == before


def test_bad_inputs_are_refused_and_change_nothing(slicer_scene, input_node, phantom, model_path):
    _refused(slicer_scene, None, _options(model_path), InputError, "No input volume is selected")
    labelmap = scene.volume_to_node(slicer_scene, phantom.labels, "labels", labelmap=True)
    _refused(slicer_scene, labelmap, _options(model_path), InputError, "is a labelmap")
    single = scene.volume_to_node(slicer_scene, Volume(np.asarray(phantom.ct.array)[:, :, :1], np.eye(4)), "slice")
    _refused(slicer_scene, single, _options(model_path), InputError, "2D image or a single slice")
    table = slicer_scene.AddNewNodeByClass("vtkMRMLTableNode", "not a segmentation")
    _refused(slicer_scene, input_node, _options(model_path, segmentation_node=table), InputError,
             "is not a segmentation node")
    _refused(slicer_scene, input_node, _options(model_path, device="tpu"), InputError, "unknown device")
    from SpineSegLib import scene as other

    elsewhere = other.create_scene(views=False)
    try:
        foreign = other.volume_to_node(elsewhere.scene, phantom.ct, "foreign")
        _refused(slicer_scene, foreign, _options(model_path), InputError, "not in the current scene")
    finally:
        other.release_scene(elsewhere)


def test_bad_checkpoints_are_refused(slicer_scene, input_node, tmp_path, model_path):
    _refused(slicer_scene, input_node, _options(tmp_path / "nowhere"), CheckpointError, "checkpoint not found")
    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / "model_card.json").write_text("{ not json")
    _refused(slicer_scene, input_node, _options(garbage), CheckpointError, "not valid JSON")
    pickle = tmp_path / "model.pt"
    pickle.write_bytes(b"\x80\x04junk")
    _refused(slicer_scene, input_node, _options(pickle), CheckpointError, "refuses to unpickle")
    other_labels = tmp_path / "other-labels"
    other_labels.mkdir()
    card = json.loads((Path(model_path) / "model_card.json").read_text())
    card["labels"]["fingerprint"] = "0" * 16
    (other_labels / "model_card.json").write_text(json.dumps(card))
    _refused(slicer_scene, input_node, _options(other_labels), CheckpointError, "different label table")
    empty_zip = tmp_path / "empty.zip"
    with zipfile.ZipFile(empty_zip, "w"):
        pass
    _refused(slicer_scene, input_node, _options(empty_zip), CheckpointError, "expected one model_card.json")


def test_model_summary(model_path, tmp_path):
    text, ok = logic.model_summary(model_path)
    card = json.loads((Path(model_path) / "model_card.json").read_text())
    assert ok and text.splitlines()[0] == card["name"]
    assert f"Architecture: {card['architecture']['id']}" in text
    text, ok = logic.model_summary(tmp_path / "missing")
    assert not ok and "checkpoint not found" in text
    described = logic.describe_model({
        "name": "spineseg-default", "architecture": {"id": "unet3d", "args": {"channels": [16, 32]}},
        "metrics": {"dice": 0.912, "id_rate": 0.95, "notes": "x"},
        "timing": {"cpu_seconds": 79.4, "gpu_seconds": 4.25, "reference": "512x512x280 CT"}})
    assert described.splitlines() == [
        "spineseg-default", "Architecture: unet3d (channels=[16, 32])", "Metrics: Dice 0.912, ID rate 0.950",
        "Measured time: CPU 79 s, GPU 4.2 s (512x512x280 CT)"]
    trained = logic.describe_model({  # what spineseg-train writes
        "name": "m", "architecture": {"id": "unet3d"},
        "metrics": {"phantom_full": {"cases": 8, "mean_vertebra_dice": 0.9012, "identification_rate": 0.95,
                                     "lesion_recall_at_1fp": float("nan"), "mean_seconds": 30.2, "data": "x"}},
        "timing": {"cpu_seconds_full": 30.2, "cpu_seconds_fast": 9.87}})
    assert trained.splitlines()[1:] == [
        "Architecture: unet3d", "Metrics: Dice (phantom_full) 0.901, ID rate (phantom_full) 0.950",
        "Measured time: CPU (full) 30 s, CPU (fast) 9.9 s"]


def test_model_summary_does_not_import_torch_into_the_host(model_path, tmp_path):
    import subprocess

    code = ("import sys; from SpineSegLib import logic; text, ok = logic.model_summary(sys.argv[1]); "
            "assert ok, text; print('torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code, str(model_path)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(Path(logic.__file__).parents[1])})
    assert done.returncode == 0 and done.stdout.strip() == "False", done.stderr
    other = tmp_path / "other"
    other.mkdir()
    card = json.loads((Path(model_path) / "model_card.json").read_text())
    card["labels"]["fingerprint"] = "x"
    (other / "model_card.json").write_text(json.dumps(card))
    text, ok = logic.model_summary(other)
    assert not ok and "different label table" in text


def test_bundled_model_is_resolved_by_default():
    from SpineSegLib.resources import default_model_path

    bundled = default_model_path()
    assert logic.resolve_model(None) == bundled
    card = logic.check_model(None)
    assert card["name"] and card["architecture"]["id"]
    text, ok = logic.model_summary(None)
    assert ok and text.splitlines()[0] == card["name"]


def _fake_python(tmp_path, body):
    """An executable that stands in for PythonSlicer and ignores its arguments."""
    script = tmp_path / "fake-python"
    script.write_text(f"#!{sys.executable}\nimport sys, time\n{body}\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return str(script)


@pytest.mark.skipif(os.name != "posix", reason="uses a #! script as the interpreter")
def test_crashing_process_gives_a_clear_message_and_changes_nothing(slicer_scene, input_node, model_path, tmp_path):
    python = _fake_python(tmp_path, 'print(\'{"event": "progress", "fraction": 0.2, "stage": "fine pass"}\', '
                                    'flush=True)\nsys.stderr.write("Segmentation fault in libtorch_cpu.so\\n")\n'
                                    'sys.exit(139)')
    before = scene.scene_snapshot(slicer_scene)
    finished = []
    run = logic.SegmentationRun(slicer_scene, input_node, _options(model_path, python=python),
                                on_finished=finished.append).start()
    workdir = run.workdir
    assert (workdir / "input.nii").is_file()
    assert run.wait(timeout=30) == process.ERROR
    assert "stopped unexpectedly (exit code 139)" in run.message and "libtorch_cpu.so" in run.message
    assert finished == [run] and run.nodes is None
    assert scene.scene_snapshot(slicer_scene) == before
    assert not workdir.exists()
    with pytest.raises(SpineSegError, match="stopped unexpectedly"):
        run.raise_for_state()


@pytest.mark.skipif(os.name != "posix", reason="uses a #! script as the interpreter")
def test_cancelled_run_changes_nothing(slicer_scene, input_node, model_path, tmp_path):
    python = _fake_python(tmp_path, 'for i in range(1000):\n'
                                    '    print(\'{"event": "progress", "fraction": %f, "stage": "x"}\' % (i / 1000), '
                                    'flush=True)\n    time.sleep(0.05)')
    scene.add_result_to_scene(slicer_scene, _tiny_result(input_node), input_node)  # a previous result stays
    before = scene.scene_snapshot(slicer_scene)
    progress = []
    run = logic.SegmentationRun(slicer_scene, input_node, _options(model_path, python=python),
                                on_progress=lambda f, s: progress.append(f)).start()
    while len(progress) < 2:
        run.poll()
        time.sleep(0.02)
    pid, workdir = run.runner.pid, run.workdir
    run.cancel()
    assert run.state == process.CANCELLED
    assert scene.scene_snapshot(slicer_scene) == before
    assert not workdir.exists()
    import psutil

    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def _tiny_result(input_node):
    from SpineSegLib.results import SegmentationResult

    ct = scene.node_to_volume(input_node)
    labels = np.zeros(ct.shape, np.uint8)
    labels[20:30, 20:30, 20:30] = 20
    return SegmentationResult(Volume(labels, ct.affine), Volume(np.zeros(ct.shape, np.float32), ct.affine), [],
                              [{"name": "L1", "label": 20, "volume_mm3": 8000.0, "centroid_ras": [0, 0, 0],
                                "lesions": []}], {})


def test_in_process_run_with_a_stand_in(slicer_scene, input_node, model_path, truth):
    def segment(ct, model=None, device="auto", fast=False, progress=None, cancel=None):
        assert ct.array.dtype == np.float32 and ct.shape == truth.labels.shape
        progress(0.5, "half")
        return truth

    progress = []
    nodes = logic.run_segmentation(slicer_scene, input_node, _options(model_path, in_process=True),
                                   on_progress=lambda f, s: progress.append((f, s)), segment=segment)
    assert progress == [(0.5, "half")]
    assert [s["name"] for s in scene.segments_info(nodes.segmentation)] == [v["name"] for v in truth.vertebrae]


def test_input_removed_during_the_run(slicer_scene, input_node, model_path, truth):
    def segment(ct, **kwargs):
        time.sleep(0.2)
        return truth

    run = logic.SegmentationRun(slicer_scene, input_node, _options(model_path, in_process=True),
                                segment=segment).start()
    scene._remove_node(slicer_scene, input_node)
    before = scene.scene_snapshot(slicer_scene)
    assert run.wait(timeout=10) == process.ERROR and "was removed while it was segmented" in run.message
    assert scene.scene_snapshot(slicer_scene) == before


# --- dependencies ----------------------------------------------------------------------------------------------
def _finder(missing):
    real = __import__("importlib").util.find_spec
    return lambda name: None if name in missing else real(name)


def test_requirements_file_lists_what_the_module_needs():
    requirements = dependencies.read_requirements()
    names = {dependencies._requirement_name(r) for r in requirements}
    assert names == set(dependencies.REQUIRED.values())
    assert dependencies.requirements_file().name == "requirements.txt"


def test_nothing_missing_installs_nothing():
    calls = []
    assert dependencies.ensure_dependencies(lambda m: calls.append(m) or True, calls.append) == []
    assert calls == []


def test_declined_install_is_a_clear_error():
    installs = []
    with pytest.raises(dependencies.DependencyError, match="Installation was declined") as error:
        dependencies.ensure_dependencies(lambda message: False, installs.append,
                                         find_spec=_finder({"torch", "monai"}))
    assert "torch" in str(error.value) and "monai" in str(error.value)
    assert installs == []


def test_torch_comes_from_the_pytorch_extension_when_present():
    asked, pip, torch_installs = [], [], []
    state = {"missing": {"torch", "monai", "yaml"}}

    def install_torch():
        torch_installs.append(1)
        state["missing"].discard("torch")
        return object()

    def pip_install(requirements):
        pip.append(requirements)
        state["missing"].difference_update({"monai", "yaml"})

    installed = dependencies.ensure_dependencies(lambda m: asked.append(m) or True, pip_install, install_torch,
                                                 find_spec=lambda name: None if name in state["missing"]
                                                 else __import__("importlib").util.find_spec(name))
    assert [dependencies._requirement_name(i) for i in installed] == ["torch", "monai", "pyyaml"]
    assert torch_installs == [1] and pip == ["monai>=1.4 pyyaml>=6"]
    assert "torch" in asked[0] and "pyyaml" in asked[0]


def test_torch_from_pip_without_the_extension_and_a_cancelled_torch_installer():
    state = {"missing": {"torch"}}
    pip = []

    def pip_install(requirements):
        pip.append(requirements)
        state["missing"].clear()

    def finder(name):
        return None if name in state["missing"] else __import__("importlib").util.find_spec(name)

    dependencies.ensure_dependencies(lambda m: True, pip_install, None, find_spec=finder)
    assert pip == ["torch"]
    state["missing"] = {"torch"}
    with pytest.raises(dependencies.DependencyError, match="PyTorch was not installed"):
        dependencies.ensure_dependencies(lambda m: True, pip_install, lambda: None, find_spec=finder)


def test_still_missing_after_install_is_reported():
    with pytest.raises(dependencies.DependencyError, match="still missing"):
        dependencies.ensure_dependencies(lambda m: True, lambda r: None, find_spec=_finder({"psutil"}))
