"""Naming vertebrae by counting from the regions the network sees (model card ``numbering: regions``).

Probabilities are built by hand (a column of bone blocks, each given the classes of one region) or from a
phantom's own labels (a perfect network), so these tests check the counting, not a trained model."""

import numpy as np
import pytest
from counting_fixtures import names_top_down, seamed_probabilities
from scipy import ndimage

from SpineSegLib.labels import load_label_table
from SpineSegLib.level_sizes import LevelSizes, fit_level_sizes, whole_vertebra_volumes
from SpineSegLib.phantom import PhantomConfig, generate_phantom
from SpineSegLib.region_numbering import label_by_regions, split_part, split_vertebrae
from SpineSegLib.rib_evidence import BONE_HU

TABLE = load_label_table()
LUT = TABLE.value_to_class_lut()
REGION_OF_CLASS = TABLE.class_to_region_lut()
SPACING = 2.0
AFFINE = np.diag([SPACING, SPACING, SPACING, 1.0])  # RAS: axis 2 runs superior
LEVELS = {"C": "cervical", "T": "thoracic", "L": "lumbar", "S": "sacral"}


def column_probabilities(regions: str, rng: np.random.Generator, height: int = 8, gap: int = 2):
    """A column of bone blocks, top first, one per letter of ``regions`` (C, T, L, S). Each block's bone is given
    to a random class of its region: the network is taught regions, so which level it picks means nothing."""
    depth = len(regions) * (height + gap) + gap
    probs = np.zeros((TABLE.num_classes, 16, 16, depth), dtype=np.float32)
    for index, letter in enumerate(regions):
        top = depth - gap - index * (height + gap)
        classes = np.flatnonzero(REGION_OF_CLASS == TABLE.regions.index(LEVELS[letter]) + 1)
        probs[rng.choice(classes), 4:12, 4:12, top - height:top] = 1.0
    probs[0] = 1.0 - probs[1:].sum(axis=0)
    return probs


@pytest.mark.parametrize("regions, expected", [
    ("C" * 7 + "T" * 12 + "L" * 5 + "S", [f"C{i}" for i in range(1, 8)] + [f"T{i}" for i in range(1, 13)]
     + [f"L{i}" for i in range(1, 6)] + ["sacrum"]),
    ("TT" + "L" * 5 + "S", ["T11", "T12", "L1", "L2", "L3", "L4", "L5", "sacrum"]),  # counted up from the sacrum
    ("C" + "T" * 12 + "L", ["C7"] + [f"T{i}" for i in range(1, 13)] + ["L1"]),  # the first ribs are T1
    ("C" * 7 + "T" * 13 + "L" * 5 + "S", [f"C{i}" for i in range(1, 8)] + [f"T{i}" for i in range(1, 14)]
     + [f"L{i}" for i in range(1, 6)] + ["sacrum"]),  # thirteen rib-bearing vertebrae: T13
    ("T" * 3 + "L" * 6 + "S", ["T10", "T11", "T12", "L1", "L2", "L3", "L4", "L5", "L6", "sacrum"]),  # six lumbar
])
def test_vertebrae_are_counted_from_their_regions(regions, expected):
    labels = label_by_regions(column_probabilities(regions, np.random.default_rng(len(regions))), AFFINE, 100.0)
    assert names_top_down(labels) == expected


def test_a_speck_inside_the_column_is_no_vertebra_but_a_cut_vertebra_at_its_end_is():
    probs = column_probabilities("TTTLL", np.random.default_rng(0))
    thoracic = LUT[TABLE.by_name("T5").value]
    probs[thoracic, 14:16, 14:16, 25:27] = 1.0  # a rib speck off the column, between two vertebrae
    probs = np.concatenate([probs, np.zeros((*probs.shape[:3], 4), dtype=np.float32)], axis=3)
    probs[thoracic, 4:12, 4:12, -3:] = 1.0  # the lower half of a vertebra at the top edge of the view
    probs[0] = 1.0 - probs[1:].sum(axis=0)
    labels = label_by_regions(probs, AFFINE, 100.0)
    assert names_top_down(labels) == ["T9", "T10", "T11", "T12", "L1", "L2"]
    assert labels[14:16, 14:16, 25:27].max() == 0


def test_a_spinous_tip_the_view_cuts_is_the_vertebra_above_but_a_rib_piece_it_cuts_is_not():
    """The view's top cuts the vertebra above the column found so far through the tip of its spinous process alone
    (144 mm³, 40 mm behind the column's axis, apart from the vertebra below) and a rib 100 mm to the side: the tip
    is counted and named as the vertebra above, the rib piece is no vertebra."""
    probs = column_probabilities("TTTLL", np.random.default_rng(0))
    probs = np.pad(probs, ((0, 0), (0, 48), (24, 0), (0, 0)))  # room behind the column and beside it
    thoracic = LUT[TABLE.by_name("T5").value]
    probs[thoracic, 7:10, 6:9, -2:] = 1.0  # the tip: centre 20 voxels (40 mm) behind the column's axis
    probs[thoracic, 56:60, 30:34, -2:] = 1.0  # the rib: 100 mm to the side, as large as the tip
    probs[0] = 1.0 - probs[1:].sum(axis=0)
    labels = label_by_regions(probs, AFFINE, 300.0)
    assert names_top_down(labels) == ["T9", "T10", "T11", "T12", "L1", "L2"]
    assert labels[7:10, 6:9, -2:].min() == TABLE.by_name("T9").value
    assert labels[56:60, 30:34, -2:].max() == 0


def test_the_top_of_a_body_the_view_cuts_under_the_last_vertebra_is_the_next_one():
    """The view's bottom cuts the next vertebra to the top of its body, in two pieces side by side, touching the
    last whole vertebra at its processes (a voxel away) and 15 mm beyond its centre: one vertebra, the next one
    (kept as its larger piece: a vertebra is one piece of bone). A piece the network cut off the vertebra at the
    view's top, lying no farther out than that vertebra's centre, is no vertebra of its own."""
    probs = column_probabilities("TTTLL", np.random.default_rng(0))
    probs = np.pad(probs, ((0, 0), (0, 0), (4, 0), (3, 4)))
    thoracic, lumbar = LUT[TABLE.by_name("T5").value], LUT[TABLE.by_name("L3").value]
    probs[thoracic, 4:12, 8:16, -3:] = 1.0  # the lower part of the vertebra at the view's top
    probs[thoracic, 6:10, 5:7, -6:] = 1.0  # its spinous process, cut off by a seam, reaching lower
    probs[lumbar, 3:6, 8:13, :4] = 1.0  # the two pieces at the view's bottom
    probs[lumbar, 9:11, 8:13, :4] = 1.0
    probs[0] = 1.0 - probs[1:].sum(axis=0)
    labels = label_by_regions(probs, AFFINE, 300.0)
    assert names_top_down(labels) == ["T9", "T10", "T11", "T12", "L1", "L2", "L3"]
    assert labels[3:6, 8:13, :4].min() == TABLE.by_name("L3").value and labels[9:11, 8:13, :4].max() == 0


def test_a_part_split_at_its_seams_loses_none_of_its_bone():
    """Two vertebrae joined where the network was unsure of the seam, and a process of the lower one that the
    network was as unsure of, lying against other bone in the part's box: the pieces together are the whole
    part, the process with its vertebra (not given to the bone beside it)."""
    shape = (16, 16, 24)
    background = np.ones(shape, dtype=np.float32)
    background[4:12, 4:12, 14:22] = 0.02  # the upper vertebra
    background[6:10, 6:10, 12:14] = 0.4  # the seam the network was unsure of
    background[4:12, 4:12, 2:12] = 0.02  # the lower vertebra
    background[12:14, 6:10, 4:8] = 0.3  # its process, as unsure
    background[12, 6:10, 4:8] = 0.45  # ... and more so where it meets its body
    part = background < 0.5
    background[12:14, 10:12, 4:8] = 0.02  # other bone against the process, in the part's box but not part of it
    pieces = split_part(part, background, (1.5, 1.5, 1.5))
    assert len(pieces) == 2
    assert np.array_equal(np.logical_or.reduce(pieces), part)
    lower = next(piece for piece in pieces if piece[8, 8, 5])
    assert lower[12:14, 6:10, 4:8].all()


def test_a_piece_of_sacrum_cut_off_by_the_view_is_counted_as_sacrum_and_left_out():
    """Below the sacrum, a small piece of it that the view cuts (its tip, apart from the rest): the vertebra above
    the sacrum is still L5, and the sacrum is one piece of bone, its largest."""
    probs = column_probabilities("TLLLLLS", np.random.default_rng(3))
    probs = np.concatenate([np.zeros((*probs.shape[:3], 3), dtype=np.float32), probs], axis=3)
    probs[LUT[TABLE.by_name("sacrum").value], 6:10, 6:10, :2] = 1.0  # the tip, reaching the bottom of the view
    probs[0] = 1.0 - probs[1:].sum(axis=0)
    labels = label_by_regions(probs, AFFINE, 20.0)
    assert names_top_down(labels) == ["T12", "L1", "L2", "L3", "L4", "L5", "sacrum"]
    sacrum = labels == TABLE.by_name("sacrum").value
    assert ndimage.label(sacrum)[1] == 1 and not sacrum[..., :2].any()


def test_bone_beside_the_column_is_no_vertebra():
    """A block as big as a vertebra 60 mm to the side (a piece of pelvis, soft tissue taken for bone) and rib
    pieces along the column are not counted."""
    probs = column_probabilities("TTTTLLLLLS", np.random.default_rng(1))
    probs = np.pad(probs, ((0, 0), (0, 40), (0, 0), (0, 0)))
    probs[LUT[TABLE.by_name("L3").value], 34:42, 4:12, 12:20] = 1.0  # beside L5, as big as it
    for k in range(30, 90, 10):
        probs[LUT[TABLE.by_name("T6").value], 31:34, 6:9, k:k + 3] = 1.0  # rib pieces, 50 mm out
    probs[0] = 1.0 - probs[1:].sum(axis=0)
    labels = label_by_regions(probs, AFFINE, 100.0)
    assert names_top_down(labels) == ["T9", "T10", "T11", "T12", "L1", "L2", "L3", "L4", "L5", "sacrum"]
    assert labels[26:, :, :].max() == 0


@pytest.mark.parametrize("seam", [1, 2])
def test_the_seam_between_two_vertebrae_is_given_back_to_them(seam):
    foreground = np.zeros((12, 12, 20 + seam), dtype=bool)
    foreground[2:10, 2:10, :10] = foreground[2:10, 2:10, 10 + seam:] = True  # two blocks and the seam
    instances = split_vertebrae(foreground, (1.0, 1.0, 1.0))
    assert instances.max() == 2
    assert (instances[2:10, 2:10, :] > 0).all()
    assert np.count_nonzero(instances) < 1.05 * 8 * 8 * (20 + seam)  # at most a thin fringe around the seam


def _two_vertebrae_joined_where_the_network_was_unsure(seam_background: float):
    """Two 8-voxel blocks of sure bone (background probability 0.02) joined by a 2-voxel slab it thought bone,
    but not surely (``seam_background``)."""
    background = np.ones((12, 12, 18), dtype=np.float32)
    background[2:10, 2:10, :8] = background[2:10, 2:10, 10:] = 0.02
    background[2:10, 2:10, 8:10] = seam_background
    return background


def test_vertebrae_joined_where_the_network_was_unsure_are_split_there():
    background = _two_vertebrae_joined_where_the_network_was_unsure(0.4)
    foreground = background < 0.5
    assert split_vertebrae(foreground, (1.0, 1.0, 1.0)).max() == 1  # one part without the probabilities
    instances = split_vertebrae(foreground, (1.0, 1.0, 1.0), background=background)
    assert instances.max() == 2
    assert len(np.unique(instances[2:10, 2:10, :8])) == len(np.unique(instances[2:10, 2:10, 10:])) == 1
    assert np.array_equal(instances > 0, foreground)  # the seam's voxels go to the two vertebrae, none lost


def test_a_vertebra_is_not_split_off_its_own_unsure_tip():
    """Bone the network was sure of stays whole; so does a vertebra with a process it was unsure of whose sure
    tip is far too small to be a vertebra of its own."""
    background = _two_vertebrae_joined_where_the_network_was_unsure(0.02)
    assert split_vertebrae(background < 0.5, (1.0, 1.0, 1.0), background=background).max() == 1
    background[2:10, 2:10, 8:] = 1.0
    background[4:6, 4:6, 8:16] = 0.4  # an unsure process ...
    background[4:6, 4:6, 16:] = 0.02  # ... with a sure tip of 8 voxels (the block has 512)
    assert split_vertebrae(background < 0.5, (1.0, 1.0, 1.0), background=background).max() == 1


def test_vertebrae_are_counted_where_the_network_was_unsure_of_every_seam():
    probs = column_probabilities("TTLLL", np.random.default_rng(2), gap=2)
    seams = probs[0] > 0.5
    between = np.zeros_like(seams)
    between[4:12, 4:12, 2:-2] = True  # fill the gaps between the blocks with unsure bone of the block above
    unsure = seams & between
    thoracic = LUT[TABLE.by_name("T8").value]
    probs[0][unsure], probs[thoracic][unsure] = 0.4, 0.6
    assert split_vertebrae(probs[0] < 0.5, (SPACING,) * 3).max() == 1  # one part without the probabilities
    assert names_top_down(label_by_regions(probs, AFFINE, 100.0)) == ["T11", "T12", "L1", "L2", "L3"]


def test_vertebrae_joined_through_their_processes_are_split_between_their_bodies():
    """The network saw no seam at all: two bodies (10-voxel cubes, a disc's 6 mm between them) joined behind by
    a thin bar of bone, as touching processes are. They are split where the bar is thinnest."""
    foreground = np.zeros((16, 20, 26), dtype=bool)
    foreground[3:13, 3:13, 1:11] = foreground[3:13, 3:13, 15:25] = True  # the bodies
    foreground[7:9, 13:17, 1:25] = True  # processes behind them, touching
    sure = np.where(foreground, 0.02, 1.0)
    instances = split_vertebrae(foreground, (1.5, 1.5, 1.5), background=sure)
    assert instances.max() == 2
    assert instances[8, 8, 5] != instances[8, 8, 20] and instances[8, 8, 5] > 0 and instances[8, 8, 20] > 0
    assert np.array_equal(instances > 0, foreground)


def test_a_part_is_split_the_same_wherever_it_lies_in_the_view():
    """The split works on each part's own box: two joined bodies split alike in a tight array and in a view ten
    times their size, and their pieces come back where the part was."""
    part = np.zeros((16, 20, 26), dtype=bool)
    part[3:13, 3:13, 1:11] = part[3:13, 3:13, 15:25] = True
    part[7:9, 13:17, 1:25] = True
    view = np.zeros((60, 70, 80), dtype=bool)
    view[30:46, 40:60, 50:76] = part
    tight = split_vertebrae(part, (1.5, 1.5, 1.5), background=np.where(part, 0.02, 1.0))
    wide = split_vertebrae(view, (1.5, 1.5, 1.5), background=np.where(view, 0.02, 1.0))
    assert wide.max() == tight.max() == 2
    assert np.array_equal(wide[30:46, 40:60, 50:76], tight) and not wide[~view].any()


def test_a_vertebra_with_wings_or_lateral_masses_stays_one():
    """Thick pieces at one height are one bone's: a sacrum-like body with two wings on thin necks (split by
    shape), and two lateral masses the network was unsure between (split at a weak seam) 15 mm apart."""
    sacrum = np.zeros((40, 16, 14), dtype=bool)
    sacrum[14:26, 2:14, 1:13] = True  # body
    sacrum[1:11, 2:14, 1:13] = sacrum[29:39, 2:14, 1:13] = True  # wings
    sacrum[11:14, 7:9, 6:8] = sacrum[26:29, 7:9, 6:8] = True  # thin necks
    assert split_vertebrae(sacrum, (2.0, 2.0, 2.0), background=np.where(sacrum, 0.02, 1.0)).max() == 1
    background = np.ones((20, 10, 10), dtype=np.float32)
    background[2:8, 2:8, 2:8] = background[12:18, 2:8, 2:8] = 0.02  # lateral masses, 15 mm apart at 1.5 mm
    background[8:12, 4:6, 4:6] = 0.4  # an arch the network was unsure of
    assert split_vertebrae(background < 0.5, (1.5, 1.5, 1.5), background=background).max() == 1


@pytest.mark.parametrize("offset_mm, pieces", [(9.0, 2), (13.5, 1)])
def test_only_bodies_stacked_along_the_column_are_split_by_shape(offset_mm, pieces):
    """The network saw no seam: a thick block with another on top, their centres 13.5 mm apart in height and
    ``offset_mm`` to the side. Two bodies a step of scoliosis apart are two vertebrae; a block as far to the side
    as above is no body (one of C1's lateral masses above C2's dens), and cutting there would split C1 and C2 down
    the middle."""
    shift = int(offset_mm / 1.5)
    foreground = np.zeros((40, 16, 24), dtype=bool)
    foreground[5:15, 3:13, 1:11] = True
    foreground[5 + shift:15 + shift, 3:13, 11:19] = True
    assert ndimage.label(foreground)[1] == 1  # joined
    assert split_vertebrae(foreground, (1.5, 1.5, 1.5), background=np.where(foreground, 0.02, 1.0)).max() == pieces


def test_bone_beside_a_vertebra_is_split_off_at_a_weak_seam():
    """A block of bone 45 mm to the side (a pelvis wing against the sacrum) joined through bone the network was
    unsure of is a part of its own, which counting then leaves out as off the column."""
    background = np.ones((40, 12, 12), dtype=np.float32)
    background[2:10, 2:10, 2:10] = background[30:38, 2:10, 2:10] = 0.02
    background[10:30, 5:7, 5:7] = 0.4
    assert split_vertebrae(background < 0.5, (1.5, 1.5, 1.5), background=background).max() == 2


@pytest.mark.parametrize("region, variant", [("thoracolumbar", "none"), ("whole", "L6")])
def test_a_perfect_network_names_every_vertebra_of_a_phantom(region, variant):
    phantom = generate_phantom(PhantomConfig(seed=11, region=region, spacing=(2.0, 2.0, 2.0), variant=variant,
                                             lesions=0))
    reference = phantom.labels.array
    labels = label_by_regions(seamed_probabilities(reference), phantom.labels.affine)
    cut_by_the_view = set(np.unique(reference[..., [0, -1]]))  # (may be too small to keep)
    dice = {}
    for value in set(np.unique(reference)) - cut_by_the_view - {0}:
        truth, found = reference == value, labels == value
        dice[TABLE.by_value(value).name] = 2 * np.count_nonzero(truth & found) / (truth.sum() + found.sum())
    # At 2 mm a cervical vertebra is a few hundred voxels and the seam takes a voxel or two off its thin
    # processes where it meets its neighbours (~0.85); the larger vertebrae lose almost nothing.
    assert min(dice.values()) > 0.8, dice
    assert np.mean(list(dice.values())) > 0.95, dice


def test_c2_keeps_its_dens():
    """With perfect seams, shape splitting must not take C2's dens (a thick peg above its body) for a vertebra of
    its own: every vertebra below would be counted one level low."""
    phantom = generate_phantom(PhantomConfig(seed=900007, region="whole", spacing=(1.5, 1.5, 1.5), lesions=1,
                                             variant="random"))
    reference = phantom.labels.array
    labels = label_by_regions(seamed_probabilities(reference), phantom.labels.affine)
    assert names_top_down(labels) == names_top_down(reference)


def test_c1_and_c2_joined_by_the_network_are_named_both_and_the_count_goes_on_at_c3():
    """A network that saw no seam between C1 and C2 (there is no disc between them) gives one top vertebra the
    size of both. Named C1, it would push every vertebra below one level down; its volume says it is both: it is
    cut into C1 above and C2 below, and C3 comes next."""
    sizes = LevelSizes.from_card(fit_level_sizes([whole_vertebra_volumes(_cervical_phantom(seed).labels.array, 8.0)
                                                  for seed in (31, 32, 33, 34)]), TABLE)
    reference = _cervical_phantom(37).labels.array
    c1, c2 = TABLE.by_name("C1").value, TABLE.by_name("C2").value
    probs = seamed_probabilities(np.where(reference == c1, c2, reference))  # no seam between C1 and C2
    affine = _cervical_phantom(37).labels.affine
    labels = label_by_regions(probs, affine, sizes=sizes)
    below_c2 = [name for name in names_top_down(reference) if name not in ("C1", "C2")]
    assert names_top_down(labels)[:2 + len(below_c2)] == ["C1", "C2", *below_c2]
    for value in (c1, c2):  # split by height in the profile's proportion: most of each lands in its vertebra
        truth, found = reference == value, labels == value
        assert 2 * np.count_nonzero(truth & found) / (truth.sum() + found.sum()) > 0.6
    # A C1 the network did see apart stays C1 alone, C2 below it.
    assert names_top_down(label_by_regions(seamed_probabilities(reference), affine, sizes=sizes))[:2] == ["C1", "C2"]


def test_rib_crumbs_beside_the_column_do_not_make_a_speck_a_vertebra():
    """Whether a part is a speck is judged against the vertebrae at its height; many rib crumbs off the column
    must not lower that yardstick until a speck on the column passes for a vertebra."""
    background = np.ones((60, 20, 60), dtype=np.float32)
    for top in (4, 20, 36):  # three vertebrae, 16 voxels apart, bodies 8 voxels high
        background[3:15, 4:16, top:top + 8] = 0.02
    background[6:9, 8:11, 31:33] = 0.02  # a speck between two of them (18 voxels against 1152)
    for k in range(8):  # rib crumbs far to the side at the same heights
        background[45 + (k % 3) * 5:47 + (k % 3) * 5, 4:6, 6 + 6 * k:8 + 6 * k] = 0.02
    instances = split_vertebrae(background < 0.5, (1.5, 1.5, 1.5), background=background)
    assert instances.max() == 3 and instances[7, 9, 32] == 0


def test_the_segmenter_counts_when_the_model_card_says_regions(tmp_path):
    """Wiring: a card with ``numbering: regions`` makes the segmenter count the fine pass's parts. The network's
    outputs are replaced: bone blocks given the first class of their region (top block thoracic, then lumbar)."""
    import torch

    from SpineSegLib.checkpoint import save_checkpoint
    from SpineSegLib.inference import Segmenter
    from SpineSegLib.networks import build_network
    from SpineSegLib.volume import Volume

    ct = np.full((48, 48, 96), -1000.0, dtype=np.float32)
    # top first; the view cuts the column at its top (a column ending inside the view would start at C1)
    blocks = [(slice(14, 34), slice(14, 34), slice(k, k + 20)) for k in (76, 48, 20)]
    for block in blocks:
        ct[block] = 800.0
    tiny = {"channels": [4, 8, 16], "num_res_units": 0}
    card = {"name": "wiring", "architecture": {"id": "unet3d", "args": tiny},
            "preprocessing": {"intensity_window": [-1000, 1000],
                              "stages": {"coarse": {"spacing": [4, 4, 4], "patch_size": [32, 32, 32]},
                                         "fine": {"spacing": [1.5, 1.5, 1.5], "patch_size": [32, 32, 32]}}},
            "postprocessing": {"numbering": "regions", "min_vertebra_mm3": 100.0}}
    network = build_network("unet3d", 1, TABLE.num_classes, len(TABLE.lesion_classes), **tiny)
    segmenter = Segmenter(save_checkpoint(network, card, tmp_path / "regions"), device="cpu")

    def predict(image: torch.Tensor, stage: dict, progress):
        bone = image[0].numpy() > 0.75
        parts, count = ndimage.label(bone)
        heights = [h[2] for h in ndimage.center_of_mass(bone, parts, range(1, count + 1))]
        probs = np.zeros((TABLE.num_classes, *bone.shape), dtype=np.float32)
        for rank, part in enumerate(np.argsort(heights)[::-1]):
            probs[LUT[TABLE.by_name("T1" if rank == 0 else "L5").value]][parts == part + 1] = 1.0
        probs[0] = 1.0 - probs[1:].sum(axis=0)
        return probs, np.zeros((len(TABLE.lesion_classes), *bone.shape), dtype=np.float32)

    segmenter._predict = predict
    labels = segmenter(Volume(ct, np.eye(4))).labels.array
    assert [TABLE.by_value(labels[b][10, 10, 10]).name for b in blocks] == ["T12", "L1", "L2"]


def test_level_sizes_are_fitted_apart_from_each_cases_scale():
    truth = {"C3": 6000.0, "C7": 9800.0, "T1": 11500.0, "T12": 27700.0, "L1": 37000.0}
    rng = np.random.default_rng(0)
    scales = rng.uniform(0.8, 1.25, 12)
    cases = [{name: volume * scale * rng.normal(1.0, 0.02) for name, volume in truth.items()
              if rng.random() < 0.8} for scale in scales]
    profile = fit_level_sizes(cases)
    assert set(profile["volume_mm3"]) == set(truth)
    # Volumes are known up to one common factor: the mean case scale.
    ratios = [profile["volume_mm3"][name] / truth[name] for name in truth]
    assert np.ptp(np.log(ratios)) < 0.05, ratios
    assert max(profile["log_sd"].values()) < 0.05
    assert 0.08 < profile["scale_sd"] < 0.2  # log of a uniform 0.8-1.25 spread
    with pytest.raises(ValueError, match="no whole vertebrae"):
        fit_level_sizes([{}, {"sacrum": 1e5}])


def _cervical_phantom(seed):
    return generate_phantom(PhantomConfig(seed=seed, region="cervical", spacing=(2.0, 2.0, 2.0), lesions=0))


def _fooled_cervical_view(seed, cut_at_c1: bool):
    """The failure the column's top and the size profile are for: a network that leans to calling C3-C7 thoracic
    (bone of the same look), so that counting from its regions puts T1 five levels too high. Returns the
    probabilities, the affine and the vertebrae wholly in the view, top down; ``cut_at_c1`` ends the view at
    C1's top (no free view above the column)."""
    case = _cervical_phantom(seed)
    reference = case.labels.array
    fooled = reference.copy()
    for index, name in enumerate(("C3", "C4", "C5", "C6", "C7")):
        fooled[reference == TABLE.by_name(name).value] = TABLE.by_name(f"T{index + 1}").value
    probs = 0.6 * seamed_probabilities(fooled) + 0.4 * seamed_probabilities(reference)
    if cut_at_c1:
        top = np.flatnonzero((reference > 0).any(axis=(0, 1)))[-1]
        reference, probs = reference[..., :top + 1], probs[..., :top + 1]
    return probs, case.labels.affine, list(whole_vertebra_volumes(reference, 8.0))


def test_the_vertebra_at_the_top_of_the_column_is_c1():
    probs, affine, whole = _fooled_cervical_view(37, cut_at_c1=False)
    assert names_top_down(label_by_regions(probs, affine))[:len(whole)] == whole
    probs, affine, whole = _fooled_cervical_view(37, cut_at_c1=True)  # the view may have cut the column
    assert names_top_down(label_by_regions(probs, affine))[:3] == ["C6", "C7", "T1"]


def test_level_sizes_and_ribs_correct_a_count_the_regions_got_wrong():
    """Where the view ends at C1's top, the vertebrae's sizes and the ribs (the CT's bone: T1 is the first
    vertebra with a rib) give the count back. The sizes alone no longer overrule five vertebrae the network got
    wrong: their spread allows for a network's volume errors (``level_sizes.SD_FLOOR``), which on the phantoms
    run larger than the anatomy's."""
    sizes = LevelSizes.from_card(fit_level_sizes([whole_vertebra_volumes(_cervical_phantom(seed).labels.array, 8.0)
                                                  for seed in (31, 32, 33, 34)]), TABLE)
    probs, affine, whole = _fooled_cervical_view(37, cut_at_c1=True)
    bone = _cervical_phantom(37).ct.array[..., :probs.shape[-1]] > BONE_HU
    assert names_top_down(label_by_regions(probs, affine, sizes=sizes, bone=bone))[:len(whole) + 1] == ["C1", *whole]
