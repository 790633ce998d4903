"""Drive SpineSeg.py (the Slicer module) without the Slicer application: run in a separate process by
test_module.py.

Qt, CTK and the application are replaced by small stand-ins (widgets record what is set on them; a QTimer is
polled by hand); MRML is the real slicer-core scene with the module logics attached. The segmentation itself runs
in process with a stand-in network output, so the widget's code paths (busy state, polling, tables, sliders, lesion
clicks, refusals, declined install, cancel, crash) run for real. Prints "OK" at the end; any failed check raises.
"""

import sys
import time
import types
import unittest
import xml.etree.ElementTree as ET
from pathlib import Path

HERE = Path(__file__).resolve().parent
MODULE_DIR = HERE.parents[1] / "SpineSegModule"
sys.path[:0] = [str(MODULE_DIR), str(HERE)]

import numpy as np  # noqa: E402
import slicer  # noqa: E402  (slicer-core)
import slicer.util  # noqa: E402

from SpineSegLib import scene as spineScene  # noqa: E402

ERRORS, CONFIRMS = [], []


# --- Qt stand-ins ----------------------------------------------------------------------------------------------
class FakeWidget:
    def __init__(self, name="", cls="QWidget"):
        self.name, self.cls = name, cls
        self.enabled, self.visible, self.text, self.toolTip, self.styleSheet = True, True, "", "", ""
        self.value, self.checked = 0, False
        self.items, self.currentIndex = [], -1
        self.rows, self.cells = 0, {}
        self.connections = {}
        self._current_node = None

    def connect(self, signal, slot):
        self.connections.setdefault(signal, []).append(slot)

    def emit(self, signal, *args):
        for slot in self.connections.get(signal, []):
            slot(*args)

    def show(self):
        self.visible = True

    def hide(self):
        self.visible = False

    def setMRMLScene(self, scene):
        self.scene = scene

    # QComboBox
    def clear(self):
        self.items, self.currentIndex = [], -1

    def addItem(self, text, data=None):
        self.items.append((text, data))
        if self.currentIndex < 0:
            self.currentIndex = 0

    def findData(self, data):
        return next((i for i, (_, d) in enumerate(self.items) if d == data), -1)

    def setCurrentIndex(self, index):
        self.currentIndex = index

    def itemData(self, index):
        return self.items[index][1]

    def itemText(self, index):
        return self.items[index][0]

    # QTableWidget
    def setRowCount(self, rows):
        self.rows = rows
        self.cells = {k: v for k, v in self.cells.items() if k[0] < rows}

    def rowCount(self):
        return self.rows

    def setItem(self, row, column, item):
        self.cells[(row, column)] = item

    def item(self, row, column):
        return self.cells.get((row, column))

    def resizeColumnsToContents(self):
        pass

    # qMRMLNodeComboBox
    def currentNode(self):
        return self._current_node


class FakeTableItem:
    def __init__(self, text):
        self._text = text

    def text(self):
        return self._text

    def setFlags(self, flags):
        self.flags = flags


class FakeTimer:
    def __init__(self):
        self.active, self.interval, self.slots = False, 0, []

    def setInterval(self, ms):
        self.interval = ms

    def connect(self, signal, slot):
        self.slots.append(slot)

    def start(self):
        self.active = True

    def stop(self):
        self.active = False

    def fire(self):
        for slot in self.slots:
            slot()


class Qt:
    ItemIsSelectable, ItemIsEnabled = 1, 32


class FakeFileDialog:
    answer = ""

    @staticmethod
    def getOpenFileName(*args):
        return FakeFileDialog.answer


qt = types.ModuleType("qt")
qt.QTimer, qt.QTableWidgetItem, qt.Qt, qt.QFileDialog = FakeTimer, FakeTableItem, Qt, FakeFileDialog
sys.modules["qt"] = qt
sys.modules["ctk"] = types.ModuleType("ctk")


# --- Slicer application stand-ins ---------------------------------------------------------------------------------
context = spineScene.create_scene()
slicer.mrmlScene = context.scene
slicer.app = types.SimpleNamespace(processEvents=lambda: None, testingEnabled=lambda: True)
slicer.modules = types.SimpleNamespace(markups=types.SimpleNamespace(logic=lambda: context.logic("Markups")))

i18n = types.ModuleType("slicer.i18n")
i18n.tr = lambda text: text
i18n.translate = lambda context_name, text: text
sys.modules["slicer.i18n"] = i18n


class _Nothing:
    def __init__(self, *args, **kwargs):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def load_ui(path):
    widget = FakeWidget("SpineSeg", "qMRMLWidget")
    widget.ui_path = path
    return widget


def child_widget_variables(widget):
    names = {w.get("name"): w.get("class") for w in ET.parse(widget.ui_path).iter("widget")}
    return types.SimpleNamespace(**{name: FakeWidget(name, cls) for name, cls in names.items()})


slicer.util.loadUI = load_ui
slicer.util.childWidgetVariables = child_widget_variables
slicer.util.errorDisplay = lambda message, **kwargs: ERRORS.append(message)
slicer.util.confirmOkCancelDisplay = lambda message, *args, **kwargs: CONFIRMS.append(message) or False
slicer.util.pip_install = lambda requirements: (_ for _ in ()).throw(AssertionError("pip must not run"))
slicer.util.WaitCursor = _Nothing
slicer.util.NodeModify = _Nothing
slicer.util.mainWindow = lambda: None


class VTKObservationMixin:
    def __init__(self):
        self.observations = []

    def addObserver(self, obj, event, callback, *args, **kwargs):
        tag = obj.AddObserver(event, callback)
        self.observations.append((obj, event, callback, tag))

    def removeObserver(self, obj, event, callback):
        for observation in [o for o in self.observations if o[:3] == (obj, event, callback)]:
            obj.RemoveObserver(observation[3])
            self.observations.remove(observation)

    def removeObservers(self, *args):
        for obj, _event, _callback, tag in self.observations:
            obj.RemoveObserver(tag)
        self.observations = []


slicer.util.VTKObservationMixin = VTKObservationMixin

slm = types.ModuleType("slicer.ScriptedLoadableModule")


class ScriptedLoadableModule:
    def __init__(self, parent):
        self.parent = parent


class ScriptedLoadableModuleWidget:
    def __init__(self, parent=None):
        self.parent = parent or types.SimpleNamespace(isEntered=True)
        self.layout = types.SimpleNamespace(addWidget=lambda widget: None)

    def resourcePath(self, relative):
        return str(MODULE_DIR / "Resources" / relative)

    def setup(self):
        pass


class ScriptedLoadableModuleLogic:
    def getParameterNode(self):
        node = slicer.mrmlScene.GetFirstNodeByName("SpineSeg")
        if node is None:
            node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScriptedModuleNode", "SpineSeg")
        return node


class ScriptedLoadableModuleTest(unittest.TestCase):
    def delayDisplay(self, message, *args):
        print(message)


slm.ScriptedLoadableModule = ScriptedLoadableModule
slm.ScriptedLoadableModuleWidget = ScriptedLoadableModuleWidget
slm.ScriptedLoadableModuleLogic = ScriptedLoadableModuleLogic
slm.ScriptedLoadableModuleTest = ScriptedLoadableModuleTest
sys.modules["slicer.ScriptedLoadableModule"] = slm

pnw = types.ModuleType("slicer.parameterNodeWrapper")


class Choice:
    def __init__(self, choices):
        self.choices = choices


class WithinRange:
    def __init__(self, low, high):
        self.low, self.high = low, high


def parameterNodeWrapper(cls):
    """Typed attributes with defaults over a parameter node (values kept in Python, like the real wrapper's view)."""
    import typing

    hints = typing.get_type_hints(cls, include_extras=True)
    defaults = {name: getattr(cls, name, [] if "list" in str(hint) else None) for name, hint in hints.items()}

    class Wrapped:
        def __init__(self, node):
            object.__setattr__(self, "parameterNode", node)
            object.__setattr__(self, "connected", None)
            for name, value in defaults.items():
                object.__setattr__(self, name, list(value) if isinstance(value, list) else value)

        def __setattr__(self, name, value):
            object.__setattr__(self, name, value)
            self.parameterNode.Modified()  # the real wrapper writes the node, which fires ModifiedEvent

        def AddObserver(self, event, callback):
            return self.parameterNode.AddObserver(event, callback)

        def RemoveObserver(self, tag):
            self.parameterNode.RemoveObserver(tag)

        def connectGui(self, ui):
            object.__setattr__(self, "connected", ui)
            return "tag"

        def disconnectGui(self, tag):
            object.__setattr__(self, "connected", None)

    Wrapped.__name__ = cls.__name__
    Wrapped.hints = hints
    return Wrapped


pnw.parameterNodeWrapper, pnw.Choice, pnw.WithinRange = parameterNodeWrapper, Choice, WithinRange
sys.modules["slicer.parameterNodeWrapper"] = pnw


# --- the scenarios -----------------------------------------------------------------------------------------------
def check(condition, message):
    if not condition:
        raise AssertionError(message)


def pump(widget, timeout=30.0):
    deadline = time.monotonic() + timeout
    while widget._timer.active:
        check(time.monotonic() < deadline, "the run did not finish")
        widget._timer.fire()
        time.sleep(0.01)


def main(model_path: str) -> None:
    from conftest import PHANTOM, truth_result

    from SpineSegLib.phantom import PhantomConfig, generate_phantom

    phantom = generate_phantom(PhantomConfig(**PHANTOM))
    truth = truth_result(phantom)
    scene = slicer.mrmlScene
    ct = spineScene.volume_to_node(scene, phantom.ct, "CT")

    # the network: a stand-in returning the phantom's truth, with a switch for slow (cancel) and crash runs
    behaviour = {"mode": "ok"}

    def segment_volume(volume, model=None, device="auto", fast=False, progress=None, cancel=None):
        check(device == "cpu" and fast is True, f"options did not reach the run: {device}, {fast}")
        for step in range(200 if behaviour["mode"] == "slow" else 3):
            progress(step / 200, "fine pass")
            time.sleep(0.01)
        if behaviour["mode"] == "crash":
            raise RuntimeError("CUDA out of memory")
        return truth

    inference = types.ModuleType("SpineSegLib.inference")
    inference.segment_volume = segment_volume
    sys.modules["SpineSegLib.inference"] = inference

    import SpineSeg

    module = SpineSeg.SpineSeg(types.SimpleNamespace())
    check(module.parent.title == "SpineSeg" and module.parent.categories == ["Segmentation"], "module metadata")

    original_options = SpineSeg.SpineSegLogic.optionsFromParameterNode

    def in_process_options(parameterNode):
        options = original_options(parameterNode)
        options.in_process = True
        return options

    SpineSeg.SpineSegLogic.optionsFromParameterNode = staticmethod(in_process_options)

    widget = SpineSeg.SpineSegWidget()
    widget.setup()
    ui, params = widget.ui, widget._parameterNode
    check(params.connected is ui, "the parameter node is connected to the GUI")
    check(params.inputVolume is ct, "the first CT volume is selected")
    check(ui.segmentButton.enabled, "Segment is enabled with an input")
    check(not ui.progressBar.visible and not ui.cancelButton.visible, "progress hidden while idle")
    check([d for _, d in ui.modelComboBox.items] == ["", SpineSeg.ADD_CHECKPOINT], "model combo items")

    # "Add checkpoint…" with a file dialog answer: validated, added, selected, described
    FakeFileDialog.answer = str(Path(model_path) / "model_card.json")
    ui.modelComboBox.currentIndex = 1
    widget.onModelActivated(1)
    check(params.modelPath == str(model_path) and params.addedModels == [str(model_path)], "checkpoint added")
    check(ui.modelComboBox.itemData(ui.modelComboBox.currentIndex) == str(model_path), "added checkpoint selected")
    check("Architecture:" in ui.modelInfoLabel.text, f"model card shown: {ui.modelInfoLabel.text!r}")
    FakeFileDialog.answer = str(Path(model_path).parent / "missing.zip")
    widget.onModelActivated(len(ui.modelComboBox.items) - 1)
    check(ERRORS and "cannot be used" in ERRORS[-1], "a bad checkpoint is refused with a message")
    check(params.modelPath == str(model_path), "the selection is kept after a refused checkpoint")

    params.device, params.mode = "CPU", "Fast"

    # a run: busy while it works, then tables and status; the scene gets the result
    ERRORS.clear()
    widget.onSegmentButton()
    check(widget._timer.active and ui.progressBar.visible and ui.cancelButton.visible, "busy state")
    check(not ui.segmentButton.enabled and not ui.inputsCollapsibleButton.enabled, "inputs locked while busy")
    pump(widget)
    check(not ERRORS, f"unexpected errors: {ERRORS}")
    check(ui.statusLabel.text.startswith("Done in"), f"status: {ui.statusLabel.text}")
    check(ui.segmentButton.enabled and not ui.progressBar.visible, "panel usable again")
    result = spineScene.latest_result(scene, ct)
    check(result is not None and len(result.nodes()) == 4, "result nodes in the scene")
    check(ui.vertebraTable.rowCount() == len(truth.vertebrae), "vertebra table filled")
    check(ui.vertebraTable.item(0, 0).text() == truth.vertebrae[0]["name"], "vertebra names in the table")
    check(ui.lesionTable.rowCount() == len(truth.lesions), "lesion table filled")
    check(ui.lesionTable.item(0, 0).text() == truth.lesions[0]["class"], "lesion class in the table")

    # outputs: sliders and 3D toggle act on the current result; a lesion click centres the views
    widget.onHeatmapOpacityChanged(0.2)
    check(spineScene.heatmap_opacity(scene, result.heatmap) == 0.2, "opacity slider")
    widget.onHeatmapThresholdChanged(0.7)
    check(abs(spineScene.heatmap_threshold(result.heatmap) - 0.7) < 1e-9, "threshold slider")
    widget.onShow3DToggled(False)
    check(not result.segmentation.GetDisplayNode().GetVisibility3D(), "3D toggle")
    widget.onLesionClicked(0, 1)
    red = scene.GetNodeByID("vtkMRMLSliceNodeRed").GetSliceToRAS()
    check(np.allclose([red.GetElement(i, 3) for i in range(3)], truth.lesions[0]["center_ras"], atol=1e-3),
          "lesion click centres the slice views")

    # corrections: renumber from the first vertebra, undo, save the case as training data
    from SpineSegLib.labels import load_label_table

    table = load_label_table()
    first = truth.vertebrae[0]["name"]
    above = table.names[table.names.index(first) - 1]
    check(ui.correctionVertebraComboBox.itemText(0) == first, "correction choices list the result's vertebrae")
    ui.correctionVertebraComboBox.currentIndex = 0
    ui.correctionNameComboBox.currentIndex = ui.correctionNameComboBox.findData(above)
    ERRORS.clear()
    widget.onRenumber()
    check(not ERRORS, f"renumber errors: {ERRORS}")
    check(ui.vertebraTable.item(0, 0).text() == above, f"renumbered: {ui.vertebraTable.item(0, 0).text()}")
    check(result.segmentation.GetSegmentation().GetSegment(above) is not None, "segment renamed in the scene")
    ui.undoCorrectionButton.emit("clicked(bool)", False)
    check(ui.vertebraTable.item(0, 0).text() == first, "undo restores the numbering")
    # point tools act at the crosshair; lesion tools on the row selected in the lesion table
    crosshair = scene.GetFirstNodeByClass("vtkMRMLCrosshairNode") or scene.AddNode(slicer.vtkMRMLCrosshairNode())
    lesions_before = ui.lesionTable.rowCount()
    crosshair.SetCrosshairRAS(*truth.vertebrae[1]["centroid_ras"])
    ui.lesionClassComboBox.currentIndex = ui.lesionClassComboBox.findData("lytic")
    widget.onAddLesion()
    check(not ERRORS and ui.lesionTable.rowCount() == lesions_before + 1, f"lesion added: {ERRORS}")
    ui.lesionTable.currentRow = lambda: lesions_before  # the added lesion
    ui.lesionClassComboBox.currentIndex = ui.lesionClassComboBox.findData("sclerotic")
    widget.onSetLesionClass()
    check(ui.lesionTable.item(lesions_before, 0).text() == "sclerotic", "lesion class changed")
    widget.onDeleteLesion()
    check(not ERRORS and ui.lesionTable.rowCount() == lesions_before, f"lesion deleted: {ERRORS}")
    vertebrae_before = ui.vertebraTable.rowCount()
    ui.correctionVertebraComboBox.currentIndex = 1
    crosshair.SetCrosshairRAS(*truth.vertebrae[1]["centroid_ras"])
    widget.onSplitPlane()
    check(not ERRORS and ui.vertebraTable.rowCount() == vertebrae_before + 1, f"split at the crosshair: {ERRORS}")
    ui.undoCorrectionButton.emit("clicked(bool)", False)
    check(ui.vertebraTable.rowCount() == vertebrae_before, "undo the split")

    import tempfile

    dataset = Path(tempfile.mkdtemp()) / "corrected"
    ui.trainingFolderLineEdit.text = str(dataset)
    widget.onSaveCase()
    check(not ERRORS and (dataset / "dataset.json").is_file(), f"case saved: {ERRORS}")
    check(ui.statusLabel.text.startswith("Saved training case"), ui.statusLabel.text)

    # refusals: a labelmap input gives a clear message, the panel is usable and the scene unchanged
    labelmap = spineScene.volume_to_node(scene, phantom.labels, "labels", labelmap=True)
    before = spineScene.scene_snapshot(scene)
    params.inputVolume = labelmap
    widget.onSegmentButton()
    check(ERRORS and "labelmap" in ERRORS[-1], f"labelmap refused: {ERRORS}")
    check(ui.segmentButton.enabled and not ui.progressBar.visible and not widget._timer.active, "UI re-enabled")
    check(spineScene.scene_snapshot(scene) == before, "a refused run changed the scene")
    params.inputVolume = ct

    # a declined install: clear message, nothing installed, nothing added
    from SpineSegLib import dependencies

    real_missing = dependencies.missing_requirements
    dependencies.missing_requirements = lambda *args, **kwargs: ["torch", "monai>=1.4"]
    widget.onSegmentButton()
    dependencies.missing_requirements = real_missing
    check(CONFIRMS and "torch" in CONFIRMS[-1], "the user is asked before installing")
    check("Installation was declined" in ERRORS[-1], f"declined install message: {ERRORS[-1]}")
    check(ui.segmentButton.enabled and spineScene.scene_snapshot(scene) == before, "declined: nothing changed")

    # cancel while running: the scene stays as it was
    behaviour["mode"] = "slow"
    widget.onSegmentButton()
    for _ in range(5):
        widget._timer.fire()
        time.sleep(0.02)
    widget.onCancelButton()
    check(ui.statusLabel.text.startswith("Cancelled"), f"status after cancel: {ui.statusLabel.text}")
    check(not widget._timer.active and ui.segmentButton.enabled, "UI usable after cancel")
    check(spineScene.scene_snapshot(scene) == before, "a cancelled run changed the scene")

    # a crash inside the run: its message is shown, the scene unchanged
    behaviour["mode"] = "crash"
    errors = len(ERRORS)
    widget.onSegmentButton()
    pump(widget)
    check(len(ERRORS) == errors + 1 and "CUDA out of memory" in ERRORS[-1], f"crash message: {ERRORS[-errors:]}")
    check(spineScene.scene_snapshot(scene) == before, "a crashed run changed the scene")

    # the scene closes while a run is going: it is cancelled
    behaviour["mode"] = "slow"
    widget.onSegmentButton()
    widget.onSceneStartClose(None, None)
    check(widget._run.state == "cancelled", "closing the scene cancels the run")
    widget.cleanup()

    # the logic's jump without the panel, and the test class exists
    logic = SpineSeg.SpineSegLogic()
    position = logic.jumpToLesion(result.lesions, 0)
    check(np.allclose(position, truth.lesions[0]["center_ras"], atol=1e-4), "logic.jumpToLesion")
    check(hasattr(SpineSeg.SpineSegTest, "runTest"), "SpineSegTest.runTest")
    print("OK")


if __name__ == "__main__":
    main(sys.argv[1])
