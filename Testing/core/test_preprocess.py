"""Preprocessing round trips: orientation is exactly invertible and resampling keeps world positions."""

import numpy as np
from hypothesis import example, given, settings
from hypothesis import strategies as st
from scipy.spatial.transform import Rotation

from SpineSegLib.inference import project_labels, project_linear
from SpineSegLib.preprocess import Orientation, normalize_intensity, prepare, resample_array, resampled_grid
from SpineSegLib.volume import Volume


@st.composite
def affines(draw):
    """Random voxel-to-RAS matrices: RAS, LPS, axis permutations and oblique rotations, anisotropic spacing."""
    spacing = np.array([draw(st.floats(0.5, 3.0)) for _ in range(3)])
    kind = draw(st.sampled_from(["RAS", "LPS", "permuted", "oblique"]))
    if kind == "RAS":
        rotation = np.eye(3)
    elif kind == "LPS":
        rotation = np.diag([-1.0, -1.0, 1.0])
    elif kind == "permuted":
        rotation = np.eye(3)[list(draw(st.permutations([0, 1, 2])))] * np.array(
            [draw(st.sampled_from([-1.0, 1.0])) for _ in range(3)])
    else:
        angles = [draw(st.floats(-20, 20)) for _ in range(3)]
        rotation = Rotation.from_euler("xyz", angles, degrees=True).as_matrix()
    affine = np.eye(4)
    affine[:3, :3] = rotation * spacing
    affine[:3, 3] = [draw(st.floats(-200, 200)) for _ in range(3)]
    return affine


@settings(max_examples=40, deadline=None)
@given(affine=affines(), seed=st.integers(0, 1000))
def test_orientation_round_trip_is_exact_and_keeps_world_positions(affine, seed):
    rng = np.random.default_rng(seed)
    array = rng.normal(size=(7, 9, 11)).astype(np.float32)
    volume = Volume(array, affine)
    orientation = Orientation.of(volume)
    canonical = orientation.canonical(volume)
    assert np.array_equal(orientation.from_canonical(canonical.array), array)
    # The same voxel sits at the same RAS point in both.
    ijk = np.array([2, 5, 8])
    found = np.round(canonical.ras_to_voxel(volume.voxel_to_ras(ijk))[0]).astype(int)
    assert canonical.array[tuple(found)] == array[tuple(ijk)]
    # Canonical axes point to R, A and S (positive diagonal dominates each column).
    directions = canonical.affine[:3, :3]
    assert all(directions[axis, axis] > 0 for axis in range(3))


@settings(max_examples=25, deadline=None)
@given(affine=affines(), target=st.floats(0.8, 3.0))
def test_resampled_grid_covers_the_same_extent(affine, target):
    shape = (20, 24, 30)
    new_shape, new_affine = resampled_grid(shape, affine, (target,) * 3)
    # The outer edges (half a voxel beyond the corner centres) coincide.
    old_corner = affine @ np.array([-0.5, -0.5, -0.5, 1.0])
    new_corner = new_affine @ np.array([-0.5, -0.5, -0.5, 1.0])
    assert np.allclose(old_corner, new_corner, atol=1e-6)
    old_far = affine @ np.array([*(np.array(shape) - 0.5), 1.0])
    new_far = new_affine @ np.array([*(np.array(new_shape) - 0.5), 1.0])
    assert np.allclose(old_far, new_far, atol=1e-6)


@settings(max_examples=25, deadline=None)
@given(affine=affines(), target=st.floats(1.0, 2.5))
@example(affine=np.diag([1.25, 0.5, 1.0, 1.0]), target=2.125)  # 4x down-sampling of a thin axis
def test_labels_and_heatmap_return_to_the_input_grid(affine, target):
    """A blocky label map resampled to the model grid and projected back keeps nearly every voxel."""
    labels = np.zeros((30, 32, 36), dtype=np.uint8)
    labels[4:16, 5:20, 3:17] = 20
    labels[16:27, 8:28, 18:34] = 21
    volume = Volume(labels, affine)
    orientation = Orientation.of(volume)
    canonical = orientation.canonical(volume)
    shape, model_affine = resampled_grid(canonical.shape, canonical.affine, (target,) * 3)
    on_model = resample_array(canonical.array.astype(np.int16), shape, "nearest").numpy().astype(np.uint8)
    back = orientation.from_canonical(project_labels(on_model, model_affine, canonical.shape, canonical.affine))
    agreement = (back == labels).mean()
    assert agreement > 0.9
    # Every label survives with about its volume: each face of a box may move by up to half a model voxel, so the
    # relative volume error is bounded by the model voxel size over the box's extent, summed over the axes.
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    for value, extent in ((20, np.array([12, 15, 14])), (21, np.array([11, 20, 16]))):
        tolerance = float(np.sum(target / (extent * spacing)))
        assert abs((back == value).sum() - (labels == value).sum()) <= tolerance * (labels == value).sum()
    # A heatmap blob that is smooth at the model's resolution (sigma of three model voxels, in millimetres).
    mm = np.indices(canonical.shape) * np.linalg.norm(canonical.affine[:3, :3], axis=0)[:, None, None, None]
    centre = mm.reshape(3, -1).mean(axis=1)[:, None, None, None]
    smooth = np.exp(-((mm - centre) ** 2).sum(0) / (2 * (3 * target) ** 2)).astype(np.float32)
    heat_model = resample_array(smooth, shape).numpy()
    heat_back = project_linear(heat_model, model_affine, canonical.shape, canonical.affine)
    assert np.abs(heat_back - smooth).max() < 0.15
    assert heat_back.min() >= 0 and heat_back.max() <= 1


def test_prepare_windows_hounsfield_units_to_unit_range():
    ct = Volume(np.linspace(-3000, 3000, 16**3, dtype=np.float32).reshape(16, 16, 16), np.diag([1.0, 1, 1, 1]))
    prepared = prepare(ct, (2.0, 2.0, 2.0))
    assert prepared.image.shape == (1, 8, 8, 8)
    assert float(prepared.image.min()) == 0.0 and float(prepared.image.max()) == 1.0
    assert float(normalize_intensity(np.array([0.0]))[0]) == 0.5
