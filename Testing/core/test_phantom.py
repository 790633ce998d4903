"""Synthetic spine CT phantom: determinism, labels, lesions, regions, variants, HU ranges, orientations, files."""

from __future__ import annotations

import functools
import hashlib
import json

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from SpineSegLib.errors import InputError
from SpineSegLib.labels import load_label_table
from SpineSegLib.phantom import GENERATOR_VERSION, REGIONS, PhantomConfig, generate_phantom, write_phantom

TABLE = load_label_table()
# Whole-spine labels of seed 11 at 4 mm per generator version: a change to what a seed draws must bump
# GENERATOR_VERSION (training datasets record it, and the trainer refuses phantoms of another version).
WHOLE_SPINE_LABELS_SHA256 = {2: "4d69cb036f5b9b416112a7b8b6da62ff83d99bcf6dd73952fc686b22cdd6a0a8"}


@functools.cache
def phantom(**kwargs):
    return generate_phantom(PhantomConfig(**kwargs))


def centroids_ras(p) -> dict[int, np.ndarray]:
    labels = p.labels.array
    values = [v for v in np.unique(labels) if v]
    centres = ndimage.center_of_mass(np.ones_like(labels, dtype=np.uint8), labels, values)
    return {int(v): p.labels.voxel_to_ras(np.asarray(c))[0] for v, c in zip(values, centres, strict=True)}


def touches_edge(mask: np.ndarray) -> bool:
    return bool(mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any()
                or mask[..., 0].any() or mask[..., -1].any())


def fully_present(p) -> list[str]:
    labels = p.labels.array
    names = []
    for name in p.vertebrae:
        if not touches_edge(labels == TABLE.by_name(name).value):
            names.append(name)
    return names


def test_generator_version_pins_the_anatomy():
    p = phantom(seed=11, region="whole", spacing=(4.0, 4.0, 4.0), variant="random")
    digest = hashlib.sha256(p.labels.array.tobytes()).hexdigest()
    assert digest == WHOLE_SPINE_LABELS_SHA256.get(GENERATOR_VERSION), (
        "the phantom generator draws other anatomy than its version records: bump GENERATOR_VERSION and pin "
        f"the new labels ({digest})")


def test_types_grid_and_vertebra_list():
    p = phantom(seed=1, region="lumbar", shape=(64, 64, 96), spacing=(2.0, 2.0, 2.0))
    assert p.ct.array.dtype == np.int16 and p.labels.array.dtype == np.uint8
    assert p.ct.shape == p.labels.shape == (64, 64, 96)
    assert np.allclose(p.ct.affine, p.labels.affine) and np.allclose(p.ct.spacing, 2.0)
    present = [TABLE.by_value(v).name for v in np.unique(p.labels.array) if v]
    assert p.vertebrae == sorted(present, key=lambda n: TABLE.order(TABLE.by_name(n).value))


def test_determinism_and_written_files(tmp_path):
    config = dict(seed=3, region="lumbar", shape=(48, 48, 64), spacing=(2.5, 2.5, 2.5), lesions=2)
    a = write_phantom(generate_phantom(PhantomConfig(**config)), tmp_path / "a")
    b = write_phantom(generate_phantom(PhantomConfig(**config)), tmp_path / "b")
    c = write_phantom(generate_phantom(PhantomConfig(**{**config, "seed": 4})), tmp_path / "c")
    for name in ("ct.nii.gz", "vertebrae.nii.gz", "lesions.json", "preview.png"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert (a / "ct.nii.gz").read_bytes() != (c / "ct.nii.gz").read_bytes()
    ct, labels = nib.load(str(a / "ct.nii.gz")), nib.load(str(a / "vertebrae.nii.gz"))
    assert ct.get_data_dtype() == np.int16 and labels.get_data_dtype() == np.uint8
    assert ct.shape == labels.shape == (48, 48, 64)
    document = json.loads((a / "lesions.json").read_text())
    assert document["config"]["seed"] == 3 and document["config"]["region"] == "lumbar"
    assert isinstance(document["lesions"], list)
    assert not list(tmp_path.glob(".*partial*"))


@pytest.mark.parametrize("seed", [0, 5])
def test_labels_connected_and_cranio_caudal(seed):
    p = phantom(seed=seed, region="whole", spacing=(3.0, 3.0, 3.0), lesions=2, scoliosis=bool(seed))
    labels = p.labels.array
    for name in p.vertebrae:
        _, count = ndimage.label(labels == TABLE.by_name(name).value)
        assert count == 1, f"{name} has {count} pieces"
    centres = centroids_ras(p)
    s_coords = [centres[TABLE.by_name(name).value][2] for name in p.vertebrae]
    assert all(np.diff(s_coords) < 0), s_coords
    assert p.vertebrae[0] == "C1" and p.vertebrae[-1] == "sacrum" and len(p.vertebrae) == 25


@pytest.mark.parametrize("seed", [1, 2, 7])
def test_lesions_inside_their_vertebra(seed):
    p = phantom(seed=seed, region="thoracolumbar", spacing=(2.0, 2.0, 2.0), lesions=4)
    assert len(p.lesions) == 4
    labels = p.labels.array
    fully = set(fully_present(p))
    for lesion in p.lesions:
        assert lesion["class"] in ("fracture", "lytic", "sclerotic")
        assert TABLE.by_name(lesion["vertebra"]).value == lesion["vertebra_label"]
        assert lesion["vertebra"] in fully and lesion["vertebra"] != "sacrum"
        ijk = np.rint(p.labels.ras_to_voxel(lesion["center_ras"])[0]).astype(int)
        assert labels[tuple(ijk)] == lesion["vertebra_label"], lesion
        if lesion["class"] == "fracture":
            assert lesion["grade"] in (1, 2, 3)
        else:
            assert lesion["grade"] is None and 4.0 <= lesion["size_mm"] <= 15.5


def test_fractures_reduce_the_vertebra():
    kwargs = dict(seed=8, region="thoracolumbar", spacing=(2.5, 2.5, 2.5), scoliosis=False)
    p, healthy = phantom(lesions=8, **kwargs), phantom(lesions=0, **kwargs)
    fractures = [lesion for lesion in p.lesions if lesion["class"] == "fracture"]
    assert fractures
    for lesion in fractures:
        value = lesion["vertebra_label"]
        assert (p.labels.array == value).sum() < 0.98 * (healthy.labels.array == value).sum(), lesion
    assert np.array_equal(p.labels.array == 20, healthy.labels.array == 20) or any(
        lesion["vertebra"] == "L1" for lesion in fractures)


@pytest.mark.parametrize("region", list(REGIONS))
def test_regions_contain_their_vertebrae(region):
    p = phantom(seed=11, region=region, spacing=(3.0, 3.0, 3.0), lesions=0, variant="none")
    first, last = REGIONS[region]
    names = TABLE.names
    expected = [n for n in names[names.index(first):names.index(last) + 1] if not TABLE.by_name(n).variant]
    fully = fully_present(p)
    assert set(expected) <= set(fully), (expected, fully)
    cut = [n for n in p.vertebrae if n not in expected]  # partly cut neighbours (a spinous tip may reach further)
    plain = [n for n in names if not TABLE.by_name(n).variant]
    span = (plain.index(first), plain.index(last))
    assert all(span[0] - 2 <= plain.index(n) <= span[1] + 2 for n in cut), cut


def test_variants():
    t13 = phantom(seed=4, region="thoracolumbar", spacing=(2.5, 2.5, 2.5), variant="T13", lesions=0)
    assert "T13" in t13.vertebrae and "L6" not in t13.vertebrae
    assert 28 in np.unique(t13.labels.array)
    centres = centroids_ras(t13)
    assert centres[19][2] > centres[28][2] > centres[20][2]  # T12 above T13 above L1
    l6 = phantom(seed=4, region="lumbar", spacing=(2.5, 2.5, 2.5), variant="L6", lesions=0)
    assert {"L1", "L5", "L6", "sacrum"} <= set(fully_present(l6)) and "T13" not in l6.vertebrae
    centres = centroids_ras(l6)
    assert centres[24][2] > centres[25][2] > centres[26][2]  # L5 above L6 above the sacrum
    thoracic = phantom(seed=4, region="thoracic", spacing=(3.0, 3.0, 3.0), variant="T13", lesions=0)
    assert "T13" in fully_present(thoracic)


def test_hounsfield_ranges():
    p = phantom(seed=2, region="thoracic", shape=(200, 150, 100), spacing=(1.25, 1.25, 1.5), lesions=0, noise_hu=8.0)
    ct, labels = p.ct.array.astype(np.float32), p.labels.array
    bone = ct[labels > 0]
    assert 500 <= np.percentile(bone, 99) <= 1600  # cortical shell
    assert 80 <= np.median(bone) <= 450  # mostly cancellous
    assert ct.min() >= -1024 and ct.max() <= 3071

    def share(low, high):
        return float(np.mean((ct >= low) & (ct <= high)))

    assert share(-130, -70) > 0.02  # fat
    assert share(20, 75) > 0.08  # muscle and organs
    assert share(-930, -680) > 0.02  # lung
    assert share(-1024, -960) > 0.02  # air around the body


def test_metal_screws():
    common = dict(seed=6, region="lumbar", shape=(72, 64, 96), spacing=(2.0, 2.0, 2.0), lesions=0, noise_hu=10.0)
    p = phantom(metal=True, **common)
    assert p.ct.array.max() >= 2000
    plain = phantom(metal=False, **common)
    assert plain.ct.array.max() < 2000
    assert np.array_equal(p.labels.array, plain.labels.array)


def test_orientations_agree_in_world_coordinates():
    common = dict(seed=9, region="lumbar", spacing=(2.5, 2.5, 2.5), lesions=0)
    results = {o: phantom(orientation=o, **common) for o in ("RAS", "LPS", "oblique")}
    ras, lps, oblique = results["RAS"], results["LPS"], results["oblique"]
    assert np.all(np.diag(lps.ct.affine)[:2] < 0) and np.all(np.diag(ras.ct.affine)[:3] > 0)
    rotation = oblique.ct.affine[:3, :3] / oblique.ct.spacing
    angle = np.degrees(np.arccos(np.clip((np.trace(rotation) - 1) / 2, -1, 1)))
    assert 4.9 <= angle <= 15.1
    centres = {o: centroids_ras(p) for o, p in results.items()}
    names = set(fully_present(ras)) & set(fully_present(lps)) & set(fully_present(oblique))
    assert {"L2", "L3", "L4"} <= names
    for name in names:
        value = TABLE.by_name(name).value
        assert np.linalg.norm(centres["RAS"][value] - centres["LPS"][value]) < 1.0, name
        assert np.linalg.norm(centres["RAS"][value] - centres["oblique"][value]) < 2.0, name


def test_progress_and_validation():
    seen = []
    generate_phantom(PhantomConfig(seed=0, region="cervical", shape=(32, 32, 48), spacing=(3.0, 3.0, 3.0)),
                     progress=lambda f, s: seen.append((f, s)))
    fractions = [round(f, 9) for f, _ in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    with pytest.raises(InputError):
        generate_phantom(PhantomConfig(region="skull"))
    with pytest.raises(InputError):
        generate_phantom(PhantomConfig(orientation="XYZ"))
