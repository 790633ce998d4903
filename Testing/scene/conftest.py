"""Fixtures for the Slicer-side tests: a scene with the module logics attached the way Slicer does, a small
phantom, a result built from the phantom's truth (no network needed), and the model used by real runs.
"""

import os
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("slicer", reason="needs slicer-core (pip install 'trame-slicer[standalone]')")

MODULE_DIR = Path(__file__).resolve().parents[2] / "SpineSegModule"
if str(MODULE_DIR) not in sys.path:
    sys.path.insert(0, str(MODULE_DIR))

HERE = Path(__file__).resolve().parent
FAKE_CLI = HERE / "fake_cli.py"
PHANTOM = {"seed": 3, "region": "lumbar", "shape": (64, 64, 96), "spacing": (2.0, 2.0, 2.0), "lesions": 2}


@pytest.fixture
def slicer_context():
    """A fresh scene with application, colour, subject hierarchy, volumes, segmentations, markups and tables
    logics and the Red/Yellow/Green slice views, as the Slicer application sets them up."""
    from SpineSegLib import scene

    context = scene.create_scene()
    yield context
    scene.release_scene(context)


@pytest.fixture
def slicer_scene(slicer_context):
    return slicer_context.scene


@pytest.fixture(scope="session")
def phantom():
    from SpineSegLib.phantom import PhantomConfig, generate_phantom

    return generate_phantom(PhantomConfig(**PHANTOM))


@pytest.fixture(scope="session")
def phantom_files(phantom, tmp_path_factory):
    """The phantom CT written as NIfTI (an input for the command line)."""
    from SpineSegLib.io import write_nifti

    folder = tmp_path_factory.mktemp("phantom")
    write_nifti(phantom.ct, folder / "ct.nii.gz", dtype=np.int16)
    return folder


def truth_result(phantom):
    """A SegmentationResult made from the phantom's truth: exact labels, a Gaussian heatmap at each lesion."""
    from SpineSegLib.results import SegmentationResult, vertebra_summary
    from SpineSegLib.volume import Volume

    ct = phantom.ct
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in ct.shape], indexing="ij"), axis=-1).astype(np.float32)
    heat = np.zeros(ct.shape, dtype=np.float32)
    lesions = []
    for index, lesion in enumerate(phantom.lesions, start=1):
        centre = ct.ras_to_voxel(lesion["center_ras"])[0]
        sigma = max(float(lesion.get("size_mm") or 8.0) / 2.0, 3.0) / float(np.mean(ct.spacing))
        heat = np.maximum(heat, np.exp(-((grid - centre) ** 2).sum(-1) / (2 * sigma**2)).astype(np.float32))
        lesions.append({**lesion, "id": index, "score": round(0.95 - 0.1 * index, 2)})
    if not lesions:  # the phantom drew none: put one in the middle vertebra so markups are exercised
        values = [v for v in np.unique(phantom.labels.array) if v]
        value = int(values[len(values) // 2])
        centre = np.argwhere(phantom.labels.array == value).mean(axis=0)
        from SpineSegLib.labels import load_label_table

        name = load_label_table().by_value(value).name
        lesions.append({"id": 1, "class": "fracture", "score": 0.92, "center_ras": ct.voxel_to_ras(centre)[0].tolist(),
                        "size_mm": 10.0, "vertebra": name, "vertebra_label": value})
        heat = np.exp(-((grid - centre) ** 2).sum(-1) / (2 * 3.0**2)).astype(np.float32)
    labels = Volume(np.asarray(phantom.labels.array, dtype=np.uint8), phantom.labels.affine)
    return SegmentationResult(labels, Volume(heat, ct.affine), lesions, vertebra_summary(labels, lesions),
                              {"model": {"name": "phantom truth"}})


@pytest.fixture(scope="session")
def truth(phantom):
    return truth_result(phantom)


@pytest.fixture
def input_node(slicer_scene, phantom):
    from SpineSegLib import scene

    node = scene.volume_to_node(slicer_scene, phantom.ct, "CT", show=True)
    sh = slicer_scene.GetSubjectHierarchyNode()
    patient = sh.CreateSubjectItem(sh.GetSceneItemID(), "patient")
    study = sh.CreateStudyItem(patient, "study")
    sh.SetItemParent(sh.GetItemByDataNode(node) or sh.CreateItem(study, node), study)
    return node


def _bundled_model():
    from SpineSegLib.resources import default_model_path

    path = default_model_path()
    return path if (path / "model_card.json").is_file() else None


@pytest.fixture(scope="session")
def model_path(tmp_path_factory):
    """$SPINESEG_TEST_MODEL, else the bundled model; while neither exists, a tiny random checkpoint stands in."""
    if os.environ.get("SPINESEG_TEST_MODEL"):
        return Path(os.environ["SPINESEG_TEST_MODEL"])
    bundled = _bundled_model()
    if bundled is not None:
        return bundled
    import torch

    from SpineSegLib.checkpoint import save_checkpoint
    from SpineSegLib.labels import load_label_table
    from SpineSegLib.networks import build_network

    table = load_label_table()
    torch.manual_seed(0)
    args = {"channels": [4, 8, 16], "num_res_units": 0}
    network = build_network("unet3d", 1, table.num_classes, len(table.lesion_classes), **args)
    card = {"name": "tiny stand-in", "architecture": {"id": "unet3d", "args": args},
            "preprocessing": {"intensity_window": [-1000, 1000],
                              "stages": {"coarse": {"spacing": [4, 4, 4], "patch_size": [32, 32, 32]},
                                         "fine": {"spacing": [2, 2, 2], "patch_size": [32, 32, 32]}}}}
    return save_checkpoint(network, card, tmp_path_factory.mktemp("model") / "tiny")


@pytest.fixture(scope="session")
def uses_bundled_model(model_path):
    return _bundled_model() is not None and Path(model_path) == _bundled_model()


@pytest.fixture(scope="session")
def trained_model(model_path, uses_bundled_model):
    """Whether ``model_path`` is a trained model (bundled or $SPINESEG_TEST_MODEL), not the random stand-in."""
    return uses_bundled_model or bool(os.environ.get("SPINESEG_TEST_MODEL"))


@pytest.fixture(scope="session")
def cli_run(phantom_files, model_path, tmp_path_factory):
    """One real out-of-process run of the CLI (fast mode) on the phantom, shared by the tests that need one."""
    from SpineSegLib import process

    out = tmp_path_factory.mktemp("cli") / "result"
    progress = []
    runner = process.ProcessRunner.for_segmentation(phantom_files / "ct.nii.gz", out, model=model_path,
                                                    device="cpu", fast=True,
                                                    on_progress=lambda f, s: progress.append((f, s)))
    runner.start()
    state = runner.wait(timeout=300)
    assert state == process.DONE, f"{state}: {runner.message}"
    return runner, progress
