"""What the session's views show: the CT in the slice views, the heatmap over it, jumping to a point, and the
point where the three slice views cross (where a split plane or a new lesion goes)."""

from __future__ import annotations

import numpy as np

from .. import scene as _scene

CT_WINDOW = (1500.0, 300.0)  # window, level: bone clear, soft tissue visible
QUAD_LAYOUT = "Quad View"


def show_ct(slicer_app, node) -> None:
    display = node.GetDisplayNode()
    if display is None:
        node.CreateDefaultDisplayNodes()
        display = node.GetDisplayNode()
    display.SetAutoWindowLevel(False)
    display.SetWindowLevel(*CT_WINDOW)
    manager = slicer_app.display_manager
    manager.show_volume_in_slice_background(node)
    manager.show_volume_in_slice_foreground(None)
    manager.reset_views()


def show_heatmap(slicer_app, heatmap_node, opacity: float) -> None:
    slicer_app.display_manager.show_volume_in_slice_foreground(heatmap_node)
    _scene.set_heatmap_opacity(slicer_app.scene, opacity, heatmap_node)


def reset_3d(slicer_app) -> None:
    """Point the 3D views' cameras at what they show now (the vertebra surfaces)."""
    for view in slicer_app.view_manager.get_threed_views():
        view.reset_view()


def slice_nodes(scene) -> list:
    return [scene.GetNthNodeByClass(i, "vtkMRMLSliceNode") for i in range(scene.GetNumberOfNodesByClass(
        "vtkMRMLSliceNode"))]


def slice_crossing(scene) -> list[float]:
    """The RAS point where the slice views' planes cross (least squares over the views shown)."""
    import vtk

    normals, offsets = [], []
    for node in slice_nodes(scene):
        matrix = vtk.vtkMatrix4x4()
        matrix.DeepCopy(node.GetSliceToRAS())
        normal = np.array([matrix.GetElement(r, 2) for r in range(3)])
        origin = np.array([matrix.GetElement(r, 3) for r in range(3)])
        if np.linalg.norm(normal) < 1e-9:
            continue
        normal /= np.linalg.norm(normal)
        normals.append(normal)
        offsets.append(float(normal @ origin))
    if not normals:
        return [0.0, 0.0, 0.0]
    point, *_ = np.linalg.lstsq(np.array(normals), np.array(offsets), rcond=None)
    return [round(float(c), 2) for c in point]


def jump_to(scene, ras) -> None:
    x, y, z = (float(c) for c in ras)
    for node in slice_nodes(scene):
        node.JumpSliceByCentering(x, y, z)
