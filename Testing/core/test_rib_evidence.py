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
    THORACIC_HALF_WIDTH_MM,
    bone_mask,
    lateral_reach,
    rib_log_likelihood,
    trim_ribs,
)

TABLE = load_label_table()
REGIONS = np.array([label.region for label in TABLE.labels])


@functools.cache
def _phantom(region: str):
    return generate_phantom(PhantomConfig(seed=5, region=region, spacing=(2.0, 2.0, 2.0), lesions=0))


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
