"""Post-processing: consistent numbering of vertebra instances and lesion peaks."""

import numpy as np
import pytest

from SpineSegLib.labels import load_label_table
from SpineSegLib.lesion_scores import LesionCalibration
from SpineSegLib.postprocess import consistent_numbering, detect_lesions, label_vertebrae, refine_labels

TABLE = load_label_table()
RANK = {name: i for i, name in enumerate(TABLE.names)}


def _log_probs(names_believed, confidence=0.6):
    """Instances whose class probability favours the given names, the rest spread evenly."""
    k = len(TABLE)
    rows = []
    for name in names_believed:
        p = np.full(k, (1 - confidence) / (k - 1))
        p[RANK[name]] = confidence
        rows.append(np.log(p))
    return np.array(rows)


def _names(ranks):
    return [TABLE.names[r] for r in ranks]


def test_correct_sequence_is_kept():
    names = ["T11", "T12", "L1", "L2", "L3"]
    assert _names(consistent_numbering(_log_probs(names))) == names


def test_a_vertebra_labelled_twice_is_renumbered_from_its_neighbours():
    believed = ["L1", "L2", "L2", "L4", "L5", "sacrum"]
    assert _names(consistent_numbering(_log_probs(believed))) == ["L1", "L2", "L3", "L4", "L5", "sacrum"]


def test_off_by_one_minority_is_outvoted():
    believed = ["T5", "T6", "T8", "T8", "T9", "T10"]  # one instance mistaken for its lower neighbour
    assert _names(consistent_numbering(_log_probs(believed))) == ["T5", "T6", "T7", "T8", "T9", "T10"]


def test_transitional_vertebrae_need_evidence():
    plain = ["T11", "T12", "L1", "L2"]
    assert _names(consistent_numbering(_log_probs(plain))) == plain
    with_t13 = ["T11", "T12", "T13", "L1", "L2"]
    assert _names(consistent_numbering(_log_probs(with_t13, confidence=0.9))) == with_t13
    with_l6 = ["L4", "L5", "L6", "sacrum"]
    assert _names(consistent_numbering(_log_probs(with_l6, confidence=0.9))) == with_l6


def test_the_sacrum_may_come_in_pieces():
    """The sacrum's tip cut off by the view, or S1 apart from the rest: both pieces are sacrum, and the vertebra
    above is still L5."""
    believed = ["L3", "L4", "L5", "sacrum", "sacrum"]
    assert _names(consistent_numbering(_log_probs(believed, confidence=0.9), sacrum_in_pieces=True)) == believed
    # without it (numbering by levels, where each instance is one vertebra) the piece takes a transitional L6
    assert _names(consistent_numbering(_log_probs(believed, confidence=0.9))) == ["L3", "L4", "L5", "L6", "sacrum"]


def _blocks(values, shape=(20, 20, 80)):
    """Class probabilities of a stack of vertebra blocks along S, top first, each predicted as ``values``."""
    probs = np.zeros((TABLE.num_classes, *shape), dtype=np.float32)
    probs[0] = 1.0
    lut = TABLE.value_to_class_lut()
    for n, value in enumerate(values):
        k_hi = shape[2] - 2 - n * 12
        view = (slice(5, 15), slice(5, 15), slice(k_hi - 9, k_hi))
        probs[0][view] = 0.1
        probs[lut[value]][view] = 0.9
    return probs


def test_label_vertebrae_orders_instances_cranio_caudally_and_removes_islands():
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    values = [TABLE.by_name(n).value for n in ["L1", "L2", "L2", "L4"]]
    probs = _blocks(values)
    probs[0, 0, 0, 0], probs[TABLE.value_to_class_lut()[25], 0, 0, 0] = 0.0, 1.0  # a one-voxel island
    labels = label_vertebrae(probs, affine, min_volume_mm3=50)
    found = [int(labels[10, 10, k]) for k in (74, 62, 50, 38)]
    assert [TABLE.by_value(v).name for v in found] == ["L1", "L2", "L3", "L4"]
    assert labels[0, 0, 0] == 0


def test_label_vertebrae_on_an_lps_grid_still_orders_by_superior_position():
    affine = np.diag([-2.0, -2.0, -2.0, 1.0])  # k runs inferior: the first block in k is the lowest
    values = [TABLE.by_name(n).value for n in ["L4", "L3", "L2", "L1"]]
    labels = label_vertebrae(_blocks(values), affine, min_volume_mm3=50)
    assert [TABLE.by_value(int(labels[10, 10, k])).name for k in (74, 62, 50, 38)] == ["L4", "L3", "L2", "L1"]


def test_refine_labels_takes_names_from_the_coarse_pass_and_the_shape_from_the_fine_pass():
    l1, l2 = TABLE.by_name("L1").value, TABLE.by_name("L2").value
    named = np.zeros((30, 30, 60), dtype=np.uint8)  # the coarse pass: blocky, larger than the bone
    named[8:22, 8:22, 34:52] = l1
    named[8:22, 8:22, 4:26] = l2
    bone = np.zeros(named.shape, dtype=bool)  # the fine pass
    bone[10:20, 10:20, 36:50] = True  # L1's body
    bone[14:16, 20:30, 40:42] = True  # ... with a rib running 8 mm beyond the coarse label
    bone[10:20, 10:20, 6:24] = True  # L2's body
    bone[20:24, 14:16, 10:12] = True  # ... with a process the coarse label missed by 2 mm
    bone[8, 8, 4] = True  # a speck inside L2's coarse label, not touching its body
    labels = refine_labels(named, bone, spacing=(1.0, 1.0, 1.0), reach_mm=6.0)
    assert (labels[10:20, 10:20, 36:50] == l1).all() and (labels[10:20, 10:20, 6:24] == l2).all()
    assert (labels[20:24, 14:16, 10:12] == l2).all()  # within reach: the nearest vertebra's
    assert labels[15, 25, 41] == l1 and labels[15, 28, 41] == 0  # the rib is cut 6 mm from the vertebra
    assert labels[8, 8, 4] == 0  # each vertebra keeps its largest part
    assert not labels[~bone].any()  # nothing outside the fine pass's bone


def test_detect_lesions_peaks_nms_class_and_vertebra():
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    shape = (40, 40, 40)
    heat = np.zeros((3, *shape), dtype=np.float32)
    heat[1] = 0.9 * _gaussian(shape, (10, 10, 10), 2.0) + 0.85 * _gaussian(shape, (12, 10, 10), 2.0)  # one lesion
    heat[2] = 0.7 * _gaussian(shape, (30, 30, 30), 3.0)
    heat[0] = 0.2 * _gaussian(shape, (20, 20, 20), 2.0)  # below threshold
    labels = np.zeros(shape, dtype=np.uint8)
    labels[5:16, 5:16, 5:16] = TABLE.by_name("L1").value
    lesions = detect_lesions(heat, affine, labels, threshold=0.3, nms_radius_mm=5.0)
    assert len(lesions) == 2
    first, second = lesions
    assert first["class"] == "lytic" and first["vertebra"] == "L1" and first["score"] > second["score"]
    assert np.allclose(first["center_ras"], [10, 10, 10], atol=1.5)
    assert second["class"] == "sclerotic" and second["vertebra"] is None
    assert 3 < second["size_mm"] < 15


def _gaussian(shape, centre, sigma):
    grid = np.indices(shape).astype(np.float32)
    return np.exp(-((grid - np.array(centre)[:, None, None, None]) ** 2).sum(0) / (2 * sigma**2))


def test_a_vertebra_has_one_fracture_however_many_peaks_its_body_raises():
    shape, affine = (40, 40, 60), np.eye(4)
    heat = np.zeros((3, *shape), dtype=np.float32)
    heat[0] = 0.6 * _gaussian(shape, (20, 20, 12), 2.0) + 0.5 * _gaussian(shape, (20, 20, 22), 2.0)  # 10 mm apart
    heat[0] += 0.4 * _gaussian(shape, (20, 20, 45), 2.0)  # the next vertebra's own fracture
    labels = np.zeros(shape, dtype=np.uint8)
    labels[10:30, 10:30, 5:30] = TABLE.by_name("L1").value
    labels[10:30, 10:30, 35:55] = TABLE.by_name("L2").value
    lesions = detect_lesions(heat, affine, labels, threshold=0.3, nms_radius_mm=5.0)
    assert [(les["vertebra"], les["score"]) for les in lesions] == [("L1", 0.6), ("L2", 0.4)]
    assert lesions[0]["size_mm"] == round(float(np.cbrt(20 * 20 * 25)), 1)  # the body's size, not the peak's


def test_a_calibration_ranks_every_class_on_one_scale():
    """A fracture peak of 0.5 from a class that over-calls falls below a sclerotic peak of 0.4 and off the list."""
    shape, affine = (40, 40, 40), np.eye(4)
    heat = np.zeros((3, *shape), dtype=np.float32)
    heat[0] = 0.5 * _gaussian(shape, (10, 10, 10), 2.0)
    heat[2] = 0.4 * _gaussian(shape, (30, 30, 30), 2.0)
    heat[1] = 0.04 * _gaussian(shape, (10, 30, 30), 2.0)  # under the candidate threshold: never scored
    labels = np.zeros(shape, dtype=np.uint8)
    calibration = LesionCalibration("fine", 0.05, 0.3, {"fracture": (1.0, -2.0), "lytic": (1.0, 0.0),
                                                        "sclerotic": (1.0, 1.0)}, {"sclerotic": 2.0})
    raw = detect_lesions(heat, affine, labels, threshold=0.3)
    assert [les["class"] for les in raw] == ["fracture", "sclerotic"]
    calibrated = detect_lesions(heat, affine, labels, threshold=0.3, calibration=calibration)
    assert [les["class"] for les in calibrated] == ["sclerotic"]
    (lesion,) = calibrated
    assert lesion["id"] == 1 and lesion["peak"] == 0.4
    assert lesion["size_mm"] == pytest.approx(2 * raw[1]["size_mm"], abs=0.11)
    assert lesion["score"] == pytest.approx(1 / (1 + np.exp(-(np.log(0.4 / 0.6) + 1.0))), abs=1e-3)
    low = detect_lesions(heat, affine, labels, threshold=0.0, calibration=calibration)
    assert [les["class"] for les in low] == ["sclerotic", "fracture"]  # ranked on calibrated scores
