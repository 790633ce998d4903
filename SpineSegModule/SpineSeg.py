"""SpineSeg: spine CT segmentation in 3D Slicer (every vertebra as a named segment, a lesion heatmap, lesions).

A thin shell: the work is in ``SpineSegLib`` (``logic`` checks inputs and runs a segmentation out of process,
``scene`` builds the result nodes, ``dependencies`` installs packages after asking). Research use only: not a
medical device.
"""

import logging
import os
import traceback
from typing import Annotated

import qt
import slicer
import vtk
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

from SpineSegLib import corrections as spineCorrections
from SpineSegLib import dependencies as spineDependencies
from SpineSegLib import labels as spineLabels
from SpineSegLib import logic as spineLogic
from SpineSegLib import process as spineProcess
from SpineSegLib import scene as spineScene
from SpineSegLib.errors import SpineSegError

ADD_CHECKPOINT = "__add_checkpoint__"
POLL_INTERVAL_MS = 100


#
# SpineSeg
#


class SpineSeg(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("SpineSeg")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.dependencies = ["Segmentations", "Markups", "Tables"]
        self.parent.contributors = ["SpineSeg team"]
        self.parent.helpText = _("""
Segments every vertebra of a spine CT as a named, colour-coded segment (with SNOMED-CT terminology), computes a
lesion heatmap (fractures, lytic and sclerotic metastases) and lists the lesions found.
The segmentation runs in a separate process with progress and Cancel; the application stays responsive.
See <a href="https://github.com/spineseg/SpineSeg">the documentation</a>.
Research use only: not a medical device.
""")
        self.parent.acknowledgementText = _("""
SpineSeg is developed by the SpineSeg team. It builds on 3D Slicer, PyTorch and MONAI.
""")


#
# Parameter node: everything the panel shows, so a saved scene restores it
#


@parameterNodeWrapper
class SpineSegParameterNode:
    inputVolume: vtkMRMLScalarVolumeNode
    modelPath: str = ""  # "" = the bundled model
    addedModels: list[str]
    device: Annotated[str, Choice(["Auto", "GPU", "CPU"])] = "Auto"
    mode: Annotated[str, Choice(["Full", "Fast"])] = "Full"
    outputSegmentation: vtkMRMLSegmentationNode
    keepPrevious: bool = False
    showIn3D: bool = True
    heatmapOpacity: Annotated[float, WithinRange(0.0, 1.0)] = spineScene.DEFAULT_HEATMAP_OPACITY
    heatmapThreshold: Annotated[float, WithinRange(0.0, 1.0)] = spineScene.DEFAULT_HEATMAP_THRESHOLD


#
# SpineSegWidget
#


class SpineSegWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._run = None
        self._timer = None
        self._updatingModels = False
        self._modelsShown = None
        self._lesionRows = []

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/SpineSeg.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)

        self.logic = SpineSegLogic()

        self._timer = qt.QTimer()
        self._timer.setInterval(POLL_INTERVAL_MS)
        self._timer.connect("timeout()", self.onPoll)

        self.ui.progressBar.hide()
        self.ui.cancelButton.hide()

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.NodeRemovedEvent, self.onNodeRemoved)

        self.ui.segmentButton.connect("clicked(bool)", self.onSegmentButton)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancelButton)
        self.ui.modelComboBox.connect("activated(int)", self.onModelActivated)
        self.ui.heatmapOpacitySlider.connect("valueChanged(double)", self.onHeatmapOpacityChanged)
        self.ui.heatmapThresholdSlider.connect("valueChanged(double)", self.onHeatmapThresholdChanged)
        self.ui.show3DCheckBox.connect("toggled(bool)", self.onShow3DToggled)
        self.ui.inputVolumeSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.onInputChanged)
        self.ui.lesionTable.connect("cellClicked(int,int)", self.onLesionClicked)
        self.ui.renumberButton.connect("clicked(bool)", self.onRenumber)
        self.ui.shiftUpButton.connect("clicked(bool)", lambda _=None: self._correct(lambda c: c.shift(-1)))
        self.ui.shiftDownButton.connect("clicked(bool)", lambda _=None: self._correct(lambda c: c.shift(1)))
        self.ui.mergeButton.connect("clicked(bool)", self.onMerge)
        self.ui.splitComponentsButton.connect("clicked(bool)", self.onSplitComponents)
        self.ui.splitPlaneButton.connect("clicked(bool)", self.onSplitPlane)
        self.ui.addLesionButton.connect("clicked(bool)", self.onAddLesion)
        self.ui.setLesionClassButton.connect("clicked(bool)", self.onSetLesionClass)
        self.ui.deleteLesionButton.connect("clicked(bool)", self.onDeleteLesion)
        self.ui.undoCorrectionButton.connect("clicked(bool)", lambda _=None: self._correct(lambda c: c.undo()))
        self.ui.saveCaseButton.connect("clicked(bool)", self.onSaveCase)
        self._corrections = None

        self.initializeParameterNode()

    def cleanup(self) -> None:
        self._cancelRun()
        if self._timer is not None:
            self._timer.stop()
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateGUIFromParameterNode)

    def onSceneStartClose(self, caller, event) -> None:
        self._cancelRun()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    @vtk.calldata_type(vtk.VTK_OBJECT)
    def onNodeRemoved(self, caller, event, node) -> None:
        if self._run is None or self._run.finished:
            self._updateResultTables()

    # --- parameter node ---
    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            firstVolumeNode = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if firstVolumeNode and not firstVolumeNode.IsA("vtkMRMLLabelMapVolumeNode"):
                self._parameterNode.inputVolume = firstVolumeNode

    def setParameterNode(self, inputParameterNode: SpineSegParameterNode | None) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateGUIFromParameterNode)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateGUIFromParameterNode)
        self._updateGUIFromParameterNode()

    def _updateGUIFromParameterNode(self, caller=None, event=None) -> None:
        if not self._parameterNode:
            return
        self._populateModels()
        busy = self._run is not None and not self._run.finished
        if busy:
            self.ui.segmentButton.enabled = False
        elif not self._parameterNode.inputVolume:
            self.ui.segmentButton.toolTip = _("Select the input CT volume")
            self.ui.segmentButton.enabled = False
        else:
            self.ui.segmentButton.toolTip = _("Segment the vertebrae and find lesions")
            self.ui.segmentButton.enabled = True
        self._updateResultTables()

    # --- models ---
    def _populateModels(self, force: bool = False) -> None:
        if self._updatingModels:
            return
        shown = (self._parameterNode.modelPath, tuple(self._parameterNode.addedModels))
        if shown == self._modelsShown and not force:
            return
        self._modelsShown = shown
        self._updatingModels = True
        try:
            combo = self.ui.modelComboBox
            combo.clear()
            bundledText, bundledOk = spineLogic.model_summary(None)
            bundledName = bundledText.splitlines()[0] if bundledOk else _("not installed")
            combo.addItem(_("Bundled: {name}").format(name=bundledName), "")
            for path in self._parameterNode.addedModels:
                combo.addItem(os.path.basename(os.path.normpath(path)) or path, path)
            combo.addItem(_("Add checkpoint…"), ADD_CHECKPOINT)
            current = self._parameterNode.modelPath
            index = combo.findData(current) if current else 0
            combo.setCurrentIndex(max(index, 0))
            text, ok = spineLogic.model_summary(current or None)
            self.ui.modelInfoLabel.text = text
            self.ui.modelInfoLabel.styleSheet = "" if ok else "color: #c62828"
        finally:
            self._updatingModels = False

    def onModelActivated(self, index: int) -> None:
        if self._updatingModels or not self._parameterNode:
            return
        data = self.ui.modelComboBox.itemData(index)
        if data == ADD_CHECKPOINT:
            path = self._askCheckpointPath()
            if not path:
                self._populateModels(force=True)
                return
            text, ok = spineLogic.model_summary(path)
            if not ok:
                slicer.util.errorDisplay(_("This checkpoint cannot be used:\n{error}").format(error=text))
                self._populateModels(force=True)
                return
            with slicer.util.NodeModify(self._parameterNode.parameterNode):
                if path not in self._parameterNode.addedModels:
                    self._parameterNode.addedModels.append(path)
                self._parameterNode.modelPath = path
        else:
            self._parameterNode.modelPath = data or ""
        self._populateModels(force=True)

    def _askCheckpointPath(self) -> str:
        path = qt.QFileDialog.getOpenFileName(
            slicer.util.mainWindow(), _("Add SpineSeg checkpoint"), "",
            _("SpineSeg checkpoint (model_card.json *.zip)"))
        if not path:
            return ""
        if os.path.basename(path) == "model_card.json":
            path = os.path.dirname(path)
        return path

    # --- running ---
    def onSegmentButton(self) -> None:
        if self._run is not None and not self._run.finished:
            return
        self._setBusy(True)
        self.ui.statusLabel.text = _("Starting…")
        slicer.app.processEvents()
        try:
            self.logic.ensureDependencies()
            options = self.logic.optionsFromParameterNode(self._parameterNode)
            self._run = self.logic.startSegmentation(self._parameterNode.inputVolume, options,
                                                     onProgress=self._onProgress)
        except SpineSegError as error:
            self._showError(str(error))
            return
        except Exception as error:  # noqa: BLE001 - anything else: tell the user, keep the panel usable
            logging.error(traceback.format_exc())
            self._showError(_("Unexpected error: {error}").format(error=error), traceback.format_exc())
            return
        self._timer.start()

    def _onProgress(self, fraction: float, stage: str) -> None:
        self.ui.progressBar.value = int(round(100 * fraction))
        self.ui.statusLabel.text = stage

    def onPoll(self) -> None:
        run = self._run
        if run is None:
            self._timer.stop()
            return
        state = run.poll()
        if state not in spineProcess.FINISHED_STATES:
            return
        self._timer.stop()
        self._setBusy(False)
        if state == spineProcess.DONE:
            runner = run.runner
            self.ui.statusLabel.text = _("Done in {seconds:.0f} s: {vertebrae} vertebrae, {lesions} lesions.").format(
                seconds=getattr(runner, "elapsed", 0.0),
                vertebrae=run.nodes.segmentation.GetSegmentation().GetNumberOfSegments(),
                lesions=run.nodes.lesions.GetNumberOfControlPoints())
            self._updateResultTables()
        elif state == spineProcess.CANCELLED:
            self.ui.statusLabel.text = _("Cancelled: the scene was left as it was.")
        else:
            self._showError(run.message)

    def onCancelButton(self) -> None:
        self._cancelRun()
        self.ui.statusLabel.text = _("Cancelled: the scene was left as it was.")

    def _cancelRun(self) -> None:
        if self._run is not None and not self._run.finished:
            with slicer.util.WaitCursor():
                self._run.cancel()
        if self._timer is not None:
            self._timer.stop()
        self._setBusy(False)

    def _setBusy(self, busy: bool) -> None:
        self.ui.progressBar.visible = busy
        self.ui.cancelButton.visible = busy
        self.ui.progressBar.value = 0
        for widget in (self.ui.inputsCollapsibleButton, self.ui.outputSegmentationSelector,
                       self.ui.keepPreviousCheckBox):
            widget.enabled = not busy
        self.ui.segmentButton.enabled = not busy and bool(self._parameterNode and self._parameterNode.inputVolume)

    def _showError(self, message: str, details: str = "") -> None:
        self._setBusy(False)
        self.ui.statusLabel.text = message
        if details:
            slicer.util.errorDisplay(message, detailedText=details)
        else:
            slicer.util.errorDisplay(message)

    # --- display of the current result ---
    def _currentResult(self):
        if not self._parameterNode or not self._parameterNode.inputVolume:
            return None
        return spineScene.latest_result(slicer.mrmlScene, self._parameterNode.inputVolume)

    def onInputChanged(self, node) -> None:
        self._updateResultTables()

    def onHeatmapOpacityChanged(self, value: float) -> None:
        result = self._currentResult()
        if result is not None and result.heatmap is not None:
            spineScene.set_heatmap_opacity(slicer.mrmlScene, value, result.heatmap)

    def onHeatmapThresholdChanged(self, value: float) -> None:
        result = self._currentResult()
        if result is not None and result.heatmap is not None:
            spineScene.set_heatmap_threshold(result.heatmap, value)

    def onShow3DToggled(self, checked: bool) -> None:
        result = self._currentResult()
        if result is not None and result.segmentation is not None:
            with slicer.util.WaitCursor():
                spineScene.set_segmentation_3d_visible(result.segmentation, checked)

    def _updateResultTables(self) -> None:
        result = self._currentResult()
        lesionRows = spineScene.lesion_rows(result.lesions) if result is not None and result.lesions else []
        vertebraRows = spineScene.vertebra_rows(result.table) if result is not None and result.table else []
        self._lesionRows = lesionRows
        self._fillTable(self.ui.lesionTable, [
            (str(row.get("class", "")), f"{float(row.get('score', 0)):.2f}", str(row.get("vertebra") or "—"))
            for row in lesionRows])
        self._fillTable(self.ui.vertebraTable, [
            (row["name"], f"{row['volume_mm3']:.0f}", str(row["lesions"])) for row in vertebraRows])
        self._updateCorrectionChoices()

    @staticmethod
    def _fillTable(table, rows) -> None:
        table.setRowCount(len(rows))
        for r, values in enumerate(rows):
            for c, value in enumerate(values):
                item = qt.QTableWidgetItem(value)
                item.setFlags(qt.Qt.ItemIsSelectable | qt.Qt.ItemIsEnabled)
                table.setItem(r, c, item)
        table.resizeColumnsToContents()

    # --- corrections (SpineSegLib.corrections does the work; the Segment Editor stays for voxel edits) ----------
    def _correctionsForResult(self):
        result = self._currentResult()
        if result is None or result.segmentation is None:
            return None
        if self._corrections is None or self._corrections.segmentation_node is not result.segmentation:
            self._corrections = spineCorrections.Corrections.from_result(result, self._parameterNode.inputVolume)
        return self._corrections

    def _correct(self, operation) -> None:
        corrections = self._correctionsForResult()
        if corrections is None:
            self._showError("Segment a volume first: corrections apply to the current result.")
            return
        try:
            operation(corrections)
        except Exception as error:  # the library raises clear ValueErrors; nothing was changed
            self._showError(f"Correction not applied: {error}")
        self._updateResultTables()

    def _updateCorrectionChoices(self) -> None:
        corrections = self._correctionsForResult()
        names = [v["name"] for v in corrections.vertebrae()] if corrections is not None else []
        for combo in (self.ui.correctionVertebraComboBox, self.ui.mergeWithComboBox):
            combo.clear()
            for name in names:
                combo.addItem(name, name)
        table = spineLabels.load_label_table()
        self.ui.correctionNameComboBox.clear()
        for label in table:
            self.ui.correctionNameComboBox.addItem(label.name, label.name)
        self.ui.lesionClassComboBox.clear()
        for name in table.lesion_class_names:
            self.ui.lesionClassComboBox.addItem(name, name)

    @staticmethod
    def _chosen(combo):
        return combo.itemData(combo.currentIndex) if combo.currentIndex >= 0 else None

    def onRenumber(self, _=None) -> None:
        vertebra, name = self._chosen(self.ui.correctionVertebraComboBox), self._chosen(self.ui.correctionNameComboBox)
        if vertebra and name:
            self._correct(lambda c: c.renumber(vertebra, name))

    def onMerge(self, _=None) -> None:
        vertebra, other = self._chosen(self.ui.correctionVertebraComboBox), self._chosen(self.ui.mergeWithComboBox)
        if vertebra and other:
            self._correct(lambda c: c.merge(vertebra, other))

    def onSplitComponents(self, _=None) -> None:
        vertebra = self._chosen(self.ui.correctionVertebraComboBox)
        if vertebra:
            self._correct(lambda c: c.split_components(vertebra))

    def _crosshairRAS(self):
        """The crosshair position (Shift + mouse move in the views), the point tools act on."""
        crosshair = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLCrosshairNode")
        if crosshair is None:
            self._showError("No crosshair in this scene: place it with Shift + mouse move in a view.")
            return None
        return list(crosshair.GetCrosshairRAS())

    def _selectedLesionId(self):
        row = self.ui.lesionTable.currentRow() if callable(getattr(self.ui.lesionTable, "currentRow", None)) else -1
        if row is None or row < 0 or row >= len(self._lesionRows):
            self._showError("Select a lesion in the table first.")
            return None
        return self._lesionRows[row].get("id")

    def onSplitPlane(self, _=None) -> None:
        vertebra, point = self._chosen(self.ui.correctionVertebraComboBox), self._crosshairRAS()
        if vertebra and point is not None:
            self._correct(lambda c: c.split_plane(vertebra, point))

    def onAddLesion(self, _=None) -> None:
        lesionClass, point = self._chosen(self.ui.lesionClassComboBox), self._crosshairRAS()
        if lesionClass and point is not None:
            self._correct(lambda c: c.add_lesion(point, lesionClass))

    def onSetLesionClass(self, _=None) -> None:
        lesionId, lesionClass = self._selectedLesionId(), self._chosen(self.ui.lesionClassComboBox)
        if lesionId is not None and lesionClass:
            self._correct(lambda c: c.set_lesion_class(lesionId, lesionClass))

    def onDeleteLesion(self, _=None) -> None:
        lesionId = self._selectedLesionId()
        if lesionId is not None:
            self._correct(lambda c: c.delete_lesion(lesionId))

    def onSaveCase(self, _=None) -> None:
        folder = self.ui.trainingFolderLineEdit.text.strip()
        if not folder:
            self._showError("Choose a dataset folder for the corrected case first.")
            return
        self._correct(lambda c: self._reportSaved(c.save_training_case(folder)))

    def _reportSaved(self, entry: dict) -> None:
        self.ui.statusLabel.text = f"Saved training case {entry['id']}"

    def onLesionClicked(self, row: int, column: int) -> None:
        result = self._currentResult()
        if result is None or result.lesions is None or row >= result.lesions.GetNumberOfControlPoints():
            return
        self.logic.jumpToLesion(result.lesions, row)


#
# SpineSegLogic
#


class SpineSegLogic(ScriptedLoadableModuleLogic):
    """Usable without the panel, e.g. from the Python console:

        logic = slicer.util.getModuleLogic("SpineSeg")
        nodes = logic.segment(slicer.util.getNode("CT"))
    """

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)

    def getParameterNode(self):
        return SpineSegParameterNode(super().getParameterNode())

    # --- dependencies ---
    def ensureDependencies(self, askConfirmation: bool = True) -> list:
        """Install missing Python packages after asking the user; raises DependencyError when declined."""
        def confirm(message):
            if not askConfirmation:
                return True
            return slicer.util.confirmOkCancelDisplay(message, _("SpineSeg needs Python packages"))

        def pipInstall(requirements):
            with slicer.util.WaitCursor():
                slicer.util.pip_install(requirements)

        installed = spineDependencies.ensure_dependencies(confirm, pipInstall, self._torchInstaller())
        if installed:
            logging.info("SpineSeg installed: %s", ", ".join(installed))
        return installed

    @staticmethod
    def _torchInstaller():
        """The PyTorch extension's installer when that extension is present (else None: pip installs torch)."""
        try:
            import PyTorchUtils
        except ImportError:
            return None

        def installTorch():
            torchLogic = PyTorchUtils.PyTorchUtilsLogic()
            if torchLogic.torchInstalled():
                import torch

                return torch
            return torchLogic.installTorch(askConfirmation=True)

        return installTorch

    # --- running ---
    @staticmethod
    def optionsFromParameterNode(parameterNode) -> "spineLogic.SegmentOptions":
        return spineLogic.SegmentOptions(
            model=parameterNode.modelPath or None,
            device=spineLogic.normalize_device(parameterNode.device),
            fast=parameterNode.mode == "Fast",
            keep_previous=parameterNode.keepPrevious,
            show_3d=parameterNode.showIn3D,
            segmentation_node=parameterNode.outputSegmentation,
            heatmap_threshold=parameterNode.heatmapThreshold,
            heatmap_opacity=parameterNode.heatmapOpacity,
        )

    def startSegmentation(self, inputVolume, options=None, onProgress=None, onFinished=None,
                          scene=None) -> "spineLogic.SegmentationRun":
        """Validate (raises SpineSegError) and start a run; drive it with ``run.poll()`` from a timer."""
        run = spineLogic.SegmentationRun(scene or slicer.mrmlScene, inputVolume, options,
                                         on_progress=onProgress, on_finished=onFinished)
        return run.start()

    def segment(self, inputVolume, options=None, onProgress=None, scene=None):
        """Blocking run that keeps the application responsive; returns the result nodes or raises SpineSegError."""
        return spineLogic.run_segmentation(scene or slicer.mrmlScene, inputVolume, options, on_progress=onProgress,
                                           idle=slicer.app.processEvents)

    def jumpToLesion(self, markupsNode, index: int) -> list:
        """Centre the slice views on lesion ``index`` of a SpineSeg lesion markups node."""
        ras = [0.0, 0.0, 0.0]
        markupsNode.GetNthControlPointPositionWorld(index, ras)
        markupsLogic = slicer.modules.markups.logic() if hasattr(slicer.modules, "markups") else None
        if markupsLogic is not None:
            markupsLogic.JumpSlicesToLocation(ras[0], ras[1], ras[2], True)
        else:
            spineScene.jump_to_lesion(markupsNode.GetScene(), markupsNode, index)
        return ras


#
# SpineSegTest
#


class SpineSegTest(ScriptedLoadableModuleTest):
    """Runs ``SpineSegLib.selftest`` (the same body CI runs against slicer-core) in the application."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_SpineSeg_selftest()

    def test_SpineSeg_selftest(self):
        from SpineSegLib.selftest import run_selftest

        self.delayDisplay("Checking SpineSeg's Python packages")
        SpineSegLogic().ensureDependencies(askConfirmation=not slicer.app.testingEnabled())
        # A field of view large enough for the phantom's lesions (CI runs the same body on a smaller phantom).
        summary = run_selftest(slicer.mrmlScene, log=self.delayDisplay, idle=slicer.app.processEvents,
                               phantom={"shape": (80, 80, 120)})
        self.delayDisplay(f"Test passed: {summary}")
