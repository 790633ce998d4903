"""Static checks of the Slicer module: the .ui has every widget the code uses, the parameter node matches the
.ui, the CMakeLists lists every Python file and resource, icons exist, SpineSegLib imports without Qt."""

import ast
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slicer

ROOT = Path(__file__).resolve().parents[2]
MODULE = ROOT / "SpineSegModule"
UI_FILE = MODULE / "Resources" / "UI" / "SpineSeg.ui"
MODULE_FILE = MODULE / "SpineSeg.py"


def _ui_widgets() -> dict[str, str]:
    return {w.get("name"): w.get("class") for w in ET.parse(UI_FILE).iter("widget")}


def _ui_parameters() -> dict[str, str]:
    """widget name -> SlicerParameterName for the widgets bound to the parameter node."""
    bound = {}
    for widget in ET.parse(UI_FILE).iter("widget"):
        for prop in widget.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                bound[widget.get("name")] = prop.find("string").text
    return bound


def _parameter_fields() -> dict[str, str]:
    tree = ast.parse(MODULE_FILE.read_text())
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == "SpineSegParameterNode":
            return {item.target.id: ast.unparse(item.annotation) for item in node.body
                    if isinstance(item, ast.AnnAssign)}
    raise AssertionError("SpineSegParameterNode not found in SpineSeg.py")


def test_every_ui_widget_the_code_uses_exists():
    used = set(re.findall(r"self\.ui\.(\w+)", MODULE_FILE.read_text()))
    assert used, "SpineSeg.py uses no self.ui widgets?"
    missing = sorted(used - set(_ui_widgets()))
    assert not missing, f"widgets used in SpineSeg.py but not in SpineSeg.ui: {missing}"


def test_ui_is_a_designer_file_for_a_qmrml_widget():
    root = ET.parse(UI_FILE).getroot()
    assert root.tag == "ui" and root.find("class").text == "SpineSeg"
    top = root.find("widget")
    assert top.get("class") == "qMRMLWidget" and top.get("name") == "SpineSeg"
    declared = {c.find("class").text for c in root.iter("customwidget")}
    custom = {cls for cls in _ui_widgets().values() if cls.startswith(("qMRML", "ctk"))}
    assert custom <= declared, f"custom widgets not declared: {custom - declared}"
    # each MRML selector gets the scene from the top widget's mrmlSceneChanged signal
    receivers = {c.find("receiver").text for c in root.iter("connection")
                 if c.find("signal").text == "mrmlSceneChanged(vtkMRMLScene*)"}
    selectors = {name for name, cls in _ui_widgets().items() if cls == "qMRMLNodeComboBox"}
    assert selectors == receivers


def test_parameter_node_matches_the_ui():
    fields = _parameter_fields()
    bound = _ui_parameters()
    widgets = _ui_widgets()
    assert set(bound.values()) <= set(fields), f"unknown parameters in the .ui: {set(bound.values()) - set(fields)}"
    for widget, parameter in bound.items():
        annotation = fields[parameter]
        cls = widgets[widget]
        if cls == "QComboBox":
            assert "Choice" in annotation, f"{widget}: a QComboBox needs a Choice-annotated parameter"
        elif cls == "qMRMLNodeComboBox":
            assert annotation.startswith("vtkMRML"), f"{widget}: a node selector needs a node parameter"
        elif cls == "QCheckBox":
            assert annotation == "bool", f"{widget}: a check box needs a bool parameter"
        elif cls == "ctkSliderWidget":
            assert "float" in annotation and "WithinRange" in annotation, f"{widget}: needs a bounded float"
        else:
            raise AssertionError(f"{widget} ({cls}) is bound to {parameter} but no connector handles it")
    # the GUI state a saved scene must restore
    for name in ("inputVolume", "modelPath", "device", "mode", "outputSegmentation", "keepPrevious", "showIn3D",
                 "heatmapOpacity", "heatmapThreshold"):
        assert name in fields


def test_module_classes_follow_slicer_conventions():
    tree = ast.parse(MODULE_FILE.read_text())
    classes = {node.name: [ast.unparse(b) for b in node.bases] for node in tree.body if isinstance(node, ast.ClassDef)}
    assert classes["SpineSeg"] == ["ScriptedLoadableModule"]
    assert "ScriptedLoadableModuleWidget" in classes["SpineSegWidget"]
    assert classes["SpineSegLogic"] == ["ScriptedLoadableModuleLogic"]
    assert classes["SpineSegTest"] == ["ScriptedLoadableModuleTest"]
    text = MODULE_FILE.read_text()
    assert 'loadUI(self.resourcePath("UI/SpineSeg.ui"))' in text and "childWidgetVariables" in text
    assert "from SpineSegLib.selftest import run_selftest" in text
    compile(text, str(MODULE_FILE), "exec")


def test_no_install_at_import_time():
    tree = ast.parse(MODULE_FILE.read_text())
    top_level_calls = [ast.unparse(n) for n in tree.body if isinstance(n, ast.Expr) and isinstance(n.value, ast.Call)]
    assert top_level_calls == []
    text = MODULE_FILE.read_text()
    assert "pip_install" in text and "confirmOkCancelDisplay" in text and "installTorch(askConfirmation=True)" in text


def _cmake_scripts() -> list[str]:
    text = (MODULE / "CMakeLists.txt").read_text()
    block = re.search(r"set\(MODULE_PYTHON_SCRIPTS\n(.*?)\n\s*\)\n", text, re.S).group(1)
    return [line.strip() for line in block.splitlines() if line.strip() and not line.strip().startswith("#")]


def test_cmake_lists_every_python_file():
    listed = _cmake_scripts()
    on_disk = ["SpineSeg.py"] + sorted(p.relative_to(MODULE).as_posix() for p in (MODULE / "SpineSegLib").rglob("*.py")
                                       if "__pycache__" not in p.parts)
    missing = sorted(set(on_disk) - set(listed))
    stale = sorted(set(listed) - set(on_disk))
    assert not missing and not stale, (f"SpineSegModule/CMakeLists.txt: missing {missing}, stale {stale}; "
                                       "run python docs/tools/update_module_cmake.py")
    assert len(listed) == len(set(listed))


def test_cmake_resources_and_extension_metadata():
    module_cmake = (MODULE / "CMakeLists.txt").read_text()
    for resource in ("Resources/Icons/${MODULE_NAME}.png", "Resources/UI/${MODULE_NAME}.ui"):
        assert resource in module_cmake
        assert (MODULE / resource.replace("${MODULE_NAME}", "SpineSeg")).is_file()
    assert "WITH_GENERIC_TESTS" in module_cmake
    assert "slicer_add_python_unittest(SCRIPT ${MODULE_NAME}.py)" in module_cmake
    assert "models/spineseg-default/*" in module_cmake and "labels.json" in module_cmake
    assert "Resources/${MODULE_NAME}" in module_cmake  # where SpineSegLib.resources looks when installed
    assert (ROOT / "Resources" / "labels.json").is_file()
    assert (ROOT / "SpineSegExtension" / "requirements.txt").is_file()
    top = (ROOT / "CMakeLists.txt").read_text()
    for needle in ("project(SpineSeg)", 'EXTENSION_CATEGORY "Segmentation"', 'EXTENSION_CONTRIBUTORS "SpineSeg team"',
                   "EXTENSION_DESCRIPTION", "EXTENSION_ICONURL", "EXTENSION_SCREENSHOTURLS",
                   "EXTENSION_DEPENDS PyTorch",
                   "find_package(Slicer REQUIRED)", "include(${Slicer_USE_FILE})", "add_subdirectory(SpineSegModule)",
                   "include(${Slicer_EXTENSION_GENERATE_CONFIG})", "include(${Slicer_EXTENSION_CPACK})"):
        assert needle in top, needle
    for url in re.findall(r"https://\S+?(?=\"|\s)", top):
        assert "github" in url and "spineseg/SpineSeg" in url


def test_icons():
    from PIL import Image

    paths = [MODULE / "Resources" / "Icons" / "SpineSeg.png", ROOT / "SpineSegExtension" / "SpineSeg.png"]
    images = [Image.open(p) for p in paths]
    assert all(im.size == (128, 128) and im.format == "PNG" for im in images)
    assert images[0].tobytes() == images[1].tobytes()
    assert len(np.unique(np.asarray(images[0].convert("RGB")).reshape(-1, 3), axis=0)) > 20  # not a flat square


def test_scene_side_imports_need_no_qt_and_no_heavy_packages():
    """SpineSeg.py imports these at module load in Slicer, before dependencies may be installed."""
    code = (
        "import builtins, sys\n"
        "real = builtins.__import__\n"
        "def guarded(name, *a, **k):\n"
        "    if name.split('.')[0] in ('qt', 'ctk', 'torch', 'monai', 'nibabel', 'nrrd', 'scipy', 'psutil', 'PIL',"
        " 'pydicom', 'safetensors', 'yaml', 'tqdm'):\n"
        "        raise ImportError('blocked ' + name)\n"
        "    return real(name, *a, **k)\n"
        "builtins.__import__ = guarded\n"
        f"sys.path.insert(0, {str(MODULE)!r})\n"
        "from SpineSegLib import dependencies, logic, process, scene, errors, labels\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
