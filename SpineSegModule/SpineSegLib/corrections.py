"""Correcting a SpineSeg result in a scene: renumbering, merging and splitting vertebrae, editing lesions, undo,
and saving the corrected case as training data. Host-agnostic (Slicer or slicer-core; no Qt).

:class:`Corrections` works on one result's nodes: the segmentation (one segment per vertebra), the lesion
markups, the vertebra report table and the input CT. Every operation

- changes segments through :mod:`SpineSegLib.segstate` (voxels, names, colours, label values and SNOMED-CT
  terminology from the label table; vertebra segments' IDs are their names, as in a fresh result),
- then re-assigns each lesion to the vertebra at (or within 10 mm of) its centre and rewrites the report table,
- and records the exact previous state (segment labelmaps and metadata, lesion markups, report table) so
  :meth:`Corrections.undo` restores it; :meth:`Corrections.redo` goes forward again.

Renumbering rules (T13, L6, the anchored sacrum) are in :mod:`SpineSegLib.numbering`; the cranio-caudal order
of the vertebrae comes from their centroids' S coordinate. Saving as a training case is
:func:`SpineSegLib.training_case.save_training_case` (also :meth:`Corrections.save_training_case`).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import scene as _scene
from .errors import InputError
from .labels import LabelTable, load_label_table
from .numbering import SACRUM, canonical_name, plan_renumber, plan_shift
from .segstate import SegmentArrays, SegmentationSnapshot, SegmentInfo, read_segments, write_segments
from .volume import Volume

DEFAULT_LESION_SIZE_MM = 10.0
MANUAL_SCORE = 1.0
FREE_LABEL_START = 100  # label values given to segments that are not vertebrae of the label table


# --- state for undo ----------------------------------------------------------------------------------------------
@dataclass
class CorrectionState:
    """The exact state of a result's editable nodes."""

    segmentation: SegmentationSnapshot
    lesions: tuple | None  # (attribute JSON, control points) of the lesion markups
    table: object | None  # vtkTable copy of the report


@dataclass
class Change:
    description: str
    before: CorrectionState
    after: CorrectionState | None = None


class Corrections:
    """Undoable corrections on one SpineSeg result.

    ``segmentation_node``: the vertebra segmentation; ``reference_node``: the CT it belongs to (found through the
    result's input reference when omitted); ``lesions_node`` / ``table_node``: the result's lesion markups and
    report table (found among the result's nodes when omitted; created on first use if the result has none).
    ``undo_limit``: how many previous states are kept (0: none, for hosts that keep their own undo stack through
    ``on_change``). ``on_change(change)`` is called after every operation, undo and redo.
    """

    def __init__(self, segmentation_node, reference_node=None, lesions_node=None, table_node=None,
                 table: LabelTable | None = None, undo_limit: int = 20,
                 on_change: Callable[[Change], None] | None = None):
        if segmentation_node is None or not segmentation_node.IsA("vtkMRMLSegmentationNode"):
            raise InputError("choose a segmentation to correct")
        self.segmentation_node = segmentation_node
        self.scene = segmentation_node.GetScene()
        self.table = table or load_label_table()
        result = self._result_nodes()
        self.reference_node = reference_node or self._input_node()
        self.lesions_node = lesions_node or (result.lesions if result else None)
        self.table_node = table_node or (result.table if result else None)
        self.undo_limit = int(undo_limit)
        self.on_change = on_change
        self._undo: list[Change] = []
        self._redo: list[Change] = []
        if self.reference_node is not None and not _has_reference_geometry(segmentation_node):
            segmentation_node.SetReferenceImageGeometryParameterFromVolumeNode(self.reference_node)

    @classmethod
    def from_result(cls, nodes: _scene.ResultNodes, reference_node=None, **kwargs) -> Corrections:
        """Corrections on the nodes of a result (:func:`SpineSegLib.scene.add_result_to_scene`)."""
        return cls(nodes.segmentation, reference_node, nodes.lesions, nodes.table, **kwargs)

    # --- finding the result's other nodes -------------------------------------------------------------------------
    def _result_nodes(self) -> _scene.ResultNodes | None:
        run = self.segmentation_node.GetAttribute(_scene.ATTR_RUN)
        if not run or self.scene is None:
            return None
        for result in _scene.find_results(self.scene):
            if result.run_id == run:
                return result
        return None

    def _input_node(self):
        node_id = self.segmentation_node.GetNodeReferenceID(_scene.INPUT_REFERENCE_ROLE) \
            or self.segmentation_node.GetAttribute(_scene.ATTR_INPUT)
        return self.scene.GetNodeByID(node_id) if node_id and self.scene is not None else None

    # --- queries ------------------------------------------------------------------------------------------------
    def vertebrae(self) -> list[dict]:
        """Vertebra segments (names from the label table) with voxels, cranio-caudal: ``id``, ``name``, ``label``,
        ``voxels``, ``volume_mm3``, ``centroid_ras``, ``color`` (0-1 RGB)."""
        arrays = read_segments(self.segmentation_node)
        return self._column(arrays)

    def _column(self, arrays: SegmentArrays) -> list[dict]:
        counts = arrays.counts()
        centroids = _centroids(arrays)
        voxel_mm3 = float(abs(np.linalg.det(arrays.affine[:3, :3])))
        column = []
        for position, info in enumerate(arrays.segments):
            if not self._is_vertebra(info.name) or counts[position] == 0:
                continue
            column.append({"id": info.segment_id, "name": info.name, "label": info.label_value,
                           "voxels": int(counts[position]), "volume_mm3": round(float(counts[position]) * voxel_mm3, 1),
                           "centroid_ras": centroids[position].tolist(), "color": tuple(info.color),
                           "position": position})
        column.sort(key=lambda v: -v["centroid_ras"][2])
        return column

    def _is_vertebra(self, name: str) -> bool:
        return _table_has(self.table, name)

    def lesions(self) -> list[dict]:
        """The lesions (dicts with ``id``, ``class``, ``score``, ``center_ras``, ``size_mm``, ``vertebra``...)."""
        node = self.lesions_node
        if node is None:
            return []
        stored = node.GetAttribute(_scene.ATTR_LESIONS)
        lesions = json.loads(stored) if stored else []
        out = []
        for index in range(node.GetNumberOfControlPoints()):
            lesion = dict(lesions[index]) if index < len(lesions) else {"id": index + 1, "class": "lesion"}
            position = [0.0, 0.0, 0.0]
            node.GetNthControlPointPosition(index, position)
            lesion["center_ras"] = [float(c) for c in position]
            out.append(lesion)
        return out

    def labels(self) -> Volume:
        """Label-table values on the reference grid (vertebra segments only; other segments are left out)."""
        return self._label_volume(read_segments(self.segmentation_node))

    def _label_volume(self, arrays: SegmentArrays) -> Volume:
        lut = np.zeros(len(arrays.segments) + 1, dtype=np.uint8)
        for position, info in enumerate(arrays.segments):
            if self._is_vertebra(info.name):
                lut[position + 1] = self.table.by_name(info.name).value
        return Volume(lut[arrays.index], arrays.affine)

    def segment_id_by_name(self, name: str) -> str:
        segmentation = self.segmentation_node.GetSegmentation()
        wanted = name.strip().lower()
        for index in range(segmentation.GetNumberOfSegments()):
            if segmentation.GetNthSegment(index).GetName().strip().lower() == wanted:
                return segmentation.GetNthSegmentID(index)
        raise InputError(f"there is no segment named {name!r}")

    # --- undo ---------------------------------------------------------------------------------------------------
    def capture(self) -> CorrectionState:
        """The exact current state (for undo stacks kept by a host)."""
        table = None
        if self.table_node is not None:
            import vtk

            table = vtk.vtkTable()
            table.DeepCopy(self.table_node.GetTable())
        return CorrectionState(SegmentationSnapshot(self.segmentation_node), _markups_state(self.lesions_node), table)

    def restore(self, state: CorrectionState) -> None:
        """Put back a state from :meth:`capture` exactly."""
        state.segmentation.restore(self.segmentation_node)
        if self.lesions_node is not None:
            _restore_markups(self.lesions_node, state.lesions or (json.dumps([]), ()))
        if self.table_node is not None:
            if state.table is not None:
                self.table_node.GetTable().DeepCopy(state.table)
                self.table_node.Modified()
            else:  # the table was made after this state: show the restored state's report
                from .results import vertebra_summary

                fill_report_table(self.table_node, vertebra_summary(self.labels(), self.lesions(), self.table),
                                  self.lesions())

    @property
    def can_undo(self) -> bool:
        return bool(self._undo)

    @property
    def can_redo(self) -> bool:
        return bool(self._redo)

    @property
    def history(self) -> list[str]:
        """Descriptions of the operations that can be undone, oldest first."""
        return [change.description for change in self._undo]

    def undo(self) -> str:
        """Restore the state before the last operation; returns its description."""
        if not self._undo:
            raise InputError("nothing to undo")
        change = self._undo.pop()
        change.after = self.capture()
        self.restore(change.before)
        self._redo.append(change)
        self._notify(change)
        return change.description

    def redo(self) -> str:
        if not self._redo:
            raise InputError("nothing to redo")
        change = self._redo.pop()
        before = self.capture()
        self.restore(change.after)
        change.before = before
        self._undo.append(change)
        self._notify(change)
        return change.description

    @contextlib.contextmanager
    def _operation(self, description: str):
        before = self.capture()
        try:
            yield
            self.update_report()
        except BaseException:
            self.restore(before)  # a failed operation changes nothing
            raise
        change = Change(description, before)
        if self.undo_limit > 0:
            self._undo.append(change)
            del self._undo[:-self.undo_limit]
        self._redo.clear()
        self._notify(change)

    def _notify(self, change: Change) -> None:
        if self.on_change is not None:
            self.on_change(change)

    # --- vertebra operations --------------------------------------------------------------------------------------
    def renumber(self, segment_id: str, name: str) -> dict[str, str]:
        """``segment_id`` is truly vertebra ``name``: rename the whole column consistently (voxels untouched).

        Returns {old name: new name} for the vertebrae whose name changed.
        """
        name = canonical_name(name, self.table)
        arrays = read_segments(self.segmentation_node)
        column = self._column(arrays)
        picked = _picked(column, segment_id, arrays)
        old_name = column[picked]["name"]
        new_names = plan_renumber([v["name"] for v in column], picked, name, self.table)
        with self._operation(f"Renumber {old_name} as {name}"):
            self._apply_names(arrays, column, new_names)
        return {v["name"]: n for v, n in zip(column, new_names, strict=True) if v["name"] != n}

    def shift(self, steps: int) -> dict[str, str]:
        """Move every vertebra name ``steps`` places (+1: caudal, L1 -> L2; -1: cranial, L2 -> L1)."""
        arrays = read_segments(self.segmentation_node)
        column = self._column(arrays)
        new_names = plan_shift([v["name"] for v in column], int(steps), self.table)
        direction = "down" if steps > 0 else "up"
        with self._operation(f"Shift labels {direction} by {abs(int(steps))}"):
            self._apply_names(arrays, column, new_names)
        return {v["name"]: n for v, n in zip(column, new_names, strict=True) if v["name"] != n}

    def _apply_names(self, arrays: SegmentArrays, column: list[dict], new_names: list[str]) -> None:
        infos = list(arrays.segments)
        fixed = set()
        for vertebra, new_name in zip(column, new_names, strict=True):
            position = vertebra["position"]
            infos[position] = self._vertebra_info(new_name, infos[position].source)
            fixed.add(position)
        self._commit(arrays, infos, arrays.index, fixed)

    def _vertebra_info(self, name: str, source=None) -> SegmentInfo:
        label = self.table.by_name(name)
        return SegmentInfo(label.name, label.name, label.color_float, label.value,
                           self.table.terminology_entry(label.value), source)

    def merge(self, segment_id: str, other_id: str) -> str:
        """Add the voxels of ``other_id`` to ``segment_id`` and remove ``other_id``; returns the kept segment ID."""
        if segment_id == other_id:
            raise InputError("choose two different segments to merge")
        arrays = read_segments(self.segmentation_node)
        keep, other = _position(arrays, segment_id), _position(arrays, other_id)
        keep_name, other_name = arrays.segments[keep].name, arrays.segments[other].name
        with self._operation(f"Merge {other_name} into {keep_name}"):
            index = arrays.index.copy()
            index[index == other + 1] = keep + 1
            self._commit(arrays, [info for p, info in enumerate(arrays.segments) if p != other],
                         _drop_position(index, other), set())
        return segment_id

    def split_plane(self, segment_id: str, point_ras=None, normal=None) -> str:
        """Cut ``segment_id`` by the plane through ``point_ras`` (default: its centroid) perpendicular to the local
        spine axis (from the neighbouring vertebrae's centroids; ``normal`` overrides it). The cranial part keeps
        the vertebra's name, the caudal part becomes a new segment, and the column is renumbered from the cranial
        part. Returns the new segment's ID."""
        arrays = read_segments(self.segmentation_node)
        position = _position(arrays, segment_id)
        mask = arrays.mask(position)
        if not mask.any():
            raise InputError(f"segment {arrays.segments[position].name} is empty")
        centroids = _centroids(arrays)
        point = np.asarray(point_ras if point_ras is not None else centroids[position], dtype=float)
        axis = np.asarray(normal, dtype=float) if normal is not None else self._local_axis(arrays, position, centroids)
        axis = axis / (np.linalg.norm(axis) or 1.0)
        if axis[2] < 0:
            axis = -axis  # points cranially
        ijk = np.argwhere(mask)
        side = (Volume(mask, arrays.affine).voxel_to_ras(ijk) - point) @ axis
        caudal = np.zeros(mask.shape, dtype=bool)
        caudal[tuple(ijk[side < 0].T)] = True
        return self._split(arrays, position, mask & ~caudal, caudal, "plane")

    def split_components(self, segment_id: str, connectivity: int = 3) -> str:
        """Split ``segment_id`` into its two largest connected parts (``connectivity`` 1: faces, 3: also edges and
        corners); smaller islands join the nearer part. The cranial part keeps the name, as in :meth:`split_plane`.
        Returns the new segment's ID."""
        from scipy import ndimage

        arrays = read_segments(self.segmentation_node)
        position = _position(arrays, segment_id)
        mask = arrays.mask(position)
        components, count = ndimage.label(mask, ndimage.generate_binary_structure(3, int(connectivity)))
        if count < 2:
            raise InputError(f"segment {arrays.segments[position].name} is one connected piece: split it with a "
                             "plane instead")
        sizes = np.bincount(components.ravel())[1:]
        first, second = (np.argsort(-sizes)[:2] + 1).tolist()
        centres = ndimage.center_of_mass(mask, components, range(1, count + 1))
        part = np.zeros(count + 1, dtype=np.int8)
        for label in range(1, count + 1):
            centre = np.asarray(centres[label - 1])
            near_first = np.linalg.norm(centre - centres[first - 1]) <= np.linalg.norm(centre - centres[second - 1])
            part[label] = 1 if near_first else 2
        one = part[components] == 1
        two = part[components] == 2
        ras_one = Volume(mask, arrays.affine).voxel_to_ras(np.argwhere(one).mean(axis=0))[0]
        ras_two = Volume(mask, arrays.affine).voxel_to_ras(np.argwhere(two).mean(axis=0))[0]
        cranial, caudal = (one, two) if ras_one[2] >= ras_two[2] else (two, one)
        return self._split(arrays, position, cranial & mask, caudal & mask, "components")

    def _split(self, arrays: SegmentArrays, position: int, cranial: np.ndarray, caudal: np.ndarray, how: str) -> str:
        info = arrays.segments[position]
        if not cranial.any() or not caudal.any():
            raise InputError(f"the cut does not divide {info.name}: move the point into the vertebra")
        index = arrays.index.copy()
        new_position = len(arrays.segments)
        index[caudal] = new_position + 1
        is_vertebra = self._is_vertebra(info.name)
        new_info = SegmentInfo(_free_id(arrays, f"{info.segment_id}_part"), info.name if is_vertebra else
                               f"{info.name} 2", info.color, _free_value(arrays), info.terminology, info.source)
        infos = list(arrays.segments) + [new_info]
        with self._operation(f"Split {info.name} ({how})"):
            grown = SegmentArrays(index, arrays.affine, arrays.extent, arrays.image_to_world, infos)
            if is_vertebra:
                column = self._column(grown)
                picked = next(i for i, v in enumerate(column) if v["position"] == position)
                new_names = plan_renumber([v["name"] for v in column], picked, info.name, self.table)
                self._apply_names(grown, column, new_names)
            else:
                self._commit(grown, infos, index, set())
        return self._id_of_voxels(caudal)

    def _id_of_voxels(self, mask: np.ndarray) -> str:
        arrays = read_segments(self.segmentation_node)
        values = np.bincount(arrays.index[mask].ravel(), minlength=len(arrays.segments) + 1)
        return arrays.segments[int(values[1:].argmax())].segment_id

    def _local_axis(self, arrays: SegmentArrays, position: int, centroids) -> np.ndarray:
        column = self._column(arrays)
        order = [v["position"] for v in column]
        if position not in order or len(order) < 2:
            return np.array([0.0, 0.0, 1.0])
        k = order.index(position)
        above = centroids[order[k - 1]] if k > 0 else centroids[position]
        below = centroids[order[k + 1]] if k + 1 < len(order) else centroids[position]
        axis = np.asarray(above) - np.asarray(below)
        return axis if np.linalg.norm(axis) > 1e-6 else np.array([0.0, 0.0, 1.0])

    def _commit(self, arrays: SegmentArrays, infos: list[SegmentInfo], index: np.ndarray, fixed: set) -> None:
        """Write ``infos``/``index`` back: vertebrae first in label-table order, then the other segments; unique
        IDs and label values (the vertebrae in ``fixed`` keep theirs)."""
        infos = list(infos)
        taken_values = {infos[p].label_value for p in fixed}
        taken_ids = {infos[p].segment_id for p in fixed}
        for position, info in enumerate(infos):
            if position in fixed:
                continue
            value, segment_id = info.label_value, info.segment_id
            if value in taken_values or value <= 0:
                value = next(v for v in range(FREE_LABEL_START, 65535) if v not in taken_values
                             and v not in {i.label_value for i in infos})
            while segment_id in taken_ids:
                segment_id += "_1"
            taken_values.add(value)
            taken_ids.add(segment_id)
            infos[position] = SegmentInfo(segment_id, info.name, info.color, value, info.terminology, info.source)
        order = sorted(range(len(infos)), key=lambda p: (0, self.table.order(self.table.by_name(infos[p].name).value))
                       if self._is_vertebra(infos[p].name) else (1, p))
        lut = np.zeros(len(infos) + 1, dtype=index.dtype)
        for new_position, old_position in enumerate(order):
            lut[old_position + 1] = new_position + 1
        write_segments(self.segmentation_node, SegmentArrays(lut[index], arrays.affine, arrays.extent,
                                                             arrays.image_to_world, [infos[p] for p in order]))

    # --- lesions ------------------------------------------------------------------------------------------------
    def add_lesion(self, point_ras, lesion_class: str = "fracture", size_mm: float = DEFAULT_LESION_SIZE_MM,
                   grade: int | None = None) -> dict:
        """Add a lesion at ``point_ras`` (RAS mm); returns it with its ID and vertebra."""
        lesion_class = self._lesion_class(lesion_class)
        point = [float(c) for c in point_ras]
        if len(point) != 3 or not np.all(np.isfinite(point)):
            raise InputError("a lesion needs a point with three finite RAS coordinates")
        if not float(size_mm) > 0:
            raise InputError("a lesion's size must be positive (mm)")
        lesions = self.lesions()
        lesion = {"id": max((int(les.get("id", 0)) for les in lesions), default=0) + 1, "class": lesion_class,
                  "score": MANUAL_SCORE, "center_ras": [round(c, 3) for c in point], "size_mm": float(size_mm),
                  "grade": grade if lesion_class == "fracture" else None, "vertebra": None, "vertebra_label": None,
                  "source": "manual"}
        with self._operation(f"Add {lesion_class} lesion"):
            self._write_lesions(lesions + [lesion])
        return next(les for les in self.lesions() if les["id"] == lesion["id"])

    def delete_lesion(self, lesion_id: int) -> dict:
        lesions = self.lesions()
        found = _lesion(lesions, lesion_id)
        with self._operation(f"Delete lesion {lesion_id}"):
            self._write_lesions([les for les in lesions if les is not found])
        return found

    def set_lesion_class(self, lesion_id: int, lesion_class: str) -> dict:
        lesion_class = self._lesion_class(lesion_class)
        lesions = self.lesions()
        found = _lesion(lesions, lesion_id)
        with self._operation(f"Lesion {lesion_id}: {found.get('class')} -> {lesion_class}"):
            found["class"] = lesion_class
            if lesion_class != "fracture":
                found["grade"] = None
            self._write_lesions(lesions)
        return _lesion(self.lesions(), lesion_id)

    def _lesion_class(self, name: str) -> str:
        names = self.table.lesion_class_names
        if str(name).lower() not in names:
            raise InputError(f"unknown lesion class {name!r}: use one of {', '.join(names)}")
        return str(name).lower()

    def _lesions_node(self):
        if self.lesions_node is None:
            node = self.scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode",
                                                self.scene.GenerateUniqueName(f"{self.segmentation_node.GetName()} "
                                                                              "lesions"))
            node.CreateDefaultDisplayNodes()
            _tag_like(node, self.segmentation_node, _scene.ROLE_LESIONS)
            self.lesions_node = node
        return self.lesions_node

    def _write_lesions(self, lesions: list[dict]) -> None:
        node = self._lesions_node()
        was_modifying = node.StartModify()
        try:
            node.RemoveAllControlPoints()
            for lesion in lesions:
                index = node.AddControlPoint([float(c) for c in lesion["center_ras"]], _scene.lesion_label(lesion))
                node.SetNthControlPointDescription(index, lesion_description(lesion))
                node.SetNthControlPointLocked(index, True)
            node.SetAttribute(_scene.ATTR_LESIONS, json.dumps(lesions, default=_scene._json_default))
        finally:
            node.EndModify(was_modifying)

    # --- report -------------------------------------------------------------------------------------------------
    def update_report(self) -> list[dict]:
        """Assign every lesion to its vertebra and rewrite the report table; returns the per-vertebra rows."""
        from .postprocess import _vertebra_at  # the one lesion-to-vertebra rule, shared with the segmenter
        from .results import vertebra_summary

        labels = self.labels()
        lesions = self.lesions()
        spacing = labels.spacing
        for lesion in lesions:
            ijk = np.round(labels.ras_to_voxel(lesion["center_ras"])[0]).astype(int)
            inside = np.all(ijk >= 0) and np.all(ijk < labels.shape)
            value = _vertebra_at(labels.array, ijk, spacing) if inside else 0
            lesion["vertebra"] = self.table.by_value(value).name if value else None
            lesion["vertebra_label"] = int(value) if value else None
        if self.lesions_node is not None:
            self._write_lesions(lesions)
        summary = vertebra_summary(labels, lesions, self.table)
        if self.table_node is None:
            self.table_node = self.scene.AddNewNodeByClass(
                "vtkMRMLTableNode", self.scene.GenerateUniqueName(f"{self.segmentation_node.GetName()} report"))
            _tag_like(self.table_node, self.segmentation_node, _scene.ROLE_REPORT)
        fill_report_table(self.table_node, summary, lesions)
        return summary

    # --- saving -------------------------------------------------------------------------------------------------
    def save_training_case(self, dataset_dir: str | Path, case_id: str | None = None, **meta) -> dict:
        """Write the CT, the corrected labels and the lesions as a new case of a training dataset (see
        :func:`SpineSegLib.training_case.save_training_case`); returns the manifest entry."""
        from .training_case import save_training_case

        if self.reference_node is None:
            raise InputError("the CT of this segmentation is not in the scene: cannot save a training case")
        model = self.segmentation_node.GetAttribute(_scene.ATTR_MODEL)
        if model:
            meta.setdefault("model", model)
        return save_training_case(dataset_dir, self.reference_node, self.segmentation_node, self.lesions(),
                                  case_id=case_id, table=self.table, **meta)


# --- helpers -----------------------------------------------------------------------------------------------------
def lesion_description(lesion: dict) -> str:
    """The markup description of a lesion, e.g. ``"fracture in L1, score 0.92, 10.0 mm"``."""
    return _scene.lesion_description(lesion)


def fill_report_table(table_node, vertebrae: list[dict], lesions: list[dict]) -> None:
    """Write the per-vertebra report into a table node (the same table a fresh result gets)."""
    _scene.fill_vertebra_table(table_node, vertebrae, lesions)
    table_node.Modified()


def _table_has(table: LabelTable, name: str) -> bool:
    try:
        table.by_name(name)
        return True
    except KeyError:
        return False


def _has_reference_geometry(segmentation_node) -> bool:
    slicer = _scene._slicer()
    name = slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName()
    return bool(segmentation_node.GetSegmentation().GetConversionParameter(name))


def _centroids(arrays: SegmentArrays) -> list[np.ndarray]:
    """Centroid (RAS) of each segment; NaN for empty ones."""
    count = len(arrays.segments)
    flat = arrays.index.ravel()
    where = np.flatnonzero(flat)
    labels = flat[where].astype(np.int64)
    coords = np.unravel_index(where, arrays.index.shape)
    voxels = np.bincount(labels, minlength=count + 1)[1:]
    sums = np.stack([np.bincount(labels, weights=c, minlength=count + 1)[1:] for c in coords], axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_ijk = sums / voxels[:, None]
    ras = mean_ijk @ arrays.affine[:3, :3].T + arrays.affine[:3, 3]
    return [ras[i] for i in range(count)]


def _position(arrays: SegmentArrays, segment_id: str) -> int:
    for position, info in enumerate(arrays.segments):
        if info.segment_id == segment_id:
            return position
    raise InputError(f"there is no segment {segment_id!r}")


def _picked(column: list[dict], segment_id: str, arrays: SegmentArrays) -> int:
    for k, vertebra in enumerate(column):
        if vertebra["id"] == segment_id:
            return k
    position = _position(arrays, segment_id)
    raise InputError(f"segment {arrays.segments[position].name!r} is not a vertebra with voxels: name it after a "
                     "vertebra of the label table first")


def _drop_position(index: np.ndarray, removed: int) -> np.ndarray:
    lut = np.arange(index.max(initial=0) + 2, dtype=index.dtype)
    lut[removed + 1] = 0
    lut[removed + 2:] -= 1
    return lut[index]


def _free_id(arrays: SegmentArrays, base: str) -> str:
    ids = {info.segment_id for info in arrays.segments}
    candidate, n = base, 1
    while candidate in ids:
        n += 1
        candidate = f"{base}{n}"
    return candidate


def _free_value(arrays: SegmentArrays) -> int:
    used = {info.label_value for info in arrays.segments}
    return next(v for v in range(FREE_LABEL_START, 65535) if v not in used)


def _lesion(lesions: list[dict], lesion_id) -> dict:
    for lesion in lesions:
        if str(lesion.get("id")) == str(lesion_id):
            return lesion
    raise InputError(f"there is no lesion {lesion_id}")


def _tag_like(node, segmentation_node, role: str) -> None:
    """Give a node created here the result attributes of the segmentation (so hosts find it with the result)."""
    node.SetAttribute(_scene.ATTR_ROLE, role)
    for attribute in (_scene.ATTR_INPUT, _scene.ATTR_RUN, _scene.ATTR_MODEL):
        value = segmentation_node.GetAttribute(attribute)
        if value:
            node.SetAttribute(attribute, value)
    reference = segmentation_node.GetNodeReferenceID(_scene.INPUT_REFERENCE_ROLE)
    if reference:
        node.SetNodeReferenceID(_scene.INPUT_REFERENCE_ROLE, reference)


def _markups_state(node):
    if node is None:
        return None
    points = []
    for index in range(node.GetNumberOfControlPoints()):
        position = [0.0, 0.0, 0.0]
        node.GetNthControlPointPosition(index, position)
        points.append((tuple(position), node.GetNthControlPointLabel(index), node.GetNthControlPointDescription(index),
                       bool(node.GetNthControlPointLocked(index))))
    return node.GetAttribute(_scene.ATTR_LESIONS), tuple(points)


def _restore_markups(node, state) -> None:
    attribute, points = state
    was_modifying = node.StartModify()
    try:
        node.RemoveAllControlPoints()
        for position, label, description, locked in points:
            index = node.AddControlPoint(list(position), label)
            node.SetNthControlPointDescription(index, description)
            node.SetNthControlPointLocked(index, locked)
        if attribute is None:
            node.RemoveAttribute(_scene.ATTR_LESIONS)
        else:
            node.SetAttribute(_scene.ATTR_LESIONS, attribute)
    finally:
        node.EndModify(was_modifying)


__all__ = ["Corrections", "CorrectionState", "Change", "fill_report_table", "lesion_description", "SACRUM"]
