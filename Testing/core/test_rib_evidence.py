"""Ribs as a witness to the count: thoracic vertebrae bear ribs, and a count that knows it cannot slide a level
where the network calls C7 or L1 thoracic. The vertebrae are the phantom's own labels (a perfect or a fooled
network), the bone its CT's, so these tests check the counting, not a trained model."""

import functools

import numpy as np
import pytest
from counting_fixtures import names_top_down, seamed_probabilities
from scipy import ndimage

from SpineSegLib.labels import load_label_table
from SpineSegLib.phantom import PhantomConfig, generate_phantom
from SpineSegLib.preprocess import normalize_intensity
from SpineSegLib.region_numbering import label_by_regions
from SpineSegLib.rib_evidence import (
    BONE_HU,
    METAL_HU,
    METAL_MARGIN_MM,
    THORACIC_HALF_WIDTH_MM,
    bone_mask,
    lateral_reach,
    metal_planes,
    rib_log_likelihood,
    trim_ribs,
)
from SpineSegLib.volume import Volume

TABLE = load_label_table()
REGIONS = np.array([label.region for label in TABLE.labels])


@functools.cache
def _phantom(region: str):
    return generate_phantom(PhantomConfig(seed=5, region=region, spacing=(2.0, 2.0, 2.0), lesions=0))


@functools.cache
def _screwed_lumbar_phantom():
    """A lumbar view with pedicle screws in T12-L2 and their streaks."""
    return generate_phantom(PhantomConfig(seed=7, region="lumbar", spacing=(2.0, 2.0, 2.0), lesions=0, metal=True,
                                          variant="none"))


def _reach_by_name(labels: np.ndarray, bone: np.ndarray) -> dict[str, float]:
    """Lateral reach of each vertebra wholly in the view (a cut one may have lost its ribs)."""
    values = [v for v in np.unique(labels) if v and v not in np.unique(labels[..., [0, -1]])]
    instances = np.zeros(labels.shape, dtype=np.int32)
    for index, value in enumerate(values, start=1):
        instances[labels == value] = index
    return dict(zip([TABLE.by_value(v).name for v in values], lateral_reach(bone, instances, (2.0, 2.0, 2.0)),
                    strict=True))


@pytest.mark.parametrize("region", ["cervical", "thoracolumbar"])
def test_thoracic_vertebrae_reach_far_with_their_ribs_and_the_others_do_not(region):
    phantom = _phantom(region)
    reach = _reach_by_name(phantom.labels.array, phantom.ct.array > BONE_HU)
    regions = {name: TABLE.by_name(name).region for name in reach}
    assert "thoracic" in regions.values() and len(set(regions.values()) - {"sacral"}) == 2, regions
    for name, mm in reach.items():
        if regions[name] == "thoracic":
            assert mm > 60, reach  # the ribs run far out to the side
        elif regions[name] != "sacral":
            # Transverse processes only; in the thoraco-lumbar view the pelvis beside L5 is no rib.
            assert mm < 42, reach


def test_a_rib_the_network_took_into_its_vertebra_still_reaches_far():
    phantom = _phantom("thoracolumbar")
    labels, bone = phantom.labels.array.copy(), phantom.ct.array > BONE_HU
    t12 = TABLE.by_name("T12").value
    near_t12 = ndimage.distance_transform_edt(labels != t12, sampling=2.0) < 30
    labels[bone & (labels == 0) & near_t12] = t12  # the rib heads and the start of the ribs
    assert _reach_by_name(labels, bone)["T12"] > 60


def test_a_thoracic_vertebra_run_on_into_its_ribs_is_cut_back_and_keeps_all_of_itself():
    phantom = _phantom("thoracolumbar")
    truth, bone = phantom.labels.array, phantom.ct.array > BONE_HU
    t12, l1 = TABLE.by_name("T12").value, TABLE.by_name("L1").value
    labels = truth.copy()
    for value in (t12, l1):  # the network runs both on into the bone around them
        near = ndimage.distance_transform_edt(labels != value, sampling=2.0) < 30
        labels[bone & (labels == 0) & near] = value

    def half_width(mask):
        x_mm = np.argwhere(mask)[:, 0] * 2.0
        return np.abs(x_mm - np.median(x_mm)).max()

    assert half_width(labels == t12) >= 50  # the ribs' starts
    trimmed = trim_ribs(labels, (2.0, 2.0, 2.0), TABLE)
    assert half_width(trimmed == t12) <= THORACIC_HALF_WIDTH_MM + 2.0
    assert (trimmed[truth == t12] == t12).all()  # all of the vertebra itself stays
    assert np.array_equal(trimmed == l1, labels == l1)  # a lumbar vertebra bears no ribs: left alone
    assert np.array_equal(trimmed[labels != t12], labels[labels != t12])


def test_the_ribs_say_thoracic_or_not_and_a_vertebra_cut_without_ribs_says_nothing():
    rows = rib_log_likelihood(np.array([110.0, 35.0, 35.0]), np.array([False, False, True]), TABLE)
    thoracic, others = REGIONS == "thoracic", np.isin(REGIONS, ["cervical", "lumbar"])
    assert rows[0, thoracic].min() > rows[0, others].max()
    assert rows[1, others].min() > rows[1, thoracic].max()
    assert not rows[2].any()  # partly seen, no rib: it may have lost it with the cut
    assert not rows[:, REGIONS == "sacral"].any()  # its wings and the pelvis reach far: left to the network


def test_t1_bears_a_short_rib_and_the_thoracic_vertebrae_below_it_long_ones():
    c7, t1, t12, l1 = (TABLE.order(TABLE.by_name(name).value) for name in ("C7", "T1", "T12", "L1"))
    rows = rib_log_likelihood(np.array([50.0, 40.0, 80.0]), np.zeros(3, dtype=bool), TABLE)
    assert rows[0, t1] > rows[0, c7] + 1 and rows[0, t1] > rows[0, t12]  # a first rib's reach, short for T12's
    assert rows[1, l1] > rows[1, t12] + 3  # transverse processes only: no T12
    assert rows[2, t12] > rows[2, l1] + 3  # a long rib


def _fooled_thoracic_view():
    """A thoracic view's labels, the probabilities of a network that calls C6, C7, L1 and L2 thoracic, and the
    affine."""
    phantom = _phantom("thoracic")
    reference = phantom.labels.array
    fooled = reference.copy()
    for name in ("C6", "C7", "L1", "L2"):
        fooled[reference == TABLE.by_name(name).value] = TABLE.by_name("T6").value
    return reference, 0.9 * seamed_probabilities(fooled) + 0.1 * seamed_probabilities(reference), phantom.labels.affine


def test_the_ribs_keep_the_count_where_the_network_calls_c6_c7_l1_l2_thoracic():
    """The failure the ribs are for: in a view of the thoracic spine (no C1 or sacrum to count from), a network
    that calls the vertebrae on either side of T1-T12 thoracic slides the whole count a level; the ribs show
    where the thoracic spine begins and ends."""
    reference, probs, affine = _fooled_thoracic_view()
    truth = names_top_down(reference)
    assert truth[0] == "C6" and truth[-1] == "L2"
    assert names_top_down(label_by_regions(probs, affine)) != truth
    window = (-1000.0, 1000.0)
    bone = bone_mask(normalize_intensity(_phantom("thoracic").ct.array, window), window)
    assert names_top_down(label_by_regions(probs, affine, bone=bone)) == truth


def test_a_vertebra_the_view_cut_but_mostly_shows_still_says_it_bears_no_rib():
    """A thoracic view whose top edge cuts through C7, a third of it gone: what is left shows its transverse
    processes and no rib, so it is no T1, and the count does not slide. (A sliver says nothing: its rib may be
    what the view cut off.)"""
    reference, probs, affine = _fooled_thoracic_view()
    c7 = np.flatnonzero((reference == TABLE.by_name("C7").value).any(axis=(0, 1)))
    top = c7[0] + int(0.7 * len(c7))
    bone = _phantom("thoracic").ct.array[..., :top] > BONE_HU
    found = names_top_down(label_by_regions(probs[..., :top], affine, bone=bone))
    assert found == names_top_down(reference[..., :top])[:len(found)] and found[0] == "C7"


def test_a_sliver_of_c7_the_network_calls_thoracic_does_not_make_a_thirteenth_thoracic_vertebra():
    """A thoracic view whose top edge leaves under half of C7, which the network calls thoracic and which shows
    no rib (it may have been cut off): taken at its word, it is T1 and the rest T2-T13. What a vertebra cut by the
    view says of its region weighs by how much of it is in view, so it stays C7."""
    phantom = _phantom("thoracic")
    reference, c7 = phantom.labels.array, TABLE.by_name("C7").value
    fooled = reference.copy()
    fooled[reference == c7] = TABLE.by_name("T6").value
    probs = 0.95 * seamed_probabilities(fooled) + 0.05 * seamed_probabilities(reference)
    planes = np.flatnonzero((reference == c7).any(axis=(0, 1)))
    top = planes[0] + int(0.45 * len(planes))
    bone = phantom.ct.array[..., :top] > BONE_HU
    found = names_top_down(label_by_regions(probs[..., :top], phantom.labels.affine, bone=bone))
    assert found == names_top_down(reference[..., :top]) and found[0] == "C7"


def test_the_metal_planes_are_those_of_the_screws_and_a_few_mm_around_them_in_any_orientation():
    ct = _screwed_lumbar_phantom().ct
    with_metal = np.flatnonzero((ct.array >= METAL_HU).any(axis=(0, 1)))
    margin = int(METAL_MARGIN_MM / 2.0)
    expected = np.zeros(ct.shape[2], dtype=bool)
    expected[with_metal[0] - margin:with_metal[-1] + margin + 1] = True
    assert np.array_equal(metal_planes(ct, ct.affine, ct.shape[2]), expected)
    flip = np.eye(4)
    flip[2, 2], flip[2, 3] = -1.0, ct.shape[2] - 1  # stored top down: index k is the original's n-1-k
    flipped = Volume(ct.array[..., ::-1].copy(), ct.affine @ flip)
    assert np.array_equal(metal_planes(flipped, ct.affine, ct.shape[2]), expected)  # the same planes in space
    assert not metal_planes(_phantom("cervical").ct, _phantom("cervical").ct.affine, 10).any()


def test_streaks_from_screws_do_not_pass_for_ribs():
    """Screws throw bright streaks across their planes; one touching a vertebra reaches as far as a rib, so a
    count that took them for ribs calls the screwed lumbar vertebrae thoracic. Away from the metal's planes, the
    ribs keep the count."""
    phantom = _screwed_lumbar_phantom()
    reference, bone = phantom.labels.array, phantom.ct.array > BONE_HU
    reach = _reach_by_name(reference, bone)
    assert reach["L1"] > 60 and reach["L3"] < 42  # L1 has screws, L3 none
    fooled = reference.copy()
    for name in ("L1", "L2", "L3", "L4"):
        fooled[reference == TABLE.by_name(name).value] = TABLE.by_name("T6").value
    probs = 0.9 * seamed_probabilities(fooled) + 0.1 * seamed_probabilities(reference)
    truth = names_top_down(reference)
    assert names_top_down(label_by_regions(probs, phantom.labels.affine, bone=bone))[-1] != "sacrum"
    metal = metal_planes(phantom.ct, phantom.ct.affine, reference.shape[2])
    found = names_top_down(label_by_regions(probs, phantom.labels.affine, bone=bone, metal=metal))
    assert found == truth[-len(found):] and len(found) >= len(truth) - 1  # the top sliver of T11 may go


@pytest.mark.parametrize("covered", ["top", "all"])
def test_vertebrae_wholly_in_the_metal_planes_say_nothing_of_ribs(covered):
    """A long fusion: the vertebrae in the metal's planes are left out of the rib witness, whichever they are,
    and where they all are, the count is the network's own."""
    reference, probs, affine = _fooled_thoracic_view()
    bone = _phantom("thoracic").ct.array > BONE_HU
    metal = np.zeros(reference.shape[2], dtype=bool)
    metal[(reference.shape[2] * 2) // 3 if covered == "top" else 0:] = True
    found = names_top_down(label_by_regions(probs, affine, bone=bone, metal=metal))
    if covered == "all":
        assert found == names_top_down(label_by_regions(probs, affine))
    else:
        assert found[-2:] == ["L1", "L2"]  # the ribs below the metal still end the thoracic spine at T12
    instances = np.zeros((4, 4, 4), dtype=np.int32)
    instances[1:3, 1:3, 1:3] = 1
    assert len(lateral_reach(np.zeros((4, 4, 4), dtype=bool), instances, (1.0, 1.0, 1.0), count=3)) == 3
