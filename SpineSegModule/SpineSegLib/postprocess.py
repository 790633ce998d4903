"""From network probabilities to clean results: vertebra instances, consistent numbering, lesion peaks.

Numbering consistency is decided per vertebra instance, not per voxel: every connected component of a
predicted class is an instance; instances are ordered cranio-caudally and given the label sequence that
maximises their summed log-probabilities under the anatomy's rule that labels follow each other
(C1..C7, T1..T12, [T13], L1..L5, [L6], sacrum). This fixes the classic "off by one" and "labelled twice"
errors that voxel-wise arg-max makes when a vertebra looks like its neighbour.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .labels import LabelTable, load_label_table
from .lesion_scores import LesionCalibration

VARIANT_PENALTY = 2.0  # log-odds a transitional vertebra must win by
SKIP_PENALTY = 6.0  # log-odds against a missing vertebra between two found ones
SACRAL_PIECE_PENALTY = 1.0  # log-odds against a second piece of sacrum (its tip cut off by the view, S1 apart)
MAX_PEAKS = 200  # heatmap peaks examined per scan, highest first
# Which pass names the vertebrae (model card ``postprocessing.identity_stage``): the fine pass alone, or the
# coarse pass, whose windows see the whole column, with the fine pass giving the shape (refine_labels).
IDENTITY_STAGES = ("fine", "coarse")
# How instances get their names (model card ``postprocessing.numbering``): from the network's per-vertebra
# classes ("levels"), or by counting along the column from the network's regions ("regions": the network tells
# cervical, thoracic, lumbar and sacral bone apart; see label_by_regions).
NUMBERINGS = ("levels", "regions")


@dataclass
class Instance:
    voxels: np.ndarray  # flat indices into the model grid
    centroid_ijk: np.ndarray
    log_prob: np.ndarray  # mean log class-probability over the instance, per label (no background)


def _label_successors(table: LabelTable, sacrum_in_pieces: bool = False) -> dict[int, list[tuple[int, float, bool]]]:
    """For each label index (cranio-caudal rank), the ranks that may follow it, the transition cost and whether a
    gap in the column argues for it: it skips a level, and not into the sacrum (whose centre lies further from
    L5's by anatomy, see :mod:`.column_gaps`)."""
    names = table.names
    rank = {name: i for i, name in enumerate(names)}
    successors: dict[int, list[tuple[int, float, bool]]] = {i: [] for i in range(len(names))}
    canonical = [n for n in names if not table.by_name(n).variant]
    for a, b in zip(canonical, canonical[1:]):
        successors[rank[a]].append((rank[b], 0.0, False))
    for variant, before, after in (("T13", "T12", "L1"), ("L6", "L5", "sacrum")):
        if variant in rank:
            successors[rank[before]].append((rank[variant], VARIANT_PENALTY, False))
            successors[rank[variant]].append((rank[after], 0.0, False))
    # The sacrum, five fused vertebrae, may come in pieces: each is sacrum (the caller keeps the largest).
    if sacrum_in_pieces and "sacrum" in rank:
        successors[rank["sacrum"]].append((rank["sacrum"], SACRAL_PIECE_PENALTY, False))
    # One missing vertebra between two found ones (e.g. merged into a neighbour): allowed, but costly.
    direct = {a: list(following) for a, following in successors.items()}
    for a in direct:
        for b, cost, _ in direct[a]:
            for c, cost2, _ in direct[b]:
                if all(c != s for s, _, _ in successors[a]):
                    successors[a].append((c, cost + cost2 + SKIP_PENALTY, names[c] != "sacrum"))
    return successors


def consistent_numbering(log_probs: np.ndarray, table: LabelTable | None = None,
                         sacrum_in_pieces: bool = False) -> list[int]:
    """Best label ranks for instances ordered cranio-caudally (rows of ``log_probs``, one column per label); with
    ``sacrum_in_pieces``, several instances at the bottom may all be the sacrum."""
    return scored_numbering(log_probs, table or load_label_table(), sacrum_in_pieces)[0]


def scored_numbering(log_probs: np.ndarray, table: LabelTable, sacrum_in_pieces: bool = False,
                     skip_log_odds: np.ndarray | None = None) -> tuple[list[int], float]:
    """:func:`consistent_numbering` with its score (summed log-probabilities less the transitions' costs). With
    ``skip_log_odds`` (per row: the log-odds that a vertebra is missing between it and the row above, see
    :mod:`.column_gaps`), a transition that skips a level there gains them (not one into the sacrum)."""
    n, k = log_probs.shape
    if n == 0:
        return [], 0.0
    successors = _label_successors(table, sacrum_in_pieces)
    gaps = np.zeros(n) if skip_log_odds is None else np.asarray(skip_log_odds, float)
    score = log_probs[0].copy()
    back = np.full((n, k), -1, dtype=np.int64)
    for row in range(1, n):
        new = np.full(k, -np.inf)
        for a in range(k):
            if not np.isfinite(score[a]):
                continue
            for b, cost, across_a_gap in successors[a]:
                candidate = score[a] - cost + log_probs[row, b] + (gaps[row] if across_a_gap else 0.0)
                if candidate > new[b]:
                    new[b], back[row, b] = candidate, a
        score = new
    ranks = [int(np.argmax(score))]
    for row in range(n - 1, 0, -1):
        ranks.append(int(back[row, ranks[-1]]))
    return ranks[::-1], float(score.max())


def vertebra_instances(probabilities: np.ndarray, min_voxels: int) -> tuple[np.ndarray, list[Instance]]:
    """Split the arg-max map into connected instances; small fragments join the instance they touch.

    ``probabilities``: (C, I, J, K) class probabilities, class 0 background. Returns the instance map
    (0 = background, n = instance n-1) and the instances.
    """
    # Foreground first, then the most likely vertebra: a voxel the network is sure is bone but unsure which
    # vertebra it belongs to must not fall to background just because its probability is spread over levels.
    classes = np.where(probabilities[0] < 0.5, probabilities[1:].argmax(axis=0) + 1, 0)
    shape = classes.shape
    instance_map = np.zeros(shape, dtype=np.int32)
    instances: list[Instance] = []
    fragments = np.zeros(shape, dtype=bool)
    structure = ndimage.generate_binary_structure(3, 1)
    for cls in np.unique(classes):
        if cls == 0:
            continue
        components, count = ndimage.label(classes == cls, structure)
        sizes = np.bincount(components.ravel(), minlength=count + 1)
        small = sizes < min_voxels
        small[0] = False
        fragments |= small[components]
        for component, box in enumerate(ndimage.find_objects(components), start=1):
            if box is None or small[component]:
                continue
            local = np.argwhere(components[box] == component) + [b.start for b in box]
            voxels = np.ravel_multi_index(local.T, shape)
            instance_map.flat[voxels] = len(instances) + 1
            log_prob = np.log(np.clip(probabilities[1:, local[:, 0], local[:, 1], local[:, 2]], 1e-6, 1.0))
            instances.append(Instance(voxels, local.mean(axis=0), log_prob.mean(axis=1)))
    if fragments.any() and instances:
        _join_fragments(instance_map, fragments, structure)
    return instance_map, instances


def _join_fragments(instance_map: np.ndarray, fragments: np.ndarray, structure) -> None:
    """Fragments touching an instance join it (a pedicle predicted as the neighbour's label); others go."""
    labelled, _ = ndimage.label(fragments, structure)
    for fragment, box in enumerate(ndimage.find_objects(labelled), start=1):
        if box is None:
            continue
        grown = tuple(slice(max(b.start - 1, 0), b.stop + 1) for b in box)
        here = labelled[grown] == fragment
        touching = instance_map[grown][ndimage.binary_dilation(here, structure) & ~here]
        touching = touching[touching > 0]
        if touching.size:
            instance_map[grown][here] = np.bincount(touching).argmax()


def label_vertebrae(probabilities: np.ndarray, affine: np.ndarray, min_volume_mm3: float = 300.0,
                    table: LabelTable | None = None) -> np.ndarray:
    """Clean, consistently numbered label-table values (uint8) on the model grid."""
    table = table or load_label_table()
    voxel_mm3 = abs(np.linalg.det(affine[:3, :3]))
    instance_map, instances = vertebra_instances(probabilities, max(1, int(min_volume_mm3 / voxel_mm3)))
    if not instances:
        return np.zeros(instance_map.shape, dtype=np.uint8)
    return name_instances(instance_map, np.stack([inst.centroid_ijk for inst in instances]),
                          np.stack([inst.log_prob for inst in instances]), affine, table)


def name_instances(instance_map: np.ndarray, centroids_ijk: np.ndarray, log_probs: np.ndarray, affine: np.ndarray,
                   table: LabelTable, sacrum_in_pieces: bool = False) -> np.ndarray:
    """Label-table values (uint8) for an instance map (instance n has row n-1 of ``centroids_ijk`` and of
    ``log_probs``, one column per label): the instances in cranio-caudal order (descending superior coordinate
    of the centroid) get the sequence :func:`consistent_numbering` finds."""
    order = np.argsort(centroids_ijk @ affine[2, :3])[::-1]
    ranks = consistent_numbering(log_probs[order], table, sacrum_in_pieces)
    lut = np.zeros(len(centroids_ijk) + 1, dtype=np.uint8)
    lut[order + 1] = [table.labels[rank].value for rank in ranks]
    return lut[instance_map]


def refine_labels(named: np.ndarray, foreground: np.ndarray, spacing, reach_mm: float = 6.0,
                  min_voxels: int = 1) -> np.ndarray:
    """Vertebra labels named on a coarse grid (``named``, already on this grid) given the fine pass's shape.

    Fine foreground voxels take the coarse label at their place, or the nearest coarse label within
    ``reach_mm`` (coarse boundaries are a few mm off); foreground farther from every vertebra (ribs, pelvis)
    and coarse labels outside the fine foreground are dropped. Each vertebra keeps its largest connected part.
    """
    labelled = named > 0
    out = np.where(foreground, named, 0).astype(np.uint8)
    orphans = foreground & ~labelled
    if orphans.any() and labelled.any():
        distance, nearest = ndimage.distance_transform_edt(~labelled, sampling=spacing, return_indices=True)
        take = orphans & (distance <= reach_mm)
        out[take] = named[tuple(index[take] for index in nearest)]
    return keep_largest_parts(out, min_voxels)


def keep_largest_parts(labels: np.ndarray, min_voxels: int = 1) -> np.ndarray:
    """Each label keeps only its largest connected part (face-connected), and none if that is under
    ``min_voxels``: one vertebra, one piece of bone (``labels`` is changed and returned)."""
    structure = ndimage.generate_binary_structure(3, 1)
    for value, where in enumerate(ndimage.find_objects(labels), start=1):
        if where is None:
            continue
        mask = labels[where] == value
        parts, _ = ndimage.label(mask, structure)
        sizes = np.bincount(parts.ravel())
        sizes[0] = 0
        keep = parts == sizes.argmax()
        if sizes.max() < min_voxels:
            keep[:] = False
        labels[where][mask & ~keep] = 0
    return labels


# --- lesions ---------------------------------------------------------------------------------------------------
def detect_lesions(heatmaps: np.ndarray, affine: np.ndarray, labels: np.ndarray, threshold: float = 0.3,
                   nms_radius_mm: float = 5.0, table: LabelTable | None = None,
                   calibration: LesionCalibration | None = None) -> list[dict]:
    """Lesions from per-class heatmaps (C, I, J, K) on a grid: peaks, NMS in mm, class, size and vertebra.

    A vertebral body is fractured or not: of several fracture peaks on one vertebra (a compressed body is far
    wider than the NMS radius) only the highest is a lesion, and its size is the body's, measured as the cube
    root of its vertebra's volume (the two track each other closely from C3 to L5). A metastasis's size is the
    width of its peak. Without ``calibration`` a lesion's ``score`` is its peak and ``threshold`` applies to it;
    with one, peaks from its ``candidate_threshold`` up are scored by it, ``threshold`` applies to the calibrated
    score and sizes are scaled by it (:mod:`.lesion_scores`). The list runs from the highest score.
    """
    table = table or load_label_table()
    combined = heatmaps.max(axis=0)
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    footprint = np.maximum(1, np.round(nms_radius_mm / spacing)).astype(int) * 2 + 1
    volumes_mm3 = np.bincount(labels.ravel()) * float(np.prod(spacing))
    floor = calibration.candidate_threshold if calibration else threshold
    peaks = (combined == ndimage.maximum_filter(combined, size=tuple(footprint))) & (combined >= floor)
    coords = np.argwhere(peaks)
    order = np.argsort(-combined[peaks])
    kept: list[np.ndarray] = []
    fractured: set[int] = set()
    lesions = []
    for index in order[:MAX_PEAKS]:
        ijk = coords[index]
        ras = affine[:3, :3] @ ijk + affine[:3, 3]
        if any(np.linalg.norm(ras - other) < nms_radius_mm for other in kept):
            continue
        kept.append(ras)
        lesion_class = table.lesion_class_names[int(heatmaps[:, ijk[0], ijk[1], ijk[2]].argmax())]
        vertebra = _vertebra_at(labels, ijk, spacing)
        fractured_body = vertebra if lesion_class == "fracture" else 0
        if fractured_body:
            if fractured_body in fractured:
                continue
            fractured.add(fractured_body)
        peak = float(combined[tuple(ijk)])
        score = calibration.score(lesion_class, peak) if calibration else peak
        if score < threshold:
            continue
        if fractured_body:
            size_mm = float(np.cbrt(volumes_mm3[fractured_body]))
        else:
            size_mm = _blob_diameter_mm(combined, ijk, spacing)
        if calibration:
            size_mm = calibration.size_mm(lesion_class, size_mm)
        lesions.append({
            "class": lesion_class,
            "score": round(score, 4),
            "peak": round(peak, 4),
            "center_ras": [round(float(c), 2) for c in ras],
            "size_mm": round(size_mm, 1),
            "vertebra": table.by_value(vertebra).name if vertebra else None,
            "vertebra_label": int(vertebra) if vertebra else None,
        })
    lesions.sort(key=lambda lesion: -lesion["score"])
    return [{"id": number, **lesion} for number, lesion in enumerate(lesions, start=1)]


def _blob_diameter_mm(heat: np.ndarray, ijk: np.ndarray, spacing: np.ndarray, window_mm: float = 25.0) -> float:
    """Equivalent-sphere diameter of the region around a peak above half its height."""
    radius = np.maximum(1, np.round(window_mm / spacing)).astype(int)
    lo = np.maximum(ijk - radius, 0)
    hi = np.minimum(ijk + radius + 1, heat.shape)
    window = heat[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
    blobs, _ = ndimage.label(window >= 0.5 * heat[tuple(ijk)])
    voxels = int((blobs == blobs[tuple(ijk - lo)]).sum())
    return float(2.0 * (3.0 * voxels * np.prod(spacing) / (4.0 * np.pi)) ** (1.0 / 3.0))


def _vertebra_at(labels: np.ndarray, ijk: np.ndarray, spacing: np.ndarray, search_mm: float = 10.0) -> int:
    """The vertebra at a point, or the nearest one within ``search_mm`` (lesions can sit at the cortex)."""
    value = int(labels[tuple(ijk)])
    if value:
        return value
    radius = np.maximum(1, np.round(search_mm / spacing)).astype(int)
    lo = np.maximum(ijk - radius, 0)
    hi = np.minimum(ijk + radius + 1, labels.shape)
    window = labels[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
    found = np.argwhere(window > 0)
    if found.size == 0:
        return 0
    distance = np.linalg.norm((found + lo - ijk) * spacing, axis=1)
    nearest = distance.argmin()
    return int(window[tuple(found[nearest])]) if distance[nearest] <= search_mm else 0


def mask_box(mask: np.ndarray, spacing=(1.0, 1.0, 1.0), margin_mm: float = 0.0) -> tuple[slice, ...] | None:
    """The bounding box of ``mask`` plus ``margin_mm`` (on a grid of ``spacing`` mm), or None where it is empty."""
    found = ndimage.find_objects(mask.astype(np.uint8))
    if not found:
        return None
    margin = np.ceil(margin_mm / np.asarray(spacing, dtype=np.float64)).astype(int)
    return tuple(slice(max(s.start - m, 0), min(s.stop + m, size)) for s, m, size in zip(found[0], margin, mask.shape))
