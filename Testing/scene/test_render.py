"""Offscreen pictures of what the module shows: slices with segment colours and heatmap, and the 3D view."""

import json

import numpy as np
import pytest
from PIL import Image

from SpineSegLib import render, scene
from SpineSegLib.labels import load_label_table

pytestmark = pytest.mark.slicer

VIEWS = ("axial", "sagittal", "coronal", "3d")


def _rgb(path):
    return np.asarray(Image.open(path).convert("RGB"))


def _has_colour(image, colour, tolerance=0):
    return bool(np.any(np.all(np.abs(image.astype(int) - np.asarray(colour)) <= tolerance, axis=-1)))


def test_views_of_a_scene(slicer_context, input_node, truth, tmp_path):
    scene.add_result_to_scene(slicer_context.scene, truth, input_node)
    written = render.render_scene_views(slicer_context, tmp_path / "views")
    assert sorted(written) == sorted(VIEWS)
    assert all(written[name] == tmp_path / "views" / f"{name}.png" and written[name].is_file() for name in VIEWS)
    table = load_label_table()

    sagittal = _rgb(written["sagittal"])
    assert max(sagittal.shape[:2]) == render.SLICE_SIZE + render.HEADER_PIXELS or \
        max(sagittal.shape[:2]) == render.SLICE_SIZE
    for name in ("L2", "L3", "L4"):  # outlines are drawn in the exact segment colour
        assert _has_colour(sagittal, table.by_name(name).color), name

    # the axial view goes through the top lesion: heatmap reds and the lesion marker are there
    axial = _rgb(written["axial"])
    reds = (axial[..., 0] > 180) & (axial[..., 1] < 120) & (axial[..., 2] < 120)
    assert reds.sum() > 20

    view3d = _rgb(written["3d"])
    assert view3d.shape == (render.VIEW_SIZE[1], render.VIEW_SIZE[0], 3)
    colours = {tuple(c) for c in view3d.reshape(-1, 3)[::7]}
    assert len(colours) > 500  # shaded surfaces, not an empty background
    # segment hues are visible: some pixel close to the sacrum's colour (lit, so allow a wide tolerance)
    assert _has_colour(view3d, table.by_name("sacrum").color, tolerance=60)


def test_radiological_orientation_of_the_axial_view(slicer_context, phantom, tmp_path):
    """Patient right (+x in RAS) is on the picture's left; anterior (+y) is up."""
    from SpineSegLib.volume import Volume

    array = np.full((40, 40, 20), -1000, np.int16)
    array[30:38, 16:24, :] = 1500  # a bright bar on the patient's right side (high i = +x in RAS here)
    array[16:24, 30:38, :] = 600  # a dimmer bar anterior (high j = +y)
    ct = Volume(array, np.eye(4))
    data = render.ViewData(ct)
    image, _ = render.render_slice_image(data, "axial", [20, 20, 10], size=200)
    grey = image[..., 0].astype(int)
    height, width = grey.shape
    right_bar = grey[:, : width // 4].max()  # left quarter of the picture
    front_bar = grey[: height // 4, :].max()  # top quarter
    assert right_bar > 200 and front_bar > 100
    assert grey[:, 3 * width // 4:].max() < 50 and grey[3 * height // 4:, :].max() < 50


@pytest.mark.slow
def test_views_of_a_result_folder_and_a_saved_scene(cli_run, phantom, phantom_files, tmp_path, slicer_context,
                                                    input_node, truth):
    runner, _ = cli_run
    written = render.render_scene_views(runner.output, tmp_path / "from-folder", ct=phantom_files / "ct.nii.gz")
    assert all(path.is_file() and path.stat().st_size > 1000 for path in written.values())
    with pytest.raises(FileNotFoundError, match="give the CT"):
        render.render_scene_views(runner.output, tmp_path / "nope")

    scene.add_result_to_scene(slicer_context.scene, truth, input_node)
    mrml = scene.save_scene(slicer_context.scene, tmp_path / "saved" / "scene.mrml")
    assert render.main([str(mrml), "-o", str(tmp_path / "from-mrml"), "--size", "256"]) == 0
    axial = _rgb(tmp_path / "from-mrml" / "axial.png")
    assert max(axial.shape[:2]) <= 256 + render.HEADER_PIXELS
    assert sorted(p.name for p in (tmp_path / "from-mrml").iterdir()) == sorted(f"{v}.png" for v in VIEWS)


def test_a_scene_without_results_is_an_error(slicer_scene):
    with pytest.raises(ValueError, match="no SpineSeg result"):
        render.load_view_data(slicer_scene)
    assert json.dumps(render.PLANES["axial"][0].tolist())


def test_render_command_plugs_into_the_cli_parser(slicer_context, input_node, truth, tmp_path):
    import argparse

    from SpineSegLib.progress import CancelToken

    scene.add_result_to_scene(slicer_context.scene, truth, input_node)
    mrml = scene.save_scene(slicer_context.scene, tmp_path / "s" / "scene.mrml")
    parser = argparse.ArgumentParser()
    render.add_render_command(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["render", str(mrml), "-o", str(tmp_path / "png"), "--size", "128", "--json-progress"])
    reported = []
    assert args.run(args, lambda f, s: reported.append(f), CancelToken()) == tmp_path / "png"
    assert reported == [0.0, 1.0] and (tmp_path / "png" / "3d.png").is_file()
