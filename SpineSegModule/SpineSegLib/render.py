"""Pictures of what the Slicer module shows, rendered offscreen with VTK (no Qt, no display needed).

:func:`render_scene_views` writes ``axial.png``, ``sagittal.png`` and ``coronal.png`` (the CT with vertebra
colours, the lesion heatmap and lesion markers, as the slice views show them) and ``3d.png`` (the segmentation's
closed surfaces and the lesions, as the 3D view shows them), from a result folder, a saved ``.mrml`` scene, or a
live scene. Slices use plain VTK pipelines (``vtkImageReslice`` + lookup tables + ``vtkImageBlend``); the 3D view
is a ``vtkRenderer`` in an offscreen EGL window (Mesa llvmpipe on machines without a GPU: set
``VTK_DEFAULT_OPENGL_WINDOW=vtkEGLRenderWindow``, done here unless already set).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .labels import load_label_table
from .volume import Volume

os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")

CT_WINDOW = (-350.0, 1150.0)  # the preview's window: soft tissue dim, bone clear
SEGMENT_OPACITY = 0.5  # Slicer's default 2D fill opacity
HEATMAP_THRESHOLD = 0.3
HEATMAP_OPACITY = 0.6
SLICE_SIZE = 512  # longest side of a slice picture, in pixels
HEADER_PIXELS = 18  # a strip above each slice for its title
VIEW_SIZE = (640, 640)

# Plane axes in RAS for the picture's x (to the right) and y (upwards): radiological convention as in Slicer
# (patient right on the image left; anterior up in axial; anterior on the left in sagittal; superior up).
PLANES = {
    "axial": (np.array([-1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0])),
    "sagittal": (np.array([0.0, -1.0, 0.0]), np.array([0.0, 0.0, 1.0])),
    "coronal": (np.array([-1.0, 0.0, 0.0]), np.array([0.0, 0.0, 1.0])),
}
EDGE_LETTERS = {  # (left, right, top, bottom) of each picture
    "axial": ("R", "L", "A", "P"),
    "sagittal": ("A", "P", "S", "I"),
    "coronal": ("R", "L", "S", "I"),
}


@dataclass
class ViewData:
    """What the views show: the CT, labels and heatmap on the CT grid, lesions, and 3D surfaces (optional)."""

    ct: Volume
    labels: Volume | None = None
    heatmap: Volume | None = None
    lesions: list = field(default_factory=list)
    surfaces: dict = field(default_factory=dict)  # segment name -> (vtkPolyData in RAS, rgb 0-1)
    title: str = ""


# --- entry point -----------------------------------------------------------------------------------------------
def render_scene_views(source, out_png_dir: str | Path, ct=None, point=None, size: int = SLICE_SIZE,
                       views=("axial", "sagittal", "coronal", "3d")) -> dict[str, Path]:
    """Render the module's views of ``source`` as PNGs into ``out_png_dir``; returns {view name: png path}.

    ``source``: a ``spineseg segment`` output folder (then ``ct`` is the CT it was made from: a path or a
    :class:`Volume`; without it the path recorded in report.json is tried), a ``.mrml`` file, a scene
    (``vtkMRMLScene``) or a :class:`~SpineSegLib.scene.SceneContext` holding a SpineSeg result.
    ``point``: RAS point the slices go through (default: the top-scoring lesion, else the spine's centre).
    """
    data = load_view_data(source, ct)
    out_dir = Path(out_png_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    point = np.asarray(point, dtype=float) if point is not None else default_point(data)
    written = {}
    for name in views:
        path = out_dir / f"{name}.png"
        if name == "3d":
            render_3d(data, path)
        else:
            render_slice(data, name, point, path, size=size)
        written[name] = path
    return written


def load_view_data(source, ct=None) -> ViewData:
    from . import scene as _scene

    if isinstance(source, (str, Path)):
        path = Path(source)
        if path.is_dir():
            return _from_result_folder(path, ct)
        if path.suffix.lower() == ".mrml":
            context = _scene.load_scene(path)
            try:
                return _from_scene(context.scene)
            finally:
                _scene.release_scene(context)
        raise FileNotFoundError(f"{path}: give a SpineSeg result folder, a .mrml scene or a scene")
    if isinstance(source, _scene.SceneContext):
        return _from_scene(source.scene)
    if hasattr(source, "GetNodesByClass"):
        return _from_scene(source)
    raise TypeError(f"cannot render views of {type(source).__name__}")


def _from_result_folder(folder: Path, ct) -> ViewData:
    from . import scene as _scene
    from .io import read_volume
    from .results import load_results

    result = load_results(folder)
    if ct is None:
        recorded = (result.report.get("input") or {}).get("path") if isinstance(result.report.get("input"),
                                                                                dict) else None
        if not recorded or not Path(recorded).exists():
            raise FileNotFoundError(f"{folder}: give the CT the result was made from (ct=...)")
        ct = recorded
    ct_volume = ct if isinstance(ct, Volume) else read_volume(ct)
    context = _scene.create_scene(views=False)
    try:
        input_node = _scene.volume_to_node(context.scene, ct_volume, "CT")
        nodes = _scene.add_result_to_scene(context.scene, result, input_node, show=False, show_3d=True)
        surfaces = _surfaces(nodes.segmentation)
    finally:
        _scene.release_scene(context)
    return ViewData(ct_volume, result.labels, result.heatmap, result.lesions, surfaces,
                    _title(result.vertebrae, result.lesions))


def _from_scene(scene) -> ViewData:
    from . import scene as _scene

    results = _scene.find_results(scene)
    if not results:
        raise ValueError("the scene holds no SpineSeg result")
    nodes = results[-1]
    input_id = nodes.segmentation.GetNodeReferenceID(_scene.INPUT_REFERENCE_ROLE) \
        or nodes.segmentation.GetAttribute(_scene.ATTR_INPUT)
    input_node = scene.GetNodeByID(input_id) if input_id else None
    if input_node is None:
        raise ValueError("the input volume of the SpineSeg result is not in the scene")
    ct = _scene.node_to_volume(input_node, dtype=np.float32)
    labels = _scene.segmentation_to_labels(nodes.segmentation, input_node)
    heatmap = _scene.node_to_volume(nodes.heatmap, dtype=np.float32) if nodes.heatmap is not None else None
    lesions = _scene.lesion_rows(nodes.lesions) if nodes.lesions is not None else []
    for lesion in lesions:
        lesion["center_ras"] = lesion.get("position_ras", lesion.get("center_ras"))
    _scene.set_segmentation_3d_visible(nodes.segmentation, True)
    vertebrae = _scene.vertebra_rows(nodes.table) if nodes.table is not None else []
    return ViewData(ct, labels, heatmap, lesions, _surfaces(nodes.segmentation), _title(vertebrae, lesions))


def _title(vertebrae, lesions) -> str:
    names = [v["name"] for v in vertebrae]
    span = f" ({names[0]}-{names[-1]})" if names else ""
    return f"SpineSeg: {len(names)} vertebrae{span}, {len(lesions)} lesions"


def _surfaces(segmentation_node) -> dict:
    import vtk

    segmentation_node.CreateClosedSurfaceRepresentation()
    segmentation = segmentation_node.GetSegmentation()
    surfaces = {}
    for index in range(segmentation.GetNumberOfSegments()):
        segment_id = segmentation.GetNthSegmentID(index)
        polydata = vtk.vtkPolyData()
        segmentation_node.GetClosedSurfaceRepresentation(segment_id, polydata)
        if polydata.GetNumberOfPoints():
            copy = vtk.vtkPolyData()
            copy.DeepCopy(polydata)
            surfaces[segmentation.GetNthSegment(index).GetName()] = (copy, segmentation.GetNthSegment(index).GetColor())
    return surfaces


def default_point(data: ViewData) -> np.ndarray:
    """The spine's centre (x, y), at the height of the top-scoring lesion if any."""
    if data.labels is not None and np.any(data.labels.array):
        ijk = np.argwhere(np.asarray(data.labels.array) > 0).mean(axis=0)
        point = data.labels.voxel_to_ras(ijk)[0]
    else:
        point = data.ct.voxel_to_ras((np.asarray(data.ct.shape) - 1) / 2.0)[0]
    if data.lesions:
        top = max(data.lesions, key=lambda les: float(les.get("score", 0)))
        point = point.copy()
        point[2] = float(top["center_ras"][2])
    return point


# --- slices ----------------------------------------------------------------------------------------------------
def _vtk_image(volume: Volume, dtype):
    """Index-space vtkImageData (origin 0, spacing 1) of a Volume; the affine goes into the reslice matrix."""
    import vtk
    from vtk.util import numpy_support

    array = np.asarray(volume.array, dtype=dtype)
    image = vtk.vtkImageData()
    image.SetDimensions(*array.shape)
    scalars = numpy_support.numpy_to_vtk(array.ravel(order="F"), deep=True,
                                         array_type=numpy_support.get_vtk_array_type(array.dtype))
    image.GetPointData().SetScalars(scalars)
    return image


def _plane_geometry(ct: Volume, plane: str, point, size: int):
    """Pixel spacing, width, height and the 4x4 picture (u, v) -> RAS matrix of a view through ``point``."""
    u_axis, v_axis = PLANES[plane]
    corners = ct.voxel_to_ras(np.array([[i, j, k] for i in (0, ct.shape[0] - 1) for j in (0, ct.shape[1] - 1)
                                        for k in (0, ct.shape[2] - 1)], dtype=float))
    u_extent = corners @ u_axis
    v_extent = corners @ v_axis
    width_mm, height_mm = np.ptp(u_extent), np.ptp(v_extent)
    spacing = max(width_mm, height_mm) / float(size - 1)
    width = int(round(width_mm / spacing)) + 1
    height = int(round(height_mm / spacing)) + 1
    normal = np.cross(u_axis, v_axis)
    origin = u_axis * u_extent.min() + v_axis * v_extent.min() + normal * float(np.dot(point, normal))
    matrix = np.eye(4)
    matrix[:3, 0] = u_axis * spacing
    matrix[:3, 1] = v_axis * spacing
    matrix[:3, 2] = normal
    matrix[:3, 3] = origin
    return spacing, width, height, matrix


def _reslice(volume: Volume, picture_to_ras: np.ndarray, width: int, height: int, dtype, nearest: bool):
    import vtk

    reslice = vtk.vtkImageReslice()
    reslice.SetInputData(_vtk_image(volume, dtype))
    matrix = vtk.vtkMatrix4x4()
    picture_to_index = np.linalg.inv(volume.affine) @ picture_to_ras
    for r in range(4):
        for c in range(4):
            matrix.SetElement(r, c, float(picture_to_index[r, c]))
    reslice.SetResliceAxes(matrix)
    reslice.SetOutputOrigin(0, 0, 0)
    reslice.SetOutputSpacing(1, 1, 1)
    reslice.SetOutputExtent(0, width - 1, 0, height - 1, 0, 0)
    reslice.SetOutputDimensionality(2)
    reslice.SetBackgroundLevel(-1024.0 if not nearest else 0.0)
    if nearest:
        reslice.SetInterpolationModeToNearestNeighbor()
    else:
        reslice.SetInterpolationModeToLinear()
    reslice.Update()
    return reslice


def _grey_lut():
    import vtk

    lut = vtk.vtkLookupTable()
    lut.SetRange(*CT_WINDOW)
    lut.SetValueRange(0.0, 1.0)
    lut.SetSaturationRange(0.0, 0.0)
    lut.SetRampToLinear()
    lut.Build()
    return lut


def _label_lut():
    import vtk

    lut = vtk.vtkLookupTable()
    lut.SetNumberOfTableValues(256)
    lut.SetRange(0, 255)
    for value in range(256):
        lut.SetTableValue(value, 0.0, 0.0, 0.0, 0.0)
    for label in load_label_table():
        r, g, b = label.color_float
        lut.SetTableValue(label.value, r, g, b, 1.0)
    lut.Build()
    return lut


def _heat_lut(threshold: float):
    """Black-red-yellow-white like PET-Heat, transparent below ``threshold``."""
    import vtk

    lut = vtk.vtkLookupTable()
    lut.SetNumberOfTableValues(256)
    lut.SetRange(0.0, 1.0)
    for i in range(256):
        t = i / 255.0
        alpha = 0.0 if t < threshold else 1.0
        lut.SetTableValue(i, min(1.0, 3 * t), min(1.0, max(0.0, 3 * t - 1)), min(1.0, max(0.0, 3 * t - 2)), alpha)
    lut.Build()
    return lut


def _colours(reslice, lut):
    import vtk

    mapper = vtk.vtkImageMapToColors()
    mapper.SetInputConnection(reslice.GetOutputPort())
    mapper.SetLookupTable(lut)
    mapper.SetOutputFormatToRGBA()
    mapper.Update()
    return mapper


def render_slice_image(data: ViewData, plane: str, point, size: int = SLICE_SIZE):
    """The composed RGB slice as a numpy array (height, width, 3), top row first; and its geometry."""
    import vtk
    from vtk.util import numpy_support

    spacing, width, height, picture_to_ras = _plane_geometry(data.ct, plane, point, size)
    blend = vtk.vtkImageBlend()
    keep = []  # the pipeline does not own its upstream algorithms: keep them alive until Update()

    def add_layer(volume, dtype, nearest, lut, opacity):
        reslice = _reslice(volume, picture_to_ras, width, height, dtype, nearest)
        colours = _colours(reslice, lut)
        keep.extend((reslice, colours))
        blend.AddInputConnection(colours.GetOutputPort())
        blend.SetOpacity(blend.GetNumberOfInputConnections(0) - 1, opacity)
        return reslice

    add_layer(data.ct, np.float32, False, _grey_lut(), 1.0)
    label_reslice = None
    if data.labels is not None:
        label_reslice = add_layer(data.labels, np.uint8, True, _label_lut(), SEGMENT_OPACITY)
    if data.heatmap is not None:
        add_layer(data.heatmap, np.float32, False, _heat_lut(HEATMAP_THRESHOLD), HEATMAP_OPACITY)
    blend.Update()
    image = blend.GetOutput()
    components = image.GetNumberOfScalarComponents()
    rgb = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(height, width, components)[..., :3]
    rgb = np.ascontiguousarray(rgb[::-1])  # VTK's first row is the bottom one
    if label_reslice is not None:
        scalars = label_reslice.GetOutput().GetPointData().GetScalars()
        labels = numpy_support.vtk_to_numpy(scalars).reshape(height, width)
        rgb = _outline(rgb, np.ascontiguousarray(labels[::-1]))
    return rgb, (spacing, width, height, picture_to_ras)


def _outline(rgb: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Segment outlines at full opacity over the fill, as Slicer draws segmentations in slice views."""
    table = load_label_table()
    colours = np.zeros((256, 3), dtype=np.uint8)
    for label in table:
        colours[label.value] = label.color
    edge = np.zeros(labels.shape, dtype=bool)
    edge[1:, :] |= labels[1:, :] != labels[:-1, :]
    edge[:-1, :] |= labels[1:, :] != labels[:-1, :]
    edge[:, 1:] |= labels[:, 1:] != labels[:, :-1]
    edge[:, :-1] |= labels[:, 1:] != labels[:, :-1]
    edge &= labels > 0
    out = rgb.copy()
    out[edge] = colours[labels[edge]]
    return out


def render_slice(data: ViewData, plane: str, point, path: str | Path, size: int = SLICE_SIZE) -> Path:
    from PIL import Image, ImageDraw

    rgb, (spacing, width, height, picture_to_ras) = render_slice_image(data, plane, point, size)
    image = Image.fromarray(rgb, "RGB")
    draw = ImageDraw.Draw(image)
    ras_to_picture = np.linalg.inv(picture_to_ras)
    for lesion in data.lesions:
        centre = np.append(np.asarray(lesion["center_ras"], dtype=float), 1.0)
        u, v, depth, _ = ras_to_picture @ centre
        radius_mm = max(float(lesion.get("size_mm") or 8.0) / 2.0, 4.0)
        if abs(depth) > radius_mm:
            continue  # the lesion does not cross this slice
        x, y = u, height - 1 - v
        r = radius_mm / spacing + 3
        draw.ellipse([x - r, y - r, x + r, y + r], outline=(255, 64, 64), width=2)
        from .scene import lesion_label

        draw.text((x + r + 3, y - 6), lesion_label(lesion), fill=(255, 255, 160))
    left, right, top, bottom = EDGE_LETTERS[plane]
    draw.text((4, height // 2 - 6), left, fill=(255, 255, 0))
    draw.text((width - 12, height // 2 - 6), right, fill=(255, 255, 0))
    draw.text((width // 2 - 3, 2), top, fill=(255, 255, 0))
    draw.text((width // 2 - 3, height - 14), bottom, fill=(255, 255, 0))
    framed = Image.new("RGB", (width, height + HEADER_PIXELS), (24, 24, 24))
    framed.paste(image, (0, HEADER_PIXELS))
    ImageDraw.Draw(framed).text((4, 3), f"{plane.capitalize()}  {data.title}".strip(), fill=(230, 230, 230))
    image = framed
    path = Path(path)
    image.save(path)
    return path


# --- 3D --------------------------------------------------------------------------------------------------------
def render_3d(data: ViewData, path: str | Path, size=VIEW_SIZE) -> Path:
    """Closed surfaces (segment colours) and lesion spheres, seen from the front-left, like Slicer's 3D view."""
    import vtk

    renderer = vtk.vtkRenderer()
    renderer.GradientBackgroundOn()
    renderer.SetBackground(0.76, 0.76, 0.87)  # Slicer's default 3D background
    renderer.SetBackground2(0.32, 0.34, 0.43)
    for polydata, colour in data.surfaces.values():
        normals = vtk.vtkPolyDataNormals()
        normals.SetInputData(polydata)
        normals.ConsistencyOn()
        mapper = vtk.vtkPolyDataMapper()
        mapper.SetInputConnection(normals.GetOutputPort())
        mapper.ScalarVisibilityOff()
        actor = vtk.vtkActor()
        actor.SetMapper(mapper)
        actor.GetProperty().SetColor(*colour)
        actor.GetProperty().SetSpecular(0.2)
        actor.GetProperty().SetSpecularPower(20)
        renderer.AddActor(actor)
    overlay = vtk.vtkRenderer()  # lesions on a layer above the surfaces: visible even inside a vertebra
    overlay.SetLayer(1)
    overlay.InteractiveOff()
    for lesion in data.lesions:
        sphere = vtk.vtkSphereSource()
        sphere.SetCenter(*[float(c) for c in lesion["center_ras"]])
        sphere.SetRadius(max(float(lesion.get("size_mm") or 8.0) / 2.0, 3.0))
        sphere.SetThetaResolution(24)
        sphere.SetPhiResolution(24)
        mapper = vtk.vtkPolyDataMapper()
        mapper.SetInputConnection(sphere.GetOutputPort())
        actor = vtk.vtkActor()
        actor.SetMapper(mapper)
        actor.GetProperty().SetColor(1.0, 0.15, 0.15)
        overlay.AddActor(actor)
    if not data.surfaces and not data.lesions:
        _add_ct_outline(renderer, data.ct)
    window = vtk.vtkRenderWindow()
    window.SetOffScreenRendering(1)
    window.SetSize(*size)
    window.SetNumberOfLayers(2)
    window.AddRenderer(renderer)
    window.AddRenderer(overlay)
    camera = renderer.GetActiveCamera()
    overlay.SetActiveCamera(camera)
    renderer.ResetCamera()
    focal = np.array(camera.GetFocalPoint())
    distance = camera.GetDistance()
    direction = np.array([-0.55, 1.0, 0.15])  # from the patient's front-left, slightly above
    direction /= np.linalg.norm(direction)
    camera.SetPosition(*(focal + direction * distance))
    camera.SetViewUp(0, 0, 1)
    renderer.ResetCamera()
    camera.Zoom(1.15)
    renderer.ResetCameraClippingRange()
    window.Render()
    grabber = vtk.vtkWindowToImageFilter()
    grabber.SetInput(window)
    grabber.ReadFrontBufferOff()
    grabber.Update()
    writer = vtk.vtkPNGWriter()
    writer.SetFileName(str(path))
    writer.SetInputConnection(grabber.GetOutputPort())
    writer.Write()
    window.Finalize()
    return Path(path)


def _add_ct_outline(renderer, ct: Volume) -> None:
    import vtk

    corners = ct.voxel_to_ras(np.array([[0, 0, 0], np.asarray(ct.shape) - 1], dtype=float))
    cube = vtk.vtkOutlineSource()
    cube.SetBounds(*[v for axis in range(3) for v in sorted(corners[:, axis])])
    mapper = vtk.vtkPolyDataMapper()
    mapper.SetInputConnection(cube.GetOutputPort())
    actor = vtk.vtkActor()
    actor.SetMapper(mapper)
    renderer.AddActor(actor)


def add_render_command(commands) -> None:
    """Register ``spineseg render SOURCE -o OUT [--ct CT] [--size N]`` on the CLI's subparsers (``cli.main`` calls
    ``args.run(args, reporter, cancel)`` and reports the returned folder)."""
    parser = commands.add_parser("render", help="pictures of a result as the Slicer module shows it (PNG)")
    _render_arguments(parser)
    parser.set_defaults(run=_run_render_command)


def _render_arguments(parser) -> None:
    parser.add_argument("source", help="a spineseg segment output folder or a .mrml scene")
    parser.add_argument("-o", "--output", required=True, help="folder for the PNGs")
    parser.add_argument("--ct", default=None, help="the CT a result folder was made from")
    parser.add_argument("--size", type=int, default=SLICE_SIZE, help="longest side of a slice picture (pixels)")
    parser.add_argument("--json-progress", action="store_true", help="print JSON progress lines")


def _run_render_command(args, reporter, cancel) -> Path:
    reporter(0.0, "loading")
    render_scene_views(args.source, args.output, ct=args.ct, size=args.size)
    cancel.raise_if_cancelled()
    reporter(1.0, "done")
    return Path(args.output)


def main(argv=None) -> int:
    """``python -m SpineSegLib.render RESULT_DIR_OR_MRML -o OUT [--ct CT]``."""
    import argparse

    parser = argparse.ArgumentParser(prog="spineseg render", description=main.__doc__)
    _render_arguments(parser)
    args = parser.parse_args(argv)
    written = render_scene_views(args.source, args.output, ct=args.ct, size=args.size)
    print(json.dumps({name: str(path) for name, path in written.items()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
