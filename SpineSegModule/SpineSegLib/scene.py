"""MRML scene logic for SpineSeg: volumes in and out of a scene, results as Slicer nodes, saving and loading.

Host-agnostic: works inside the Slicer application and with PyPI ``slicer-core`` (MRML without Qt). Every
function takes the scene (or nodes) it is given and never touches ``slicer.app``; in the application the
module logics already exist, elsewhere :func:`create_scene` attaches them the way Slicer does.

Conventions: :class:`~SpineSegLib.volume.Volume` arrays are ``(i, j, k)`` with a voxel-to-RAS affine; Slicer's
``arrayFromVolume`` is ``(k, j, i)``. This is the only module that converts between the two.

A result added to a scene is four nodes, each tagged with node attributes so a host can find, replace or keep
them: :data:`ATTR_ROLE` (``segmentation``, ``heatmap``, ``lesions``, ``report``), :data:`ATTR_INPUT` (the input
volume's node ID, also kept as a node reference that survives scene import) and :data:`ATTR_RUN` (one ID per run).
"""

from __future__ import annotations

import atexit
import json
import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import InputError
from .labels import LabelTable, load_label_table
from .volume import Volume

# --- node attributes and roles --------------------------------------------------------------------------------
ATTR_ROLE = "SpineSeg.Role"
ATTR_INPUT = "SpineSeg.InputVolumeID"
ATTR_RUN = "SpineSeg.RunID"
ATTR_MODEL = "SpineSeg.Model"
ATTR_LESIONS = "SpineSeg.Lesions"  # JSON list of the lesion dicts, on the markups node
ATTR_REPORT = "SpineSeg.Report"  # JSON of the run report (model, timings), on the table node
ATTR_HEATMAP_OPACITY = "SpineSeg.HeatmapOpacity"
INPUT_REFERENCE_ROLE = "SpineSegInputVolume"

ROLE_SEGMENTATION = "segmentation"
ROLE_HEATMAP = "heatmap"
ROLE_LESIONS = "lesions"
ROLE_REPORT = "report"
ROLES = (ROLE_SEGMENTATION, ROLE_HEATMAP, ROLE_LESIONS, ROLE_REPORT)

DEFAULT_HEATMAP_THRESHOLD = 0.3
DEFAULT_HEATMAP_OPACITY = 0.5
HEAT_COLOR_NODE_ID = "vtkMRMLPETProceduralColorNodePET-Heat"
FALLBACK_HEAT_COLOR_NAME = "SpineSeg heat"
SLICE_VIEWS = (("Red", "Axial"), ("Yellow", "Sagittal"), ("Green", "Coronal"))
VERTEBRA_TABLE_COLUMNS = ("Vertebra", "Label", "Volume (mm3)", "Lesions", "Lesion details")


def _slicer():
    import slicer

    return slicer


# --- a scene with the module logics, the way the Slicer application sets it up -----------------------------------
@dataclass
class SceneContext:
    """A scene and the logics the application would attach to it (kept alive here)."""

    scene: object
    app_logic: object | None = None
    logics: dict = field(default_factory=dict)
    slice_logics: list = field(default_factory=list)

    def logic(self, name: str):
        return self.logics.get(name)


_CONTEXTS: dict[str, SceneContext] = {}


def _scene_key(scene) -> str:
    return scene.GetAddressAsString("vtkMRMLScene")


def create_scene(scene=None, views: bool = True) -> SceneContext:
    """A scene with application, colour (with the default colour nodes), volumes, segmentations, markups,
    subject hierarchy and tables logics attached, plus the three slice views and a 3D view node, as the Slicer
    application has them. Without these, closed surfaces are never produced and markups cannot be stored."""
    slicer = _slicer()
    import vtk

    scene = scene or slicer.vtkMRMLScene()
    app_logic = slicer.vtkSlicerApplicationLogic()
    app_logic.SetMRMLScene(scene)
    color_logic = app_logic.GetColorLogic()
    color_logic.SetMRMLScene(scene)
    color_logic.AddDefaultColorNodes()
    context = SceneContext(scene, app_logic, {"Colors": color_logic})
    for name, cls in (
        ("SubjectHierarchy", "vtkSlicerSubjectHierarchyModuleLogic"),
        ("Volumes", "vtkSlicerVolumesLogic"),
        ("Segmentations", "vtkSlicerSegmentationsModuleLogic"),
        ("Markups", "vtkSlicerMarkupsLogic"),
        ("Tables", "vtkSlicerTablesLogic"),
    ):
        logic = getattr(slicer, cls)()
        logic.SetMRMLScene(scene)
        logic.SetMRMLApplicationLogic(app_logic)
        app_logic.SetModuleLogic(name, logic)
        context.logics[name] = logic
    if views:
        collection = vtk.vtkCollection()
        for layout_name, _orientation in SLICE_VIEWS:
            slice_logic = slicer.vtkMRMLSliceLogic()
            slice_logic.SetMRMLScene(scene)
            slice_logic.SetMRMLApplicationLogic(app_logic)
            slice_logic.AddSliceNode(layout_name)
            collection.AddItem(slice_logic)
            context.slice_logics.append(slice_logic)
        app_logic.SetSliceLogics(collection)
        if not scene.GetNodeByID("vtkMRMLViewNode1"):
            view = scene.AddNewNodeByClass("vtkMRMLViewNode")
            view.SetLayoutName("1")
    _CONTEXTS[_scene_key(scene)] = context
    return context


def get_module_logic(scene, name: str):
    """A module logic attached to ``scene``: from :func:`create_scene`, else from the running Slicer application."""
    context = _CONTEXTS.get(_scene_key(scene)) if scene is not None else None
    if context is not None and context.logic(name) is not None:
        return context.logic(name)
    slicer = _slicer()
    app = getattr(slicer, "app", None)
    if app is not None:
        try:
            return app.applicationLogic().GetModuleLogic(name)
        except Exception:  # noqa: BLE001 - an application without that module
            return None
    return None


def release_scene(context: SceneContext) -> None:
    """Forget a scene made by :func:`create_scene`: clear it and detach its logics (in an order that is safe)."""
    _CONTEXTS.pop(_scene_key(context.scene), None)
    context.scene.Clear(1)
    for slice_logic in context.slice_logics:
        slice_logic.SetMRMLScene(None)
    context.slice_logics.clear()
    if context.app_logic is not None:
        context.app_logic.SetSliceLogics(None)
    for name, logic in list(context.logics.items()):
        if name != "Colors":
            logic.SetMRMLScene(None)
    context.logics.clear()


@atexit.register
def _release_all_scenes() -> None:
    """Slice logics destroyed after their scene at interpreter exit crash VTK: release scenes first."""
    for context in list(_CONTEXTS.values()):
        try:
            release_scene(context)
        except Exception:  # noqa: BLE001 - best effort at exit
            pass


def _unique_name(scene, name: str) -> str:
    return name if scene.GetFirstNodeByName(name) is None else scene.GenerateUniqueName(name)


# --- volumes ---------------------------------------------------------------------------------------------------
def volume_to_node(scene, volume: Volume, name: str = "CT", node=None, labelmap: bool = False,
                   show: bool = False):
    """Put a :class:`Volume` into ``scene`` as a scalar (or labelmap) volume node, or update ``node`` in place."""
    slicer = _slicer()
    array = np.asarray(volume.array)
    if array.ndim != 3:
        raise InputError(f"a volume node needs a 3D array, got shape {array.shape}")
    if array.dtype == np.float64:
        array = array.astype(np.float32)
    elif array.dtype == np.bool_:
        array = array.astype(np.uint8)
    if node is None:
        node_class = "vtkMRMLLabelMapVolumeNode" if labelmap else "vtkMRMLScalarVolumeNode"
        node = scene.AddNewNodeByClass(node_class, _unique_name(scene, name))
    slicer.util.updateVolumeFromArray(node, np.ascontiguousarray(array.transpose(2, 1, 0)))
    node.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(volume.affine))
    if node.GetDisplayNode() is None:
        node.CreateDefaultDisplayNodes()
    if show:
        show_volume_in_slice_views(scene, background=node)
    return node


def node_to_volume(node, dtype=None) -> Volume:
    """A volume node's voxels as a :class:`Volume` in (i, j, k) with its IJK-to-RAS matrix (parent transforms are
    not applied: results go under the same transform as their input)."""
    slicer = _slicer()
    import vtk

    if node is None or node.GetImageData() is None:
        raise InputError("the volume node has no image data")
    array = np.array(slicer.util.arrayFromVolume(node).transpose(2, 1, 0), dtype=dtype, copy=True)
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return Volume(array, slicer.util.arrayFromVTKMatrix(matrix))


def check_input_volume_node(node) -> Volume:
    """Validate a node chosen as SpineSeg input and return it as a float32 :class:`Volume`.

    Raises :class:`InputError` with a message for the user when nothing is selected, when the node is a labelmap,
    a vector/tensor image, has no voxels, is 2D or a single slice, holds non-finite values or is not a CT.
    """
    from .io import MIN_SLICES, check_ct_intensities  # nibabel: imported only when checking, not with the module

    if node is None:
        raise InputError("No input volume is selected: choose the CT volume to segment.")
    name = node.GetName() or node.GetID()
    if node.IsA("vtkMRMLLabelMapVolumeNode"):
        raise InputError(f"'{name}' is a labelmap (a segmentation), not an image: choose the CT volume itself.")
    if not node.IsA("vtkMRMLScalarVolumeNode") or node.IsA("vtkMRMLVectorVolumeNode") \
            or node.IsA("vtkMRMLDiffusionTensorVolumeNode") or node.IsA("vtkMRMLDiffusionWeightedVolumeNode"):
        raise InputError(f"'{name}' is a {node.GetClassName()}; SpineSeg needs a scalar CT volume.")
    image = node.GetImageData()
    if image is None or image.GetNumberOfPoints() == 0:
        raise InputError(f"'{name}' has no image data.")
    if image.GetNumberOfScalarComponents() != 1:
        raise InputError(f"'{name}' has {image.GetNumberOfScalarComponents()} components per voxel; "
                         "SpineSeg needs a single-component (grey-scale) CT volume.")
    dims = image.GetDimensions()
    if min(dims) < MIN_SLICES:
        raise InputError(
            f"'{name}' has {dims[0]}x{dims[1]}x{dims[2]} voxels: a 3D CT needs at least {MIN_SLICES} along each "
            "axis (is this a 2D image or a single slice?)"
        )
    volume = node_to_volume(node, dtype=np.float32)
    data = volume.array
    if not np.all(np.isfinite(data)):
        raise InputError(f"'{name}' contains NaN or infinite voxels; a CT holds finite Hounsfield units.")
    if abs(np.linalg.det(volume.affine[:3, :3])) < 1e-9:
        raise InputError(f"'{name}' has a degenerate geometry (zero spacing or collinear axes).")
    if float(data.max()) - float(data.min()) < 1e-6:
        raise InputError(f"'{name}' is empty: every voxel has the value {float(data.min()):g}.")
    check_ct_intensities(data, f"'{name}'")
    transform = node.GetParentTransformNode()
    if transform is not None and not transform.IsLinear():
        raise InputError(f"'{name}' is under a non-linear transform; harden the transform first.")
    return volume


# --- results ---------------------------------------------------------------------------------------------------
@dataclass
class ResultNodes:
    """The nodes of one SpineSeg result in a scene."""

    run_id: str = ""
    segmentation: object = None
    heatmap: object = None
    lesions: object = None
    table: object = None

    def nodes(self) -> list:
        return [n for n in (self.segmentation, self.heatmap, self.lesions, self.table) if n is not None]

    def ids(self) -> dict[str, str]:
        return {role: node.GetID() for role, node in zip(ROLES, (self.segmentation, self.heatmap, self.lesions,
                                                                   self.table), strict=True) if node is not None}

    def set(self, role: str, node) -> None:
        setattr(self, {ROLE_SEGMENTATION: "segmentation", ROLE_HEATMAP: "heatmap", ROLE_LESIONS: "lesions",
                       ROLE_REPORT: "table"}[role], node)


def lesion_label(lesion: dict) -> str:
    """Markup label for a lesion, e.g. ``"L1 fracture 0.92"`` (without vertebra: ``"fracture 0.92"``)."""
    parts = [lesion.get("vertebra") or "", str(lesion.get("class", "lesion")), f"{float(lesion.get('score', 0)):.2f}"]
    return " ".join(p for p in parts if p)


def add_result_to_scene(scene, result, input_node, *, keep_previous: bool = False, segmentation_node=None,
                        show_3d: bool = True, heatmap_threshold: float = DEFAULT_HEATMAP_THRESHOLD,
                        heatmap_opacity: float = DEFAULT_HEATMAP_OPACITY, show: bool = True,
                        table: LabelTable | None = None) -> ResultNodes:
    """Add a :class:`~SpineSegLib.results.SegmentationResult` for ``input_node`` to ``scene``.

    Creates a segmentation (one segment per vertebra: ID and name from the label table, colour, label value,
    SNOMED-CT terminology; the input as reference geometry; closed surfaces when ``show_3d``), the lesion heatmap
    (a scalar volume shown in the slice views' foreground with a heat colour table, threshold and opacity), a
    locked markups point list of the lesions and a table node with the per-vertebra report; all in the input's
    subject-hierarchy study and under its parent transform. Unless ``keep_previous``, earlier SpineSeg results
    for the same input are removed. ``segmentation_node``: an existing segmentation to fill instead of a new one
    (its segments are replaced).
    """
    table = table or load_label_table()
    if input_node is None or input_node.GetScene() is not scene:
        raise InputError("the input volume is not in this scene")
    run_id = uuid.uuid4().hex[:12]
    base = input_node.GetName() or "CT"
    nodes = ResultNodes(run_id=run_id)
    names = {ROLE_SEGMENTATION: f"{base} vertebrae", ROLE_HEATMAP: f"{base} lesion heatmap",
             ROLE_LESIONS: f"{base} lesions", ROLE_REPORT: f"{base} vertebra report"}
    model = result.report.get("model") if isinstance(result.report, dict) else None
    model_name = str(model.get("name", "")) if isinstance(model, dict) else ""
    created = []  # removed again if anything fails: a result is added whole or not at all
    try:
        if segmentation_node is None:
            segmentation_node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode",
                                                        _unique_name(scene, names[ROLE_SEGMENTATION]))
            created.append(segmentation_node)
        fill_segmentation(segmentation_node, result.labels, input_node, table)
        nodes.segmentation = segmentation_node
        heat = volume_to_node(scene, Volume(np.asarray(result.heatmap.array, dtype=np.float32),
                                            result.heatmap.affine), name=names[ROLE_HEATMAP])
        created.append(heat)
        configure_heatmap_display(heat, threshold=heatmap_threshold)
        heat.SetAttribute(ATTR_HEATMAP_OPACITY, f"{heatmap_opacity:g}")
        nodes.heatmap = heat
        nodes.lesions = _lesion_markups(scene, result.lesions, names[ROLE_LESIONS])
        created.append(nodes.lesions)
        nodes.table = _vertebra_table(scene, result.vertebrae, result.lesions, names[ROLE_REPORT])
        created.append(nodes.table)
        nodes.table.SetAttribute(ATTR_REPORT, json.dumps(result.report, default=_json_default))
    except BaseException:
        for node in created:
            _remove_node(scene, node)
        raise

    for role, node in zip(ROLES, (nodes.segmentation, nodes.heatmap, nodes.lesions, nodes.table), strict=True):
        node.SetAttribute(ATTR_ROLE, role)
        node.SetAttribute(ATTR_INPUT, input_node.GetID())
        node.SetAttribute(ATTR_RUN, run_id)
        if model_name:
            node.SetAttribute(ATTR_MODEL, model_name)
        node.SetNodeReferenceID(INPUT_REFERENCE_ROLE, input_node.GetID())
        if input_node.GetTransformNodeID() and node.IsA("vtkMRMLTransformableNode"):
            node.SetAndObserveTransformNodeID(input_node.GetTransformNodeID())
    if not keep_previous:
        remove_results(scene, input_node, keep_ids={node.GetID() for node in nodes.nodes()})
        for role, node in zip(ROLES, (nodes.segmentation, nodes.heatmap, nodes.lesions, nodes.table), strict=True):
            if node in created and node.GetName() != names[role] and scene.GetFirstNodeByName(names[role]) is None:
                node.SetName(names[role])  # the previous result's names are free again
    _place_in_study(scene, input_node, nodes.nodes())
    set_segmentation_3d_visible(nodes.segmentation, show_3d)
    if show:
        show_volume_in_slice_views(scene, background=input_node, foreground=heat, opacity=heatmap_opacity)
    return nodes


def fill_segmentation(segmentation_node, labels: Volume, reference_node=None, table: LabelTable | None = None) -> None:
    """Replace the segments of ``segmentation_node`` with one per vertebra present in ``labels``.

    Segments share one binary-labelmap layer (as Slicer stores a multi-label segmentation), carry the label
    table's name (also the segment ID), colour, label value and SNOMED-CT terminology.
    """
    slicer = _slicer()
    from vtk.util import numpy_support

    table = table or load_label_table()
    array = np.asarray(labels.array)
    present = set(np.unique(array).tolist()) - {0}
    unknown = sorted(present - set(table.values))
    if unknown:
        raise ValueError(f"labelmap holds values {unknown} that are not in the label table")
    image = slicer.vtkOrientedImageData()
    image.SetDimensions(*array.shape)
    image.SetImageToWorldMatrix(slicer.util.vtkMatrixFromArray(labels.affine))
    scalars = numpy_support.numpy_to_vtk(np.asarray(array, dtype=np.uint8).ravel(order="F"), deep=True,
                                         array_type=numpy_support.get_vtk_array_type(np.uint8))
    image.GetPointData().SetScalars(scalars)

    if segmentation_node.GetDisplayNode() is None:
        segmentation_node.CreateDefaultDisplayNodes()
    segmentation = segmentation_node.GetSegmentation()
    was_modifying = segmentation_node.StartModify()
    try:
        segmentation.RemoveAllSegments()
        labelmap_name = slicer.vtkSegmentationConverter.GetBinaryLabelmapRepresentationName()
        segmentation.SetSourceRepresentationName(labelmap_name)
        if reference_node is not None:
            segmentation_node.SetReferenceImageGeometryParameterFromVolumeNode(reference_node)
        for label in table:
            if label.value not in present:
                continue
            segment = slicer.vtkSegment()
            segment.SetName(label.name)
            segment.SetNameAutoGenerated(False)
            segment.SetColor(*label.color_float)
            segment.SetColorAutoGenerated(False)
            segment.SetLabelValue(label.value)
            segment.SetTerminology(table.terminology_entry(label.value))
            segment.AddRepresentation(labelmap_name, image)  # the same image: one shared layer
            segmentation.AddSegment(segment, label.name)
    finally:
        segmentation_node.EndModify(was_modifying)


def segmentation_to_labels(segmentation_node, reference_node) -> Volume:
    """Export a segmentation to a label-value :class:`Volume` on ``reference_node``'s grid (uint8)."""
    slicer = _slicer()
    import vtk

    scene = segmentation_node.GetScene()
    labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "__spineseg_export")
    try:
        ids = vtk.vtkStringArray()
        segmentation_node.GetSegmentation().GetSegmentIDs(ids)
        ok = slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(
            segmentation_node, ids, labelmap, reference_node, slicer.vtkSegmentation.EXTENT_REFERENCE_GEOMETRY)
        if not ok:
            raise RuntimeError(f"could not export segmentation {segmentation_node.GetName()}")
        # The export numbers segments 1..n; map back to each segment's label value.
        exported = node_to_volume(labelmap)
        out = np.zeros(exported.array.shape, dtype=np.uint8)
        segmentation = segmentation_node.GetSegmentation()
        for index in range(ids.GetNumberOfValues()):
            segment = segmentation.GetSegment(ids.GetValue(index))
            out[exported.array == index + 1] = segment.GetLabelValue()
        return Volume(out, exported.affine)
    finally:
        _remove_node(scene, labelmap)


def segments_info(segmentation_node) -> list[dict]:
    """Per segment: id, name, colour (0-1 floats), label value and terminology string, in segment order."""
    segmentation = segmentation_node.GetSegmentation()
    info = []
    for index in range(segmentation.GetNumberOfSegments()):
        segment = segmentation.GetNthSegment(index)
        info.append({
            "id": segmentation.GetNthSegmentID(index),
            "name": segment.GetName(),
            "color": tuple(segment.GetColor()),
            "label": segment.GetLabelValue(),
            "terminology": segment.GetTerminology(),
        })
    return info


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def _lesion_markups(scene, lesions: list[dict], name: str):
    node = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", _unique_name(scene, name))
    node.CreateDefaultDisplayNodes()
    was_modifying = node.StartModify()
    for lesion in lesions:
        index = node.AddControlPoint([float(c) for c in lesion["center_ras"]], lesion_label(lesion))
        node.SetNthControlPointDescription(index, lesion_description(lesion))
        node.SetNthControlPointLocked(index, True)
    node.SetLocked(True)
    node.SetAttribute(ATTR_LESIONS, json.dumps(lesions, default=_json_default))
    node.EndModify(was_modifying)
    display = node.GetDisplayNode()
    if display is not None:
        display.SetSelectedColor(1.0, 0.25, 0.25)
        display.SetColor(1.0, 0.25, 0.25)
        display.SetTextScale(3.0)
        display.SetGlyphScale(2.0)
    return node


def lesion_description(lesion: dict) -> str:
    """The markup description of a lesion, e.g. ``"fracture in L1, score 0.92, 10.0 mm"``."""
    size = lesion.get("size_mm")
    size_text = f", {float(size):.1f} mm" if size is not None else ""
    where = f" in {lesion['vertebra']}" if lesion.get("vertebra") else ""
    return f"{lesion.get('class', 'lesion')}{where}, score {float(lesion.get('score', 0)):.2f}{size_text}"


def fill_vertebra_table(table_node, vertebrae: list[dict], lesions: list[dict]) -> None:
    """Write the per-vertebra report into a table node (columns: ``VERTEBRA_TABLE_COLUMNS``)."""
    import vtk

    by_id = {lesion.get("id"): lesion for lesion in lesions}
    columns = (vtk.vtkStringArray(), vtk.vtkIntArray(), vtk.vtkDoubleArray(), vtk.vtkIntArray(), vtk.vtkStringArray())
    for column, title in zip(columns, VERTEBRA_TABLE_COLUMNS, strict=True):
        column.SetName(title)
    for vertebra in vertebrae:
        ids = list(vertebra.get("lesions", []))
        columns[0].InsertNextValue(str(vertebra["name"]))
        columns[1].InsertNextValue(int(vertebra["label"]))
        columns[2].InsertNextValue(float(vertebra["volume_mm3"]))
        columns[3].InsertNextValue(len(ids))
        columns[4].InsertNextValue("; ".join(
            f"{by_id[i].get('class')} {float(by_id[i].get('score', 0)):.2f}" for i in ids if i in by_id))
    vtk_table = table_node.GetTable()
    vtk_table.Initialize()
    for column in columns:
        vtk_table.AddColumn(column)
    table_node.SetUseColumnTitleAsColumnHeader(True)


def _vertebra_table(scene, vertebrae: list[dict], lesions: list[dict], name: str):
    node = scene.AddNewNodeByClass("vtkMRMLTableNode", _unique_name(scene, name))
    fill_vertebra_table(node, vertebrae, lesions)
    node.SetLocked(True)
    node.Modified()
    return node


def vertebra_rows(table_node) -> list[dict]:
    """Rows of a SpineSeg vertebra table node: name, label, volume_mm3, lesions (count), details."""
    vtk_table = table_node.GetTable()
    keys = ("name", "label", "volume_mm3", "lesions", "details")
    rows = []
    for row in range(vtk_table.GetNumberOfRows()):
        values = {}
        for key, title in zip(keys, VERTEBRA_TABLE_COLUMNS, strict=True):
            column = vtk_table.GetColumnByName(title)
            values[key] = column.GetValue(row) if column is not None else None
        values["label"] = int(values["label"])
        values["volume_mm3"] = float(values["volume_mm3"])
        values["lesions"] = int(values["lesions"])
        rows.append(values)
    return rows


def lesion_rows(markups_node) -> list[dict]:
    """The lesions of a SpineSeg markups node (class, score, vertebra, centre...), one per control point."""
    stored = markups_node.GetAttribute(ATTR_LESIONS)
    lesions = json.loads(stored) if stored else []
    rows = []
    for index in range(markups_node.GetNumberOfControlPoints()):
        ras = [0.0, 0.0, 0.0]
        markups_node.GetNthControlPointPosition(index, ras)
        row = dict(lesions[index]) if index < len(lesions) else {}
        row.setdefault("class", "")
        row.setdefault("score", float("nan"))
        row.setdefault("vertebra", "")
        row["label"] = markups_node.GetNthControlPointLabel(index)
        row["position_ras"] = [float(c) for c in ras]
        rows.append(row)
    return rows


def jump_to_lesion(scene, markups_node, index: int, centered: bool = True) -> list[float]:
    """Move every slice view to lesion ``index`` (centred by default); returns its RAS position."""
    slicer = _slicer()
    ras = [0.0, 0.0, 0.0]
    markups_node.GetNthControlPointPositionWorld(index, ras)
    markups_logic = get_module_logic(scene, "Markups")
    if markups_logic is not None and hasattr(markups_logic, "JumpSlicesToLocation"):
        markups_logic.JumpSlicesToLocation(ras[0], ras[1], ras[2], centered)
    else:
        mode = slicer.vtkMRMLSliceNode.CenteredJumpSlice if centered else slicer.vtkMRMLSliceNode.OffsetJumpSlice
        slicer.vtkMRMLSliceNode.JumpAllSlices(scene, ras[0], ras[1], ras[2], mode)
    return [float(c) for c in ras]


# --- display -----------------------------------------------------------------------------------------------------
def heat_color_node(scene):
    """The heat colour table: Slicer's ``PET-Heat`` when the scene has it, else a SpineSeg table made once."""
    node = scene.GetNodeByID(HEAT_COLOR_NODE_ID)
    if node is not None:
        return node
    existing = scene.GetFirstNodeByName(FALLBACK_HEAT_COLOR_NAME)
    if existing is not None and existing.IsA("vtkMRMLColorTableNode"):
        return existing
    node = scene.AddNewNodeByClass("vtkMRMLColorTableNode", FALLBACK_HEAT_COLOR_NAME)
    node.SetTypeToUser()
    node.SetNumberOfColors(256)
    node.GetLookupTable().SetRange(0, 255)
    for i in range(256):
        t = i / 255.0
        node.SetColor(i, f"{t:.3f}", min(1.0, 3 * t), min(1.0, max(0.0, 3 * t - 1)), min(1.0, max(0.0, 3 * t - 2)), 1.0)
    return node


def configure_heatmap_display(heatmap_node, threshold: float = DEFAULT_HEATMAP_THRESHOLD) -> None:
    """Heat colours over the fixed 0-1 range, values below ``threshold`` transparent."""
    scene = heatmap_node.GetScene()
    if heatmap_node.GetDisplayNode() is None:
        heatmap_node.CreateDefaultDisplayNodes()
    display = heatmap_node.GetDisplayNode()
    display.SetAndObserveColorNodeID(heat_color_node(scene).GetID())
    display.SetAutoWindowLevel(False)
    display.SetWindowLevelMinMax(0.0, 1.0)
    display.SetInterpolate(True)
    set_heatmap_threshold(heatmap_node, threshold)


def set_heatmap_threshold(heatmap_node, threshold: float) -> None:
    """Hide heatmap values below ``threshold`` (0 shows everything)."""
    display = heatmap_node.GetDisplayNode()
    display.SetAutoThreshold(False)
    display.SetApplyThreshold(True)
    display.SetThreshold(float(threshold), max(1.0, float(threshold)))


def heatmap_threshold(heatmap_node) -> float:
    return float(heatmap_node.GetDisplayNode().GetLowerThreshold())


def set_heatmap_opacity(scene, opacity: float, heatmap_node=None) -> None:
    """Foreground opacity of the heatmap in every slice view showing it (all views when ``heatmap_node`` is None)."""
    opacity = min(max(float(opacity), 0.0), 1.0)
    for composite in _composite_nodes(scene):
        if heatmap_node is None or composite.GetForegroundVolumeID() == heatmap_node.GetID():
            composite.SetForegroundOpacity(opacity)
    if heatmap_node is not None:
        heatmap_node.SetAttribute(ATTR_HEATMAP_OPACITY, f"{opacity:g}")


def heatmap_opacity(scene, heatmap_node) -> float:
    for composite in _composite_nodes(scene):
        if composite.GetForegroundVolumeID() == heatmap_node.GetID():
            return float(composite.GetForegroundOpacity())
    stored = heatmap_node.GetAttribute(ATTR_HEATMAP_OPACITY)
    return float(stored) if stored else DEFAULT_HEATMAP_OPACITY


def show_volume_in_slice_views(scene, background=None, foreground=None, opacity: float | None = None) -> None:
    """What ``slicer.util.setSliceViewerLayers`` does, on the slice composite nodes of ``scene``."""
    for composite in _composite_nodes(scene):
        if background is not None:
            composite.SetBackgroundVolumeID(background.GetID())
        if foreground is not None:
            composite.SetForegroundVolumeID(foreground.GetID())
        if opacity is not None:
            composite.SetForegroundOpacity(min(max(float(opacity), 0.0), 1.0))
    if background is not None:
        _fit_slices(scene, background)


def _fit_slices(scene, volume_node) -> None:
    """Centre the slice views on a volume (the application's slice logics do this with FitSliceToAll)."""
    bounds = [0.0] * 6
    volume_node.GetRASBounds(bounds)
    if bounds[1] < bounds[0]:
        return
    center = [(bounds[2 * i] + bounds[2 * i + 1]) / 2 for i in range(3)]
    for slice_node in _slice_nodes(scene):
        slice_node.JumpSliceByCentering(*center)


def set_segmentation_3d_visible(segmentation_node, visible: bool) -> None:
    """Show or hide a segmentation in 3D; closed surfaces are created the first time it is shown."""
    display = segmentation_node.GetDisplayNode()
    if display is None:
        segmentation_node.CreateDefaultDisplayNodes()
        display = segmentation_node.GetDisplayNode()
    if visible:
        segmentation_node.CreateClosedSurfaceRepresentation()
        display.SetPreferredDisplayRepresentationName3D(
            _slicer().vtkSegmentationConverter.GetClosedSurfaceRepresentationName())
    display.SetVisibility3D(bool(visible))


def _composite_nodes(scene) -> list:
    return [scene.GetNthNodeByClass(i, "vtkMRMLSliceCompositeNode")
            for i in range(scene.GetNumberOfNodesByClass("vtkMRMLSliceCompositeNode"))]


def _slice_nodes(scene) -> list:
    return [scene.GetNthNodeByClass(i, "vtkMRMLSliceNode")
            for i in range(scene.GetNumberOfNodesByClass("vtkMRMLSliceNode"))]


def _place_in_study(scene, input_node, nodes) -> None:
    sh = scene.GetSubjectHierarchyNode() if hasattr(scene, "GetSubjectHierarchyNode") else None
    if sh is None:
        return
    input_item = sh.GetItemByDataNode(input_node)
    if not input_item:
        return
    parent = sh.GetItemParent(input_item)
    if not parent:
        return
    for node in nodes:
        item = sh.GetItemByDataNode(node)
        if not item:
            item = sh.CreateItem(parent, node)
        sh.SetItemParent(item, parent)


# --- finding, replacing, removing ------------------------------------------------------------------------------
def _input_of(node) -> str | None:
    referenced = node.GetNodeReferenceID(INPUT_REFERENCE_ROLE)
    return referenced or node.GetAttribute(ATTR_INPUT)


def find_results(scene, input_node=None) -> list[ResultNodes]:
    """SpineSeg results in ``scene`` (for ``input_node`` only, if given), oldest first."""
    runs: dict[str, ResultNodes] = {}
    order: list[str] = []
    for index in range(scene.GetNumberOfNodes()):
        node = scene.GetNthNode(index)
        role = node.GetAttribute(ATTR_ROLE)
        if role not in ROLES:
            continue
        if input_node is not None and _input_of(node) != input_node.GetID():
            continue
        run = node.GetAttribute(ATTR_RUN) or ""
        if run not in runs:
            runs[run] = ResultNodes(run_id=run)
            order.append(run)
        runs[run].set(role, node)
    return [runs[run] for run in order]


def latest_result(scene, input_node=None) -> ResultNodes | None:
    results = find_results(scene, input_node)
    return results[-1] if results else None


def remove_results(scene, input_node=None, keep_ids=()) -> int:
    """Remove SpineSeg result nodes (of ``input_node``, if given) except ``keep_ids``; returns how many."""
    removed = 0
    for result in find_results(scene, input_node):
        for node in result.nodes():
            if node.GetID() in keep_ids:
                continue
            _remove_node(scene, node)
            removed += 1
    return removed


def _remove_node(scene, node) -> None:
    """Remove a node with its display and storage nodes (as the Data module's delete does)."""
    dependents = []
    if node.IsA("vtkMRMLDisplayableNode"):
        dependents += [node.GetNthDisplayNode(i) for i in range(node.GetNumberOfDisplayNodes())]
    if node.IsA("vtkMRMLStorableNode"):
        dependents += [node.GetNthStorageNode(i) for i in range(node.GetNumberOfStorageNodes())]
    sh = scene.GetSubjectHierarchyNode() if hasattr(scene, "GetSubjectHierarchyNode") else None
    if sh is not None:
        item = sh.GetItemByDataNode(node)
        if item:
            sh.RemoveItem(item, False, False)
    scene.RemoveNode(node)
    for dependent in dependents:
        if dependent is not None and dependent.GetScene() is scene:
            scene.RemoveNode(dependent)


def scene_snapshot(scene) -> list[tuple]:
    """Node IDs, classes and names (for checking that a failed or cancelled run changed nothing)."""
    return sorted((scene.GetNthNode(i).GetID(), scene.GetNthNode(i).GetClassName(), scene.GetNthNode(i).GetName())
                  for i in range(scene.GetNumberOfNodes()))


# --- saving and loading ----------------------------------------------------------------------------------------
_EXTENSIONS = (
    ("vtkMRMLSegmentationNode", ".seg.nrrd"),
    ("vtkMRMLMarkupsNode", ".mrk.json"),
    ("vtkMRMLTableNode", ".tsv"),
    ("vtkMRMLModelNode", ".vtk"),
    ("vtkMRMLColorTableNode", ".ctbl"),
    ("vtkMRMLLabelMapVolumeNode", ".nrrd"),
    ("vtkMRMLScalarVolumeNode", ".nrrd"),
)


def _safe_file_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "node"


def save_scene(scene, mrml_path: str | Path, heatmap_format: str = ".nrrd", volume_format: str = ".nrrd") -> Path:
    """Save ``scene`` as ``mrml_path`` with every data node written beside it.

    Segmentations as ``.seg.nrrd``, volumes as ``volume_format``, SpineSeg heatmaps as ``heatmap_format``
    (``.nrrd`` or ``.nii.gz``), markups as ``.mrk.json``, tables as ``.tsv``. Returns the .mrml path.
    """
    mrml_path = Path(mrml_path).absolute()
    root = mrml_path.parent
    root.mkdir(parents=True, exist_ok=True)
    used: set[str] = set()
    for index in range(scene.GetNumberOfNodes()):
        node = scene.GetNthNode(index)
        if not node.IsA("vtkMRMLStorableNode") or not node.GetSaveWithScene() or node.GetHideFromEditors():
            continue
        extension = next((ext for cls, ext in _EXTENSIONS if node.IsA(cls)), None)
        if extension is None:
            continue
        if node.IsA("vtkMRMLColorTableNode") and node.GetType() != node.User:
            continue  # built-in tables are recreated by the colour logic
        if node.IsA("vtkMRMLVolumeNode"):
            if node.GetImageData() is None:
                continue
            extension = heatmap_format if node.GetAttribute(ATTR_ROLE) == ROLE_HEATMAP else volume_format
        storage = node.GetStorageNode()
        if storage is None:
            storage = node.CreateDefaultStorageNode()
            if storage is None:
                raise RuntimeError(f"cannot create a storage node for {node.GetName()} ({node.GetClassName()})")
            scene.AddNode(storage)
            node.SetAndObserveStorageNodeID(storage.GetID())
        stem = _safe_file_name(node.GetName())
        file_name = stem + extension
        counter = 1
        while file_name.lower() in used:
            counter += 1
            file_name = f"{stem}_{counter}{extension}"
        used.add(file_name.lower())
        storage.SetFileName(str(root / file_name))
        if hasattr(storage, "SetUseCompression"):
            storage.SetUseCompression(True)
        if not storage.WriteData(node):
            raise RuntimeError(f"could not write {node.GetName()} to {root / file_name}")
    scene.SetRootDirectory(str(root))
    scene.SetURL(str(mrml_path))
    if not scene.Commit(str(mrml_path)):
        raise RuntimeError(f"could not write the scene file {mrml_path}")
    return mrml_path


def load_scene(mrml_path: str | Path, context: SceneContext | None = None) -> SceneContext:
    """Load a .mrml scene (and its data files) into a new scene made by :func:`create_scene` (or ``context``)."""
    mrml_path = Path(mrml_path).absolute()
    if not mrml_path.is_file():
        raise FileNotFoundError(f"scene file not found: {mrml_path}")
    context = context or create_scene()
    scene = context.scene
    scene.SetRootDirectory(str(mrml_path.parent))
    scene.SetURL(str(mrml_path))
    if not scene.Import():
        raise RuntimeError(f"could not load the scene {mrml_path}")
    return context
