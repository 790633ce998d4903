"""Naming vertebrae by counting along the column (model card ``postprocessing.numbering: regions``).

The network says only which region each bone voxel belongs to — cervical, thoracic, lumbar or sacral, which a
patch shows by anatomy (ribs on thoracic vertebrae, the sacrum, the size and shape of the bodies) — and the
vertebrae are named the way a radiologist counts them:

1. the spine's foreground is split into vertebrae: the network is taught a thin background seam where two
   vertebrae touch (the trainer's ``border_voxels``), so every vertebra is a connected part of its own; where it
   was unsure of a seam, or saw none, parts are split at the seam it half saw or at the narrowing between two
   vertebral bodies (:func:`split_part`); specks much smaller than the vertebrae around them go, and the seams
   are closed again;
2. the vertebrae, ordered cranio-caudally, get the label sequence (C1..C7, T1..T12, [T13], L1..L5, [L6],
   sacrum) that best fits their regions (:func:`count_along_column`). The region boundaries anchor the count:
   the first rib-bearing vertebra is T1, the one above the sacrum L5 (or L6), and a column that starts inside
   the view starts at C1 (``COLUMN_TOP_MM``). With the model card's size profile the vertebrae's volumes are a
   second witness (:mod:`.level_sizes`: C2 twice C3, L1 a third larger than T12), which also tells a C1 and C2
   the network joined from a C1 alone; with the CT's bone, the ribs are a third (:mod:`.rib_evidence`: a
   vertebra that bears ribs is thoracic, looked for away from metal's streaks), which keeps the count where the
   network calls C7 or L1 thoracic; a vertebra the view's end cuts weighs in by the part of it in view;
3. named, each thoracic vertebra is cut back from the ribs the network ran it on into
   (:func:`.rib_evidence.trim_ribs`).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .column_gaps import missing_vertebra_log_odds, step_log_ratios
from .labels import LabelTable, load_label_table
from .level_sizes import LevelSizes, numbering_with_sizes
from .postprocess import keep_largest_parts, mask_box, scored_numbering
from .rib_evidence import METAL_SILENCES, lateral_reach, rib_log_likelihood, trim_ribs

SPECK_FRACTION = 0.25  # a part under this fraction of the parts near it is no vertebra (see split_vertebrae)
NEIGHBOURHOOD_MM = 50.0  # ... the parts whose centres lie within this height
COLUMN_REACH_MM = 40.0  # a vertebra's centre lies this close to the column's axis (in-plane; rib pieces do not)
# A vertebra the view's end cuts may show no more than the tip of its spinous process, which a thoracic vertebra
# slopes down over the next one: on the tuning phantoms 170-1100 mm³ lying 32-43 mm behind the column's axis
# (the rib pieces the view cuts lay 100 mm and more to the side). Such a part, apart from every vertebra, is one.
CUT_REACH_MM = 60.0
CUT_MIN_MM3 = 100.0
# ... and where it touches a vertebra, it lies beyond it towards the view's end (the top of the body under a
# cervical view's last vertebra: 11-12 mm beyond its centre); a piece of a vertebra the network cut off by a seam
# does not (a thoracic spinous process the view's top cuts lies below its body).
CUT_BEYOND_MM = 5.0
# Stricter and stricter bone thresholds (background probability below) at which a part is looked at again: where
# the network is unsure of a seam, the part falls apart into vertebrae there (see split_part).
SEAM_LEVELS = (0.3, 0.2, 0.1, 0.05)
SPLIT_FRACTION = 0.25  # ... into pieces each at least this fraction of the largest (smaller ones are specks)
# Vertebrae joined where the network saw no seam at all touch through their thin processes; their bodies, the
# thickest bone, stay apart (a disc lies between them): a part is split at its cores deeper than this fraction of
# its deepest point when the cores lie one above the other (see split_by_shape). Only a vertebral body is that
# thick: C2's dens, above its body, reaches about two thirds of the body's depth and must not count as a body.
CORE_DEPTH = 0.75
# ... and stacked bodies lie one above another along the column: from one body the nearest other lies within this
# slope (in-plane over vertical distance, tan 40 degrees; the column bends far less between two levels). One of C1's
# lateral masses beside C2's dens does not, and a part cut between them would name it C1 and give the other to C2.
BODY_SLOPE = 0.84
STACKED_CORES_MM = 2.0  # ... told on a grid this fine; on a coarser one a cervical core is a voxel or two
SIDE_BY_SIDE_MM = 30.0  # pieces at one height and this close in-plane are one vertebra's (C1's lateral masses)
# The column's top end: where no bone at all lies in this much of the view above the highest vertebra, the column
# starts inside the view, and a column starts at C1 (the skull above it is no vertebra), which then anchors the
# count. A view that cuts the column has bone up to its top (the cut vertebra, even a sliver of it).
COLUMN_TOP_MM = 10.0
# C1 sits on C2 with no disc between them, and the network may see no seam there: a top vertebra the size of C1 and
# C2 together may be both, at this cost in log-odds (see count_along_column).
JOINED_TOP_PENALTY = 2.0
MOSTLY_SEEN = 0.5  # a vertebra the view cut shows whether it bears ribs when it keeps this fraction of a neighbour
# ... and its centre lies near enough to where it would be to measure a step from it (a gap in the column) when it
# keeps this much: cut by a quarter, its centre moves an eighth of its height.
NEARLY_WHOLE = 0.75


def split_vertebrae(foreground: np.ndarray, spacing, min_voxels: int = 1,
                    background: np.ndarray | None = None) -> np.ndarray:
    """Instance map (0 background, 1..n vertebrae) of a spine foreground whose vertebrae do not touch (the
    network is taught a background seam where they would); ``spacing`` in mm, axis 2 superior. With the
    network's ``background`` probability, parts joined where the network was unsure of the seam are split
    first (:func:`split_at_weak_seams`).

    Every connected part is a vertebra, except parts much smaller than the vertebrae at their height (under
    ``SPECK_FRACTION`` of the median part within ``NEIGHBOURHOOD_MM``; a cervical vertebra is a fifth of a lumbar
    one) or under ``min_voxels``, unless they reach the first or last slice along axis 2 away from every vertebra
    or ``CUT_BEYOND_MM`` beyond those they touch, within ``CUT_REACH_MM`` of the column and of at least
    ``CUT_MIN_MM3`` (a vertebra cut by the edge of the view: the caller pads the foreground with background where
    the view does not end), and parts off the column (:func:`column_distances`).
    A small part within two voxels of a vertebra is a piece of it cut off by a seam and joins it; the others are
    specks of rib or pelvis and go.
    """
    parts, count = ndimage.label(foreground, ndimage.generate_binary_structure(3, 1))
    if count == 0:
        return parts.astype(np.int32)
    if background is not None:
        parts, count = split_at_weak_seams(parts, background, spacing, min_voxels)
    ids = np.arange(1, count + 1)
    sizes = np.bincount(parts.ravel(), minlength=count + 1)[1:]
    centres = np.array(ndimage.center_of_mass(np.ones(parts.shape), parts, ids)) * np.asarray(spacing, float)
    heights = centres[:, 2]
    near = np.abs(heights[:, None] - heights[None, :]) <= NEIGHBOURHOOD_MM
    from_column = column_distances(centres, sizes)
    on_column = from_column <= COLUMN_REACH_MM
    # The median of the vertebrae near, not of the crumbs among them: a rib's pieces beside the column can
    # outnumber the vertebrae at their height.
    countable = (sizes >= min_voxels) & on_column
    local = np.array([np.median(sizes[row & countable]) if (row & countable).any() else 0.0 for row in near])
    small = (sizes < SPECK_FRACTION * local) | (sizes < min_voxels)
    keep = ~small & on_column
    renumber = np.zeros(count + 1, dtype=np.int32)
    renumber[ids[keep]] = np.arange(1, int(keep.sum()) + 1)
    instances = renumber[parts]
    if not small.any():
        return _close_seams(instances)
    beside = ndimage.grey_dilation(instances, size=5)
    instance_heights = np.r_[np.nan, heights[keep]]
    toward_the_end = np.zeros(count + 1)  # +1: the part reaches the view's top slice, -1: its bottom one
    toward_the_end[np.unique(parts[:, :, -1])] = 1.0
    toward_the_end[np.unique(parts[:, :, 0])] = -1.0
    boxes = ndimage.find_objects(parts)
    cut = small & (toward_the_end[1:] != 0) & (from_column <= CUT_REACH_MM) & (sizes >= _cut_min_voxels(spacing))
    cut_vertebrae = []  # (instance, part) of the vertebrae cut by the view
    for part in ids[cut]:
        piece = parts[boxes[part - 1]] == part
        neighbours = np.unique(beside[boxes[part - 1]][piece])
        beyond = toward_the_end[part] * (heights[part - 1] - instance_heights[neighbours[neighbours > 0]])
        if np.all(beyond >= CUT_BEYOND_MM):  # a vertebra cut by the view, or another piece of one found so far
            same = [instance for instance, other in cut_vertebrae if toward_the_end[other] == toward_the_end[part]
                    and _side_by_side([(boxes[i - 1][2].start, boxes[i - 1][2].stop) for i in (part, other)],
                                      centres[[part - 1, other - 1]])]
            instance = same[0] if same else instances.max() + 1
            instances[boxes[part - 1]][piece] = instance
            cut_vertebrae.append((instance, part))
            keep[part - 1] = True
    for part in ids[small & ~keep]:  # pieces next to a vertebra join it
        piece = parts[boxes[part - 1]] == part
        neighbours = beside[boxes[part - 1]][piece]
        neighbours = neighbours[neighbours > 0]
        if neighbours.size:
            instances[boxes[part - 1]][piece] = np.bincount(neighbours).argmax()
    return _close_seams(instances)


def _side_by_side(spans, centres: np.ndarray, side_mm: float = SIDE_BY_SIDE_MM) -> bool:
    """Whether two pieces (their ``spans`` along axis 2, (start, stop) each, and ``centres`` in mm) are one
    vertebra's at one height: spans overlapping by half the shorter, centres within ``side_mm`` in-plane."""
    (a, b), (c, e) = spans
    overlap, shorter = min(b, e) - max(a, c), min(b - a, e - c)
    return overlap >= 0.5 * shorter and np.linalg.norm(centres[0][:2] - centres[1][:2]) <= side_mm


def split_at_weak_seams(parts: np.ndarray, background: np.ndarray, spacing, min_voxels: int = 1,
                        levels=SEAM_LEVELS) -> tuple[np.ndarray, int]:
    """Parts (labelled 1..n) split into vertebrae where they join (:func:`split_part`). Returns the new parts and
    their count."""
    out = np.zeros(parts.shape, dtype=np.int32)
    count = 0
    for box_index, box in enumerate(ndimage.find_objects(parts)):
        if box is None:
            continue
        for piece in split_part(parts[box] == box_index + 1, background[box], spacing, min_voxels, levels):
            count += 1
            out[box][piece] = count
    return out, count


def split_part(part: np.ndarray, background: np.ndarray, spacing, min_voxels: int = 1,
               levels=SEAM_LEVELS) -> list[np.ndarray]:
    """One part (a boolean mask; ``spacing`` in mm) as the bones in it, each grown back over the part from its
    core and looked at again.

    Where the network's ``background`` probability shows a seam it was unsure of, the part falls apart at a
    stricter bone threshold (``levels``, strictest last) into pieces of at least ``SPLIT_FRACTION`` of the largest
    (and ``min_voxels``): vertebrae one above another, or bone beside the column (pelvis, ribs); pieces at one
    height within ``SIDE_BY_SIDE_MM`` are one vertebra's. Failing that, it is split by its shape
    (:func:`split_by_shape`)."""
    box = _own_box(part)
    if box is not None:  # the same split on the part's own box: most parts are specks in a large box
        return [_embedded(piece, box, part.shape)
                for piece in split_part(part[box], background[box], spacing, min_voxels, levels)]
    for index, level in enumerate(levels):
        cores = _large_cores(part & (background < level), min_voxels)
        pieces = _grow_groups(part, cores, spacing, SIDE_BY_SIDE_MM, np.clip(background, 0.0, 1.0))
        if pieces:
            return [bone for piece in pieces
                    for bone in split_part(piece, background, spacing, min_voxels, levels[index + 1:])]
    return split_by_shape(part, spacing)


def split_by_shape(part: np.ndarray, spacing=(1.0, 1.0, 1.0)) -> list[np.ndarray]:
    """A part split where it narrows between its thickest cores (vertebral bodies, deeper than ``CORE_DEPTH`` of
    its deepest point) stacked one above another (``BODY_SLOPE``, on a grid of ``spacing`` mm up to
    ``STACKED_CORES_MM``); cores side by side (a sacrum's wings) are one vertebra's."""
    box = _own_box(part)
    if box is not None:
        return [_embedded(piece, box, part.shape) for piece in split_by_shape(part[box], spacing)]
    depth = ndimage.distance_transform_edt(np.pad(part, 1))[1:-1, 1:-1, 1:-1]
    cores = _large_cores(depth >= CORE_DEPTH * depth.max())
    if max(spacing) <= STACKED_CORES_MM:
        cores = _stacked_cores(cores)
    pieces = _grow_groups(part, cores, (1.0, 1.0, 1.0), np.inf)
    return [vertebra for piece in pieces for vertebra in split_by_shape(piece, spacing)] if pieces else [part]


def _own_box(mask: np.ndarray) -> tuple[slice, ...] | None:
    """The bounding box of ``mask`` where it is smaller than the array, else None."""
    box = mask_box(mask)
    if box is None or all(s.stop - s.start == size for s, size in zip(box, mask.shape)):
        return None
    return box


def _embedded(piece: np.ndarray, box: tuple[slice, ...], shape) -> np.ndarray:
    full = np.zeros(shape, dtype=bool)
    full[box] = piece
    return full


def _stacked_cores(cores: np.ndarray) -> np.ndarray:
    """The ``cores`` (labelled, on a grid of equal spacing) whose nearest other core lies along the column:
    within ``BODY_SLOPE`` of straight above or below."""
    labels = [label for label, box in enumerate(ndimage.find_objects(cores), start=1) if box is not None]
    if len(labels) < 2:
        return cores
    centres = np.array(ndimage.center_of_mass(cores > 0, cores, labels))
    offsets = centres[:, None] - centres[None]
    distances = np.linalg.norm(offsets, axis=2)
    np.fill_diagonal(distances, np.inf)
    nearest = offsets[np.arange(len(labels)), distances.argmin(axis=1)]
    off_the_column = np.linalg.norm(nearest[:, :2], axis=1) > BODY_SLOPE * np.abs(nearest[:, 2])
    return np.where(np.isin(cores, np.array(labels)[off_the_column]), 0, cores)


def _large_cores(mask: np.ndarray, min_voxels: int = 1) -> np.ndarray:
    """Connected parts of ``mask`` of at least ``SPLIT_FRACTION`` of the largest and ``min_voxels`` (labelled)."""
    cores, count = ndimage.label(mask, ndimage.generate_binary_structure(3, 1))
    if count < 2:
        return cores
    sizes = np.bincount(cores.ravel(), minlength=count + 1)
    sizes[0] = 0
    small = sizes < max(min_voxels, SPLIT_FRACTION * sizes.max())
    small[0] = True
    return np.where(small[cores], 0, cores)


def _grow_groups(part: np.ndarray, cores: np.ndarray, spacing, side_mm: float, cost: np.ndarray | None = None):
    """The part cut into one piece per group of ``cores`` (labelled), grown from them over the part: along the
    lowest ``cost`` (in [0, 1]: where the network saw a seam, a watershed), or without one to the group each voxel
    is nearest to through the part (a voxel at a time); None when the cores form one group. Cores whose heights
    (axis 2) overlap by half the shorter and whose centres lie within ``side_mm`` in-plane are one group: one
    vertebra's."""
    boxes = ndimage.find_objects(cores)
    labels = [label for label, box in enumerate(boxes, start=1) if box is not None]
    if len(labels) < 2:
        return None
    centres = np.array(ndimage.center_of_mass(cores > 0, cores, labels)) * np.asarray(spacing, float)
    spans = [(boxes[label - 1][2].start, boxes[label - 1][2].stop) for label in labels]
    group = list(range(len(labels)))  # union-find over the cores

    def root(i):
        while group[i] != i:
            i = group[i]
        return i

    for a in range(len(labels)):
        for b in range(a + 1, len(labels)):
            if _side_by_side([spans[a], spans[b]], centres[[a, b]], side_mm):
                group[root(b)] = root(a)
    roots = sorted({root(i) for i in range(len(labels))})
    if len(roots) < 2:
        return None
    markers = np.zeros(part.shape, dtype=np.int32)
    for index, group_root in enumerate(roots, start=1):
        markers[np.isin(cores, [labels[i] for i in range(len(labels)) if root(i) == group_root])] = index
    cross = ndimage.generate_binary_structure(3, 1)
    if cost is not None:
        # Outside the part: a basin of its own at the highest cost, so the pieces grow only over the part and the
        # outside takes none of it (bone beside the part, a sibling piece, is as cheap to cross as the part).
        markers[~part] = len(roots) + 1
        grown = ndimage.watershed_ift(np.round(np.where(part, cost, 1.0) * 65535).astype(np.uint16), markers, cross)
        return [part & (grown == index) for index in range(1, len(roots) + 1)]
    while True:
        grown = ndimage.grey_dilation(markers, footprint=cross)
        reached = part & (markers == 0) & (grown > 0)
        if not reached.any():
            return [markers == index for index in range(1, len(roots) + 1)]
        markers[reached] = grown[reached]


def column_distances(centres: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Per part (centres in mm, axis 2 superior), its in-plane distance from the spinal column's axis: a smooth
    curve through the parts (a cubic in height, fitted again without the parts beyond ``COLUMN_REACH_MM`` of it).
    Rib and pelvis pieces, and soft tissue taken for bone, lie to the side of the column."""
    if len(sizes) < 3:
        return np.zeros(len(sizes))
    # Start from the size-weighted median position: most of the bone found is the column itself.
    order = np.argsort(centres[:, 0]), np.argsort(centres[:, 1])
    middle = [centres[o, axis][np.searchsorted(np.cumsum(sizes[o]), sizes.sum() / 2)] for axis, o in enumerate(order)]
    curve = np.tile(middle, (len(sizes), 1))
    for _ in range(3):
        on = np.linalg.norm(centres[:, :2] - curve, axis=1) <= COLUMN_REACH_MM
        if on.sum() < 3:
            return np.zeros(len(sizes))
        degree = min(3, int(on.sum()) - 1)
        curve = np.stack([np.polyval(np.polyfit(centres[on, 2], centres[on, axis], degree, w=np.sqrt(sizes[on])),
                                     centres[:, 2]) for axis in (0, 1)], axis=1)
    return np.linalg.norm(centres[:, :2] - curve, axis=1)


def _close_seams(instances: np.ndarray) -> np.ndarray:
    """Background voxels between two vertebrae (one on each side along an axis, the gap one or two voxels wide:
    the seam taught between them) go to the vertebra beside them, so the seam costs the vertebrae no volume."""
    padded = np.pad(instances, 2)
    out = instances.copy()
    for axis in range(3):
        before, after = _shifted(padded, axis, -1), _shifted(padded, axis, 1)
        for near, step in ((before, 1), (after, -1)):
            across = np.zeros(instances.shape, dtype=bool)
            for distance in (1, 2):
                far = _shifted(padded, axis, step * distance)
                across |= (far > 0) & (far != near)
            seam = (out == 0) & (near > 0) & across
            out[seam] = near[seam]
    return out


def _shifted(padded: np.ndarray, axis: int, offset: int) -> np.ndarray:
    """The value ``offset`` voxels along ``axis`` from each voxel of the array ``padded`` was padded (by 2) from."""
    index = [slice(2, size - 2) for size in padded.shape]
    index[axis] = slice(2 + offset, padded.shape[axis] - 2 + offset)
    return padded[tuple(index)]


def region_log_probs(probabilities: np.ndarray, instances: np.ndarray, table: LabelTable) -> np.ndarray:
    """Per instance (rows) and label (columns): mean log-probability of the label's region over the instance's
    voxels, the regions' probabilities renormalised over bone."""
    lut = table.class_to_region_lut()
    regions = np.stack([probabilities[lut == r].sum(axis=0) for r in range(1, lut.max() + 1)])
    regions /= np.clip(regions.sum(axis=0, keepdims=True), 1e-6, None)
    count = int(instances.max())
    flat = instances.ravel()
    voxels = np.bincount(flat, minlength=count + 1)[1:]
    log_regions = np.stack([
        np.bincount(flat, weights=np.log(np.clip(region, 1e-4, 1.0)).ravel(), minlength=count + 1)[1:]
        for region in regions
    ], axis=1) / np.maximum(voxels, 1)[:, None]
    return log_regions[:, lut[1:] - 1]


def label_by_regions(probabilities: np.ndarray, affine: np.ndarray, min_volume_mm3: float = 300.0,
                     table: LabelTable | None = None, sizes: LevelSizes | None = None,
                     bone: np.ndarray | None = None, metal: np.ndarray | None = None) -> np.ndarray:
    """Consistently numbered label-table values (uint8) on the model grid from region probabilities
    (``probabilities``: (C, I, J, K) class probabilities, class 0 background, classes grouped by region); with
    ``sizes``, the vertebrae's volumes weigh in (vertebrae cut by the grid's faces aside); with the CT's
    ``bone`` mask on the same grid (axis 0 left-right), the ribs do (:mod:`.rib_evidence`), except in the planes
    along axis 2 where ``metal`` (:func:`.rib_evidence.metal_planes`) is true."""
    table = table or load_label_table()
    out = np.zeros(probabilities.shape[1:], dtype=np.uint8)
    foreground = probabilities[0] < 0.5
    if not foreground.any():
        return out
    # Work inside the foreground's box (the spine is a small part of the grid).
    box = ndimage.find_objects(foreground.astype(np.uint8))[0]
    voxel_mm3 = abs(np.linalg.det(affine[:3, :3]))
    min_voxels = max(1, int(min_volume_mm3 / voxel_mm3))
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    # Padded with background, except where the view ends: there a part is a vertebra cut by it.
    ends = (int(box[2].start > 0), int(box[2].stop < foreground.shape[2]))
    padding = ((1, 1), (1, 1), ends)
    background = np.pad(probabilities[0][box], padding, constant_values=1.0)
    instances = split_vertebrae(np.pad(foreground[box], padding), spacing, min_voxels, background)
    instances = instances[1:-1, 1:-1, ends[0]:instances.shape[2] - ends[1]]
    count = int(instances.max())
    if count == 0:
        return out
    centroids = np.array(ndimage.center_of_mass(np.ones(instances.shape), instances, range(1, count + 1)))
    order = np.argsort(centroids @ affine[2, :3])[::-1]  # cranio-caudal
    log_probs = region_log_probs(probabilities[(slice(None), *box)], instances, table)[order]
    volumes = np.bincount(instances.ravel(), minlength=count + 1)[1:][order] * voxel_mm3
    cut_by_view = _cut_by_the_grid(instances, box, foreground.shape, axes=(2,))[order]
    sized = ~(cut_by_view | _cut_by_the_grid(instances, box, foreground.shape, axes=(0, 1))[order])
    # A vertebra the view's end cuts shows the network only part of itself: its region call weighs by the part
    # in view (a sliver of C7 called thoracic must not outweigh the thirteenth rib-bearing vertebra it implies).
    neighbours = _neighbour_volumes(volumes)
    in_view = np.where(cut_by_view, np.minimum(1.0, volumes / neighbours), 1.0)
    log_probs *= in_view[:, None]
    if bone is not None:
        log_probs += _rib_rows(bone, instances, box, order, cut_by_view & (in_view < MOSTLY_SEEN), spacing, table,
                               metal)
    nearly_whole = sized | (volumes >= NEARLY_WHOLE * neighbours)
    steps = step_log_ratios(centroids[order] * spacing, nearly_whole)
    column_top = (foreground.shape[2] - box[2].stop) * spacing[2] >= COLUMN_TOP_MM
    ranks, joined_share = count_along_column(log_probs, volumes, sized, column_top, table, sizes, steps)
    lut = np.zeros(count + 1, dtype=np.uint8)
    lut[order + 1] = [table.labels[rank].value for rank in ranks]
    named = lut[instances]
    if joined_share is not None:
        top = instances == order[0] + 1
        heights = np.argwhere(top) @ affine[2, :3]
        named[top] = np.where(heights > np.quantile(heights, joined_share), table.by_name("C1").value,
                              table.by_name("C2").value)
    # Pieces of one bone named alike (the sacrum's cut-off tip) or joined across a seam, or a rib's end once its
    # vertebra is trimmed: the largest piece stays (a vertebra the view cut may be smaller than min_voxels).
    out[box] = keep_largest_parts(trim_ribs(named, spacing, table), min(min_voxels, _cut_min_voxels(spacing)))
    return out


def count_along_column(log_probs: np.ndarray, volumes: np.ndarray, sized: np.ndarray, column_top: bool,
                       table: LabelTable, sizes: LevelSizes | None = None,
                       steps: np.ndarray | None = None) -> tuple[list[int], float | None]:
    """Label ranks for the vertebrae top down (rows of ``log_probs``, their ``volumes`` in mm³, ``sized``: not cut
    by the view), the top one C1 where the ``column_top`` is in view; with the ``steps`` between them
    (:func:`.column_gaps.step_log_ratios`), a gap in the column may be a vertebra left out. Second: where the
    network saw no seam between C1 and C2 and the top vertebra is the two joined (its volume says so; it is then
    named C2 and the count goes on at C3), C2's share of it, for the caller to give its upper part to C1; else
    None."""

    def count(rows: np.ndarray, volumes_seen: np.ndarray, gaps: np.ndarray | None) -> tuple[list[int], float]:
        if sizes is None:
            return scored_numbering(rows, table, sacrum_in_pieces=True, skip_log_odds=gaps)
        return numbering_with_sizes(rows, volumes_seen, sized, sizes, table, sacrum_in_pieces=True,
                                    skip_log_odds=gaps)

    def top_named(name: str, volumes_seen: np.ndarray, gaps: np.ndarray | None) -> tuple[list[int], float]:
        rows = log_probs.copy()
        rows[0, np.arange(len(table)) != table.order(table.by_name(name).value)] = -np.inf
        return count(rows, volumes_seen, gaps)

    steps = np.full(len(log_probs), np.nan) if steps is None else np.asarray(steps, float)
    if not column_top:
        return count(log_probs, volumes, missing_vertebra_log_odds(steps))[0], None
    # The top vertebra may be C1 and C2 joined (below): then its centre lies half a step above C2's, and a step of
    # one and a half from it to the next is no gap. Taken as C1, the step below it says nothing of one.
    as_c1, as_joined = steps.copy(), steps.copy()
    as_c1[1:2] = np.nan
    as_joined[1:2] -= np.log(1.5)
    ranks, score = top_named("C1", volumes, missing_vertebra_log_odds(as_c1))
    if sizes is None or not sized[0]:
        return ranks, None
    c1, c2 = (np.exp(sizes.log_volume[table.order(table.by_name(n).value)]) for n in ("C1", "C2"))
    if not np.isfinite(c1 + c2):
        return ranks, None
    share = float(c2 / (c1 + c2))
    joined_volumes = volumes.copy()
    joined_volumes[0] *= share  # C2's part of a C1 and C2 joined, to be sized as C2
    joined_ranks, joined_score = top_named("C2", joined_volumes, missing_vertebra_log_odds(as_joined))
    if joined_score - JOINED_TOP_PENALTY > score:
        return joined_ranks, share
    return ranks, None


def _rib_rows(bone: np.ndarray, instances: np.ndarray, box: tuple[slice, ...], order: np.ndarray,
              partly_seen: np.ndarray, spacing, table: LabelTable, metal: np.ndarray | None = None) -> np.ndarray:
    """:func:`.rib_evidence.rib_log_likelihood` of the instances (found inside ``box`` of the ``bone`` grid), in
    cranio-caudal ``order`` (``partly_seen`` in that order: cut by the view, they may have lost their ribs with
    the cut). Ribs are not looked for in the ``metal`` planes (axis 2), and a vertebra mostly in them says
    nothing."""
    count = int(instances.max())
    on_grid = np.zeros(bone.shape, dtype=np.int32)
    on_grid[box] = instances
    silent = np.zeros(count, dtype=bool)
    if metal is not None and metal.any():
        voxels = np.bincount(on_grid.ravel(), minlength=count + 1)[1:]
        in_metal = np.bincount(on_grid[:, :, metal].ravel(), minlength=count + 1)[1:]
        silent = (in_metal >= METAL_SILENCES * np.maximum(voxels, 1))[order]
        bone = bone & ~metal[None, None, :]
        on_grid[:, :, metal] = 0
    rows = rib_log_likelihood(lateral_reach(bone, on_grid, spacing, count)[order], partly_seen, table)
    rows[silent] = 0.0
    return rows


def _cut_min_voxels(spacing) -> int:
    """``CUT_MIN_MM3`` in voxels of ``spacing`` mm."""
    return max(1, int(CUT_MIN_MM3 / np.prod(np.asarray(spacing, float))))


def _neighbour_volumes(volumes: np.ndarray) -> np.ndarray:
    """Per vertebra top down, the volume of the one above it (for the top one, the one below)."""
    return np.r_[volumes[1:2], volumes[:-1]] if len(volumes) > 1 else volumes


def _cut_by_the_grid(instances: np.ndarray, box: tuple[slice, ...], shape, axes) -> np.ndarray:
    """Per instance (1..n of ``instances``, the part of the grid inside ``box``): whether it touches a face of
    the grid across ``axes``, so the view may have cut it (axis 2 alone: the view's ends)."""
    cut = np.zeros(int(instances.max()) + 1, dtype=bool)
    for axis in axes:
        part, size = box[axis], shape[axis]
        for at_face, index in ((part.start == 0, 0), (part.stop == size, -1)):
            if at_face:
                cut[np.unique(np.take(instances, index, axis=axis))] = True
    return cut[1:]
