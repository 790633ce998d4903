"""Evaluation metrics and statistics against hand-computed values (spineseg_train.metrics)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spineseg_train.metrics import (
    accuracy_per_class,
    assd,
    average_precision,
    bootstrap_ci,
    box_iou_3d,
    centroids_mm,
    dice_per_class,
    evaluate_lesions,
    hd95,
    holm_bonferroni,
    id_accuracy,
    identification_metrics,
    identification_rate,
    iou_per_class,
    match_lesions,
    per_label_surface_metrics,
    per_vertebra_dice,
    per_vertebra_instance_dice,
    pooled_ranking,
    recall_at_fp_per_scan,
    score_at_fp,
    segmentation_scores,
    spine_dice,
    surface_metrics,
    wilcoxon_paired,
)
from spineseg_train.metrics.segmentation import surface_voxels


# --- segmentation: overlap ------------------------------------------------------------------------------------
def _overlap_example() -> tuple[np.ndarray, np.ndarray]:
    """3×3×3: reference label 1 on slice i=0, label 2 on i=1, background on i=2.

    Prediction: label 1 on slice 0 but one voxel missed, plus one voxel of label 1 on slice 2
    (label 1: TP 8, FP 1, FN 1); slice 1 has label 2 on 6 voxels and label 3 on 3 (label 2: TP 6, FN 3;
    label 3: FP 3, not in the reference).
    """
    ref = np.zeros((3, 3, 3), dtype=np.uint8)
    ref[0], ref[1] = 1, 2
    pred = np.zeros_like(ref)
    pred[0] = 1
    pred[0, 0, 0] = 0
    pred[2, 2, 2] = 1
    pred[1] = 2
    pred[1, 2, :] = 3
    return pred, ref


def test_dice_iou_accuracy_from_known_counts():
    pred, ref = _overlap_example()
    assert dice_per_class(pred, ref, [1, 2, 3]) == pytest.approx({1: 16 / 18, 2: 12 / 15, 3: 0.0})
    assert iou_per_class(pred, ref, [1, 2, 3]) == pytest.approx({1: 8 / 10, 2: 6 / 9, 3: 0.0})
    acc = accuracy_per_class(pred, ref, [1, 2, 3])
    assert acc[1] == pytest.approx(8 / 9) and acc[2] == pytest.approx(6 / 9) and math.isnan(acc[3])


def test_means_are_over_classes_in_the_reference():
    pred, ref = _overlap_example()
    scores = segmentation_scores(pred, ref)
    assert sorted(scores["dice"]) == [1, 2, 3]  # every non-background value of either map
    assert scores["labels_in_reference"] == [1, 2]
    assert scores["mDice"] == pytest.approx((16 / 18 + 12 / 15) / 2)
    assert scores["mIoU"] == pytest.approx((8 / 10 + 6 / 9) / 2)
    assert scores["mAcc"] == pytest.approx((8 / 9 + 6 / 9) / 2)
    with_background = segmentation_scores(pred, ref, include_background=True)
    assert with_background["dice"][0] == pytest.approx(16 / 18)  # background: TP 8, FP 1, FN 1


def test_absent_classes_and_per_vertebra_dice():
    pred, ref = _overlap_example()
    assert math.isnan(dice_per_class(pred, ref, [4])[4])  # absent from both
    assert per_vertebra_dice(pred, ref, [1, 2, 3, 4]) == pytest.approx({1: 16 / 18, 2: 12 / 15})
    assert per_vertebra_dice(np.zeros_like(ref), ref, [1]) == {1: 0.0}
    assert math.isnan(segmentation_scores(pred, np.zeros_like(ref))["mDice"])


def test_vertebrae_named_one_level_off_score_on_instance_dice_only():
    ref = np.zeros((4, 4, 12), dtype=np.uint8)
    ref[..., 0:4], ref[..., 4:8], ref[..., 8:12] = 8, 9, 10  # T1, T2, T3
    shifted = ref + 1  # the same vertebrae, each named one level down
    assert per_vertebra_dice(shifted, ref, [8, 9, 10]) == {8: 0.0, 9: 0.0, 10: 0.0}
    assert per_vertebra_instance_dice(shifted, ref, [8, 9, 10]) == pytest.approx({8: 1.0, 9: 1.0, 10: 1.0})
    assert spine_dice(shifted, ref) == 1.0


def test_merged_vertebrae_score_low_on_instance_dice():
    ref = np.zeros((4, 4, 12), dtype=np.uint8)
    ref[..., 0:4], ref[..., 4:8], ref[..., 8:12] = 8, 9, 10
    merged = np.where(ref == 10, 9, ref)  # T2 and T3 found as one
    scores = per_vertebra_instance_dice(merged, ref, [8, 9, 10])
    assert scores == pytest.approx({8: 1.0, 9: 2 * 64 / (64 + 128), 10: 2 * 64 / (64 + 128)})
    assert per_vertebra_instance_dice(np.zeros_like(ref), ref, [8]) == {8: 0.0}
    half = ref.copy()
    half[:2] = 0
    assert spine_dice(half, ref) == pytest.approx(2 * 96 / (96 + 192))


# --- segmentation: surface distances --------------------------------------------------------------------------
def test_surface_voxels_of_a_cube():
    mask = np.zeros((5, 5, 5), dtype=bool)
    mask[1:4, 1:4, 1:4] = True
    assert surface_voxels(mask).sum() == 26  # 27 voxels, one interior
    assert surface_voxels(np.ones((3, 3, 3), dtype=bool)).sum() == 26  # the array border counts as outside


def test_hd95_and_assd_of_offset_cubes_with_anisotropic_spacing():
    """2×2×2 cubes (all voxels on the surface), the second shifted by (3, 1, 0) voxels; spacing (2, 1, 0.5) mm.

    Each voxel's nearest voxel of the other cube is 2 or 3 voxels away along i (4 or 6 mm) and 0 or 1 voxel
    along j (0 or 1 mm): distances {4, √17, 6, √37}, each twice per direction.
    """
    a = np.zeros((10, 8, 8), dtype=bool)
    b = np.zeros_like(a)
    a[2:4, 2:4, 2:4] = True
    b[5:7, 3:5, 2:4] = True
    spacing = (2.0, 1.0, 0.5)
    assert hd95(a, b, spacing) == pytest.approx(math.sqrt(37))  # 95th percentile of 8 values = the largest two
    assert assd(a, b, spacing) == pytest.approx((4 + math.sqrt(17) + 6 + math.sqrt(37)) / 4)
    assert surface_metrics(a, b, spacing)["hd"] == pytest.approx(math.sqrt(37))
    assert hd95(a, a, spacing) == 0.0


def test_surface_metrics_of_empty_masks_are_nan():
    a = np.zeros((4, 4, 4), dtype=bool)
    b = a.copy()
    b[1, 1, 1] = True
    assert all(math.isnan(v) for v in surface_metrics(a, b, (1, 1, 1)).values())
    assert math.isnan(hd95(a, a, (1, 1, 1))) and math.isnan(assd(b, a, (1, 1, 1)))


@pytest.mark.filterwarnings("ignore::FutureWarning")  # MONAI's own deprecated argument, passed internally
def test_surface_metrics_agree_with_monai():
    torch = pytest.importorskip("torch")
    monai_metrics = pytest.importorskip("monai.metrics")
    i, j, k = np.indices((24, 20, 16))
    a = (i - 11) ** 2 + (j - 9) ** 2 + ((k - 8) * 1.5) ** 2 < 36
    b = (i - 13) ** 2 / 1.4 + (j - 10) ** 2 + ((k - 7) * 1.2) ** 2 < 30
    spacing = (0.8, 1.1, 2.5)

    def one_hot(mask):
        return torch.from_numpy(np.stack([~mask, mask])[None].astype(np.float32))

    monai_hd95 = monai_metrics.compute_hausdorff_distance(one_hot(a), one_hot(b), percentile=95, spacing=spacing)
    monai_assd = monai_metrics.compute_average_surface_distance(one_hot(a), one_hot(b), symmetric=True, spacing=spacing)
    assert hd95(a, b, spacing) == pytest.approx(float(monai_hd95), rel=1e-5)
    assert assd(a, b, spacing) == pytest.approx(float(monai_assd), rel=1e-5)


def test_per_label_surface_metrics_only_for_reference_labels():
    ref = np.zeros((6, 6, 6), dtype=np.uint8)
    ref[1:3, 1:3, 1:3] = 20
    pred = ref.copy()
    pred[pred == 20] = 21
    result = per_label_surface_metrics(pred, ref, (1, 1, 1), [20, 21])
    assert list(result) == [20] and math.isnan(result[20]["hd95"])


# --- identification -------------------------------------------------------------------------------------------
def _z(z: float) -> np.ndarray:
    return np.array([0.0, 0.0, z])


def test_identification_rate_with_shifted_and_mislabelled_centroids():
    ref = {20: _z(0), 21: _z(30), 22: _z(60), 23: _z(90)}
    pred = {
        20: _z(0),  # exact: identified
        21: _z(45),  # shifted 15 mm, still the closest: identified
        24: _z(60),  # right place, wrong label: not identified
        23: _z(115),  # closest to ref 23 but 25 mm away: not identified
    }
    result = identification_rate(pred, ref)
    assert result.rate == 0.5 and result.n_identified == 2 and result.n_reference == 4
    by_label = {d["label"]: d for d in result.details}
    assert by_label[21]["identified"] and by_label[21]["closest_distance_mm"] == pytest.approx(15)
    assert by_label[22]["closest_pred_label"] == 24 and not by_label[22]["identified"]
    assert by_label[23]["closest_pred_label"] == 23 and by_label[23]["closest_distance_mm"] == pytest.approx(25)
    assert math.isnan(by_label[22]["localisation_mm"])
    assert result.mean_localisation_mm == pytest.approx((0 + 15 + 25) / 3)
    assert identification_rate(pred, ref, max_distance_mm=30).rate == 0.75

    matched = id_accuracy(pred, ref)  # pairs ≤ 20 mm: 20-20, 21-21, 22-24 (and 22-21); 23 unmatched
    assert matched.accuracy == 0.5 and matched.n_matched == 3 and matched.n_correct == 2


def test_id_accuracy_uses_one_to_one_matching():
    """Both predictions sit 6 mm caudal; ref 2's nearest prediction is label 1, but Hungarian pairs 1-1, 2-2."""
    ref = {1: _z(0), 2: _z(10)}
    pred = {1: _z(6), 2: _z(16)}
    assert identification_rate(pred, ref).rate == 0.5
    assert id_accuracy(pred, ref).accuracy == 1.0
    assert math.isnan(identification_rate(pred, {}).rate)
    assert id_accuracy({}, ref).accuracy == 0.0


def test_centroids_in_mm_and_metrics_from_label_maps():
    labels = np.zeros((5, 4, 6), dtype=np.uint8)
    labels[1, 2, 3] = labels[3, 2, 3] = 5
    labels[0, 0, 0] = 7
    affine = np.array([[2.0, 0, 0, -10], [0, 1, 0, 5], [0, 0, 0.5, 0], [0, 0, 0, 1]])
    centroids = centroids_mm(labels, affine)
    assert sorted(centroids) == [5, 7]
    np.testing.assert_allclose(centroids[5], [-6.0, 7.0, 1.5])  # mean index (2, 2, 3)
    np.testing.assert_allclose(centroids[7], [-10.0, 5.0, 0.0])
    assert list(centroids_mm(labels, affine, [5])) == [5]

    metrics = identification_metrics(labels, labels, affine)
    assert metrics["id_rate"] == 1.0 and metrics["id_accuracy"] == 1.0 and metrics["mean_localisation_mm"] == 0


# --- lesions --------------------------------------------------------------------------------------------------
def _lesion(x, y, z, cls, size=10.0, score=None):
    lesion = {"center_ras": [x, y, z], "size_mm": size, "class": cls}
    if score is not None:
        lesion["score"] = score
    return lesion


def _lesion_cases():
    """Scan 1: a hit (P1 on R1), a wrong-class hit (P2 lytic on sclerotic R2), a false positive (P3), a miss (R3).
    Scan 2: a hit (P4 on R4) and two false positives (P5, P6)."""
    scan1_refs = [_lesion(0, 0, 0, "lytic"), _lesion(50, 0, 0, "sclerotic"), _lesion(100, 0, 0, "fracture")]
    scan1_preds = [
        _lesion(1, 0, 0, "lytic", score=0.9),  # P1: IoU 9/11, 1 mm
        _lesion(50, 1, 0, "lytic", score=0.8),  # P2
        _lesion(200, 0, 0, "sclerotic", score=0.7),  # P3
    ]
    scan2_refs = [_lesion(0, 0, 0, "lytic")]
    scan2_preds = [
        _lesion(0, 0, 2, "lytic", score=0.6),  # P4: IoU 8/12, 2 mm
        _lesion(30, 30, 30, "lytic", score=0.95),  # P5
        _lesion(-40, 0, 0, "lytic", score=0.65),  # P6
    ]
    return [(scan1_preds, scan1_refs), (scan2_preds, scan2_refs)]


def test_box_iou():
    iou = box_iou_3d([[0, 0, 0]], [10], [[5, 0, 0], [0, 0, 0], [20, 0, 0]], [10, 10, 10])
    np.testing.assert_allclose(iou, [[500 / 1500, 1.0, 0.0]])
    np.testing.assert_allclose(box_iou_3d([[0, 0, 0]], [[10, 10, 2]], [[0, 0, 0]], [10]), [[0.2]])


def test_matching_hit_miss_false_positive_and_wrong_class():
    (preds, refs), _ = _lesion_cases()
    aware = match_lesions(preds, refs)
    assert [m[:2] for m in aware["matches"]] == [(0, 0)]
    assert aware["matches"][0][2] == pytest.approx(9 / 11) and aware["matches"][0][3] == pytest.approx(1)
    assert aware["unmatched_preds"] == [1, 2] and aware["unmatched_refs"] == [1, 2]
    agnostic = match_lesions(preds, refs, class_aware=False)
    assert sorted(m[:2] for m in agnostic["matches"]) == [(0, 0), (1, 1)]
    assert match_lesions(preds, refs, score_threshold=0.95)["unmatched_refs"] == [0, 1, 2]


def test_matching_distance_tolerance_and_hungarian():
    ref = [_lesion(0, 0, 0, "lytic", size=30)]
    pred = [_lesion(6, 0, 0, "lytic", size=30, score=1.0)]  # IoU 24/36 but 6 mm off
    assert match_lesions(pred, ref)["matches"] == []
    assert len(match_lesions(pred, ref, max_center_distance_mm=8)["matches"]) == 1
    # p0 may match either reference, p1 only the first: a greedy "nearest first" could leave p1 unmatched
    refs = [_lesion(0, 0, 0, "lytic"), _lesion(4, 0, 0, "lytic")]
    preds = [_lesion(1.5, 0, 0, "lytic", score=0.9), _lesion(-3, 0, 0, "lytic", score=0.8)]
    assert sorted(m[:2] for m in match_lesions(preds, refs)["matches"]) == [(0, 1), (1, 0)]


def test_average_precision_per_class_and_class_agnostic_by_hand():
    result = evaluate_lesions(_lesion_cases())
    per_class = result["per_class"]
    # lytic ranking P5 fp, P1 tp, P2 fp, P6 fp, P4 tp over 2 refs: precision 0, 1/2, 1/3, 1/4, 2/5 at
    # recall 0, 1/2, 1/2, 1/2, 1; envelope 1/2 on (0, 1/2], 2/5 on (1/2, 1]: AP = 0.25 + 0.2
    assert per_class["lytic"]["ap"] == pytest.approx(0.45)
    assert per_class["sclerotic"]["ap"] == 0.0 and per_class["fracture"]["ap"] == 0.0
    assert result["mAP"] == pytest.approx(0.45 / 3)
    assert per_class["lytic"]["precision"] == pytest.approx(2 / 5) and per_class["lytic"]["recall"] == 1.0
    assert per_class["sclerotic"]["recall"] == 0.0 and math.isnan(per_class["fracture"]["precision"])
    # class-agnostic: P5 fp, P1 tp, P2 tp, P3 fp, P6 fp, P4 tp over 4 refs: envelope 2/3 up to recall 1/2,
    # 1/2 on (1/2, 3/4]: AP = 0.5 * 2/3 + 0.25 * 0.5
    agnostic = result["class_agnostic"]
    assert agnostic["ap"] == pytest.approx(2 / 6 + 0.125)
    assert (agnostic["tp"], agnostic["fp"], agnostic["fn"]) == (3, 3, 1)
    # FROC over 2 scans: after P3, 2 FP (1 per scan) and 2 of 4 found; all predictions: 1.5 per scan, 3 of 4
    assert result["froc"]["class_agnostic"] == {1.0: 0.5, 4.0: 0.75}
    assert result["froc"]["class_aware"] == {1.0: 0.25, 4.0: 0.5}


def test_recall_at_fp_per_scan():
    cases = _lesion_cases()
    assert recall_at_fp_per_scan(cases) == 0.5
    assert recall_at_fp_per_scan(cases, fp_per_scan=4.0) == 0.75
    assert recall_at_fp_per_scan(cases, fp_per_scan=0.4) == 0.0  # the top prediction is already a FP
    assert recall_at_fp_per_scan(cases, class_aware=True) == 0.25
    normal_scans = cases + [([_lesion(0, 0, 0, "lytic", score=0.1)], [])] * 2  # 4 scans: 1 FP/scan = 4 FP
    assert recall_at_fp_per_scan(normal_scans) == 0.75
    assert math.isnan(recall_at_fp_per_scan([([], [])]))


def test_score_at_fp_is_the_threshold_of_that_operating_point():
    ranking = pooled_ranking(_lesion_cases(), class_aware=False)
    # descending: P5 fp, P1, P2, P3 fp (2 FP over 2 scans), P6 fp, P4: down to P3's 0.7 it is 1 FP per scan
    assert score_at_fp(ranking, 1.0) == 0.7
    assert score_at_fp(ranking, 4.0) == 0.6  # every detection
    assert math.isnan(score_at_fp(ranking, 0.4))  # the top detection is already a false positive


def test_average_precision_edge_cases():
    assert average_precision(np.array([1.0, 1.0]), np.array([0.5, 1.0])) == 1.0
    assert average_precision(np.zeros(0), np.zeros(0)) == 0.0
    result = evaluate_lesions([([_lesion(0, 0, 0, "lytic", score=0.5)], [])], classes=["lytic", "fracture"])
    assert math.isnan(result["per_class"]["lytic"]["ap"]) and math.isnan(result["mAP"])


def test_tied_scores_are_one_threshold():
    refs = [_lesion(0, 0, 0, "lytic")]
    preds = [_lesion(50, 0, 0, "lytic", score=0.5), _lesion(0, 0, 0, "lytic", score=0.5)]
    # one point (precision 1/2, recall 1) whatever the order of the tied predictions
    assert evaluate_lesions([(preds, refs)])["per_class"]["lytic"]["ap"] == 0.5
    assert evaluate_lesions([(preds[::-1], refs)])["per_class"]["lytic"]["ap"] == 0.5


_random_lesion = st.builds(
    lambda x, size, cls, score: _lesion(x, 0, 0, cls, size=size, score=score),
    st.integers(0, 12).map(float),
    st.sampled_from([4.0, 8.0]),
    st.sampled_from(["lytic", "sclerotic"]),
    st.sampled_from([0.2, 0.4, 0.6, 0.8]),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.lists(_random_lesion, max_size=5), st.lists(_random_lesion, max_size=3)), max_size=3))
def test_ranking_counts_the_maximum_matching_at_every_threshold(cases):
    """The pooled curve's TP at a score equals the Hungarian matches of the predictions scoring at least that."""
    for class_aware in (True, False):
        ranking = pooled_ranking(cases, class_aware=class_aware)
        for score, tp in zip(ranking["scores"], ranking["tp"], strict=True):
            direct = sum(
                len(match_lesions(p, r, class_aware=class_aware, score_threshold=score)["matches"]) for p, r in cases
            )
            assert tp == direct


# --- statistics -----------------------------------------------------------------------------------------------
def test_bca_interval_covers_the_mean_at_about_the_nominal_rate():
    rng = np.random.default_rng(1234)
    hits = 0
    for repetition in range(200):
        sample = rng.normal(5.0, 2.0, size=30)
        ci = bootstrap_ci(sample, n_resamples=500, seed=repetition)
        hits += ci.low <= 5.0 <= ci.high
    assert 0.88 <= hits / 200 <= 0.99


def test_patient_level_bootstrap_covers_clustered_data_where_value_level_does_not():
    """30 patients × 3 strongly correlated values: resampling values pretends there are 90 independent ones."""
    rng = np.random.default_rng(99)
    patient_ids = np.repeat(np.arange(30), 3)
    by_patient = by_value = 0
    for repetition in range(200):
        values = rng.normal(0, 1, 30)[patient_ids] + rng.normal(0, 0.3, 90)
        ci = bootstrap_ci(values, patient_ids, n_resamples=500, seed=repetition)
        by_patient += ci.low <= 0 <= ci.high
        naive = bootstrap_ci(values, n_resamples=500, seed=repetition)
        by_value += naive.low <= 0 <= naive.high
    assert 0.88 <= by_patient / 200 <= 0.99
    assert by_value / 200 < 0.85


def test_bootstrap_keeps_each_patients_values_together():
    patient_ids = np.repeat(np.arange(8), 3)
    values = 10.0 * patient_ids + np.tile([0, 1, 2], 8)  # patient p holds 10p, 10p + 1, 10p + 2
    calls = []

    def statistic(pooled: np.ndarray) -> float:
        patient, member = np.divmod(pooled.astype(int), 10)
        counts = np.zeros((8, 3), dtype=int)
        np.add.at(counts, (patient, member), 1)
        calls.append(bool(np.all(counts == counts[:, :1])))  # each patient drawn k times holds k × each value
        return float(np.median(pooled))

    ci = bootstrap_ci(values, patient_ids, statistic, n_resamples=300, seed=3)
    assert len(calls) > 300 and all(calls)
    assert ci.n_patients == 8 and ci.low <= ci.estimate <= ci.high


def test_bootstrap_is_seeded_and_handles_constant_values():
    values = np.random.default_rng(0).normal(size=25)
    assert bootstrap_ci(values, n_resamples=400, seed=7) == bootstrap_ci(values, n_resamples=400, seed=7)
    constant = bootstrap_ci(np.full(10, 0.9), n_resamples=100)
    assert (constant.low, constant.estimate, constant.high) == (0.9, 0.9, 0.9)
    with pytest.raises(ValueError):
        bootstrap_ci([1.0, 2.0], patient_ids=["a", "a"])


def test_wilcoxon_paired():
    rng = np.random.default_rng(5)
    baseline = rng.uniform(0.7, 0.9, size=20)
    model = baseline + 0.03 + rng.normal(0, 0.01, size=20)
    result = wilcoxon_paired(model, baseline)
    assert result.pvalue < 0.01 and result.n_pairs == 20 and result.median_difference > 0
    same = wilcoxon_paired(baseline, baseline)
    assert same.pvalue == 1.0 and math.isnan(same.statistic)
    ids = [f"p{i}" for i in range(20)]
    shuffled = dict(reversed(list(zip(ids, baseline, strict=True))))
    by_id = wilcoxon_paired(dict(zip(ids, model, strict=True)), shuffled)
    assert by_id.pvalue == pytest.approx(result.pvalue)
    with_nan = wilcoxon_paired(np.r_[model, np.nan], np.r_[baseline, 0.5])
    assert with_nan.n_pairs == 20 and with_nan.pvalue == pytest.approx(result.pvalue)


def test_holm_bonferroni_hand_example():
    # sorted 0.005, 0.01, 0.03, 0.04 → ×4, ×3, ×2, ×1 = 0.02, 0.03, 0.06, 0.04 → monotone 0.02, 0.03, 0.06, 0.06
    adjusted, reject = holm_bonferroni([0.01, 0.04, 0.03, 0.005])
    np.testing.assert_allclose(adjusted, [0.03, 0.06, 0.06, 0.02])
    assert reject.tolist() == [True, False, False, True]
    adjusted, reject = holm_bonferroni([0.02, np.nan, 0.5])  # nan ignored: m = 2
    np.testing.assert_allclose(adjusted, [0.04, np.nan, 0.5])
    assert reject.tolist() == [True, False, False]
    assert holm_bonferroni([0.6, 0.7])[0].tolist() == [1.0, 1.0]
