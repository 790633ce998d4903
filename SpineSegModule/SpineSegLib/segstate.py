"""A segmentation's voxels and segments as numpy data, written back as one shared layer, and exact snapshots.

Used by :mod:`SpineSegLib.corrections`; works on any ``vtkMRMLSegmentationNode`` in Slicer or slicer-core.

- :func:`read_segments` gives one index array on the segmentation's reference grid (0 = background, ``n + 1`` =
  the n-th segment) plus each segment's metadata; :func:`write_segments` replaces the segments with new ones
  sharing one binary-labelmap layer (each segment's label value is its value in that layer, as Slicer stores a
  multi-label segmentation). Segments stored in separate, overlapping layers are flattened (the later wins).
- :class:`SegmentationSnapshot` is the exact state of a segmentation (every layer's voxels, compressed, and every
  segment's ID, order, name, colour, label value and tags), restored with :meth:`SegmentationSnapshot.restore`.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import numpy as np

CLOSED_SURFACE = "Closed surface"
BINARY_LABELMAP = "Binary labelmap"


def _slicer():
    import slicer

    return slicer


@dataclass
class SegmentInfo:
    """One segment's identity and looks. ``source``: the segment to copy other metadata (tags) from."""

    segment_id: str
    name: str
    color: tuple[float, float, float]
    label_value: int
    terminology: str = ""
    source: object = None  # a vtkSegment whose metadata (tags...) is kept


@dataclass
class SegmentArrays:
    """The voxels of all segments on the reference grid: ``index[i, j, k] = n + 1`` for segment n."""

    index: np.ndarray  # (I, J, K) integer array
    affine: np.ndarray  # voxel (i, j, k) of ``index`` -> RAS (the segmentation node's own coordinates)
    extent: tuple[int, ...]  # VTK extent of the grid
    image_to_world: np.ndarray  # VTK image-to-world matrix (extent coordinates)
    segments: list[SegmentInfo] = field(default_factory=list)

    def mask(self, position: int) -> np.ndarray:
        return self.index == position + 1

    def counts(self) -> np.ndarray:
        """Voxels per segment (length = number of segments)."""
        return np.bincount(self.index.ravel(), minlength=len(self.segments) + 1)[1:len(self.segments) + 1]


def segment_infos(segmentation_node) -> list[SegmentInfo]:
    segmentation = segmentation_node.GetSegmentation()
    infos = []
    for index in range(segmentation.GetNumberOfSegments()):
        segment = segmentation.GetNthSegment(index)
        infos.append(SegmentInfo(segmentation.GetNthSegmentID(index), segment.GetName(), tuple(segment.GetColor()),
                                 int(segment.GetLabelValue()), segment.GetTerminology() or "", segment))
    return infos


def _image_to_numpy(image) -> np.ndarray:
    from vtk.util import numpy_support

    dims = image.GetDimensions()
    scalars = image.GetPointData().GetScalars()
    if scalars is None or 0 in dims:
        return np.zeros((0, 0, 0), dtype=np.uint8)
    return numpy_support.vtk_to_numpy(scalars).reshape(dims[::-1]).transpose(2, 1, 0)


def _matrix(image) -> np.ndarray:
    import vtk

    matrix = vtk.vtkMatrix4x4()
    image.GetImageToWorldMatrix(matrix)
    return _slicer().util.arrayFromVTKMatrix(matrix)


def read_segments(segmentation_node) -> SegmentArrays:
    """Every segment's voxels as one index array on the reference grid, with the segments' metadata."""
    slicer = _slicer()
    import vtk

    infos = segment_infos(segmentation_node)
    ids = vtk.vtkStringArray()
    for info in infos:
        ids.InsertNextValue(info.segment_id)
    merged = slicer.vtkOrientedImageData()
    if not segmentation_node.GenerateMergedLabelmapForAllSegments(
            merged, slicer.vtkSegmentation.EXTENT_REFERENCE_GEOMETRY, None, ids):
        raise RuntimeError(f"could not read the voxels of segmentation {segmentation_node.GetName()}")
    extent = tuple(merged.GetExtent())
    image_to_world = _matrix(merged)
    offset = np.eye(4)
    offset[:3, 3] = extent[0::2]
    index = np.array(_image_to_numpy(merged), dtype=np.uint16 if len(infos) < 65535 else np.uint32, copy=True)
    return SegmentArrays(index, image_to_world @ offset, extent, image_to_world, infos)


def write_segments(segmentation_node, arrays: SegmentArrays) -> None:
    """Replace every segment of ``segmentation_node`` with ``arrays.segments``, all in one shared layer.

    Each segment keeps the ID, name, colour, label value and terminology given in its :class:`SegmentInfo`
    (other tags are copied from ``info.source``); label values must be unique. Closed surfaces are rebuilt if the
    segmentation had them.
    """
    slicer = _slicer()
    from vtk.util import numpy_support

    values = [info.label_value for info in arrays.segments]
    if len(set(values)) != len(values) or any(v <= 0 for v in values):
        raise ValueError(f"segment label values must be unique and positive, got {values}")
    dtype = np.uint8 if max(values, default=0) < 256 else np.uint16
    lut = np.zeros(len(arrays.segments) + 1, dtype=dtype)
    lut[1:] = values
    layer = lut[arrays.index]
    image = slicer.vtkOrientedImageData()
    image.SetExtent(*arrays.extent)
    image.SetImageToWorldMatrix(slicer.util.vtkMatrixFromArray(arrays.image_to_world))
    scalars = numpy_support.numpy_to_vtk(np.ascontiguousarray(layer).ravel(order="F"), deep=True,
                                         array_type=numpy_support.get_vtk_array_type(dtype))
    image.GetPointData().SetScalars(scalars)

    segmentation = segmentation_node.GetSegmentation()
    had_surfaces = segmentation.ContainsRepresentation(CLOSED_SURFACE)
    was_modifying = segmentation_node.StartModify()
    try:
        segmentation.RemoveAllSegments()
        segmentation.SetSourceRepresentationName(BINARY_LABELMAP)
        for info in arrays.segments:
            segment = slicer.vtkSegment()
            if info.source is not None:
                segment.DeepCopyMetadata(info.source)
            segment.SetName(info.name)
            segment.SetColor(*info.color)
            segment.SetLabelValue(int(info.label_value))
            if info.terminology:
                segment.SetTerminology(info.terminology)
            segment.AddRepresentation(BINARY_LABELMAP, image)
            segmentation.AddSegment(segment, info.segment_id)
    finally:
        segmentation_node.EndModify(was_modifying)
    if had_surfaces:
        segmentation_node.CreateClosedSurfaceRepresentation()


# --- exact snapshots ---------------------------------------------------------------------------------------------
@dataclass
class _Layer:
    extent: tuple[int, ...]
    image_to_world: np.ndarray
    vtk_type: int
    dtype: str
    data: bytes  # zlib-compressed scalars


class SegmentationSnapshot:
    """The exact state of a segmentation: every layer's voxels (compressed) and every segment's metadata.

    Restoring rebuilds the same segments (IDs, order, name, colour, label value, tags) on the same layers with
    the same voxels; closed surfaces are regenerated when the segmentation shows them.
    """

    def __init__(self, segmentation_node):
        segmentation = segmentation_node.GetSegmentation()
        self.source_representation = segmentation.GetSourceRepresentationName()
        self.conversion = _slicer().vtkSegmentation()
        self.conversion.CopyConversionParameters(segmentation)
        self.layers = [self._pack(segmentation.GetLayerDataObject(i)) for i in range(segmentation.GetNumberOfLayers())]
        self.segments = []  # (segment ID, metadata copy, layer number or None)
        for index in range(segmentation.GetNumberOfSegments()):
            segment_id = segmentation.GetNthSegmentID(index)
            meta = _slicer().vtkSegment()
            meta.DeepCopyMetadata(segmentation.GetSegment(segment_id))
            layer = segmentation.GetLayerIndex(segment_id)
            self.segments.append((segment_id, meta, layer if 0 <= layer < len(self.layers) else None))

    @staticmethod
    def _pack(image) -> _Layer:
        array = _image_to_numpy(image)
        scalars = image.GetPointData().GetScalars()
        vtk_type = scalars.GetDataType() if scalars is not None else 3  # VTK_UNSIGNED_CHAR
        return _Layer(tuple(image.GetExtent()), _matrix(image), vtk_type, str(array.dtype),
                      zlib.compress(np.ascontiguousarray(array.transpose(2, 1, 0)).tobytes(), 1))

    @staticmethod
    def _unpack(layer: _Layer):
        slicer = _slicer()
        from vtk.util import numpy_support

        image = slicer.vtkOrientedImageData()
        image.SetExtent(*layer.extent)
        image.SetImageToWorldMatrix(slicer.util.vtkMatrixFromArray(layer.image_to_world))
        flat = np.frombuffer(zlib.decompress(layer.data), dtype=np.dtype(layer.dtype)).copy()
        scalars = numpy_support.numpy_to_vtk(flat, deep=True, array_type=layer.vtk_type)
        image.GetPointData().SetScalars(scalars)
        return image

    @property
    def nbytes(self) -> int:
        return sum(len(layer.data) for layer in self.layers)

    def restore(self, segmentation_node) -> None:
        slicer = _slicer()
        segmentation = segmentation_node.GetSegmentation()
        had_surfaces = segmentation.ContainsRepresentation(CLOSED_SURFACE)
        images = [self._unpack(layer) for layer in self.layers]
        was_modifying = segmentation_node.StartModify()
        try:
            segmentation.RemoveAllSegments()
            segmentation.CopyConversionParameters(self.conversion)
            segmentation.SetSourceRepresentationName(self.source_representation or BINARY_LABELMAP)
            for segment_id, meta, layer in self.segments:
                segment = slicer.vtkSegment()
                segment.DeepCopyMetadata(meta)
                if layer is not None:
                    segment.AddRepresentation(BINARY_LABELMAP, images[layer])
                segmentation.AddSegment(segment, segment_id)
        finally:
            segmentation_node.EndModify(was_modifying)
        if had_surfaces:
            segmentation_node.CreateClosedSurfaceRepresentation()
