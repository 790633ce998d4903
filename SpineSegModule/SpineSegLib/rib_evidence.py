"""Ribs as a witness to the count: a vertebra that bears ribs is thoracic (used by :mod:`.region_numbering`);
and ribs cut from the vertebrae the network ran on into them (:func:`trim_ribs`).

A radiologist finds T1 as the first vertebra with a rib and T12 as the last; the network's region calls are
weakest exactly there (it calls L1 or C7 thoracic now and then, and the whole count slides a level). Ribs are
plain to see in the CT itself: long, thin bones that touch a vertebra and run far out to the side. So, for each
vertebra, its *lateral reach* is how far from its midline (in mm, along the patient's left-right axis) it or a
rib-sized bone touching it extends: about 30-45 mm for cervical and lumbar vertebrae (their transverse
processes), 45-70 mm for T1 (the short first rib), 60-150 mm for the thoracic vertebrae below it. Where the
network took a rib's head into the vertebra, the vertebra itself reaches far; where it left the rib out, the rib
touching it does.

Metal (pedicle screws and rods) throws bright streaks across its own planes, far above the bone threshold, and a
streak touching a vertebra reaches as far as a rib: the ribs are not looked for in the planes of metal
(:func:`metal_planes`), and a vertebra mostly in them says nothing.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from .labels import LabelTable
from .preprocess import normalize_intensity
from .volume import Volume

BONE_HU = 200.0  # bone: cortical and cancellous bone and a thin rib blurred by the scanner lie above this
GAP_MM = 3.0  # bone this close to a vertebra is its own rim (a mask is never exact), not a separate bone
TOUCH_MM = 6.0  # ... a separate bone this close touches it (a costovertebral joint is a few mm wide)
FAR_MM = 12.0  # a rib runs at least this far from the vertebra; bone that does not is a left-out process
RIB_MAX_MM3 = 25000.0  # a rib beyond FAR_MM is under this volume; the pelvis beside L5 is ten times more
RIB_REACH_MM = 45.0  # lateral reach at which a vertebra is as likely to bear a rib (T1's) as none
# ... and as likely to bear the long ribs of T2 down as none: on the tuning phantoms T2-T13 reach at least 61 mm,
# T1 46 mm, cervical and lumbar vertebrae (their transverse processes) at most 43 mm
LONG_RIB_REACH_MM = 52.0
RIB_REACH_SPREAD_MM = 3.0  # ... and the reach that changes the odds e-fold
RIB_LOG_ODDS = 4.0  # the most the ribs may say, in log-odds: a vertebra's region calls can still outweigh them
# A thoracic vertebra ends this far from its midline: on the phantoms the widest (T1) reaches 34 mm; the margin
# leaves room for larger patients. Bone of its label beyond is a rib the network did not part from it.
THORACIC_HALF_WIDTH_MM = 40.0
METAL_HU = 2500.0  # screws and rods lie above this; bone, even dense cortex, below
METAL_MARGIN_MM = 5.0  # streaks run in the metal's planes and, blurred by the scanner, a few mm beyond them
METAL_SILENCES = 0.5  # a vertebra with this fraction of its voxels in the metal's planes says nothing of ribs


def bone_mask(image, window) -> np.ndarray:
    """Bone in a network's input ``image`` (intensities scaled from the HU ``window`` to [0, 1])."""
    return np.asarray(image) > float(normalize_intensity(np.float32(BONE_HU), window))


def metal_planes(ct: Volume, grid_affine: np.ndarray, planes: int) -> np.ndarray:
    """Per plane along axis 2 of a grid (its affine ``grid_affine``, ``planes`` of them): whether metal in the
    ``ct`` (HU) lies within ``METAL_MARGIN_MM`` of it."""
    metal = np.argwhere(np.asarray(ct.array) >= METAL_HU)
    if not len(metal):
        return np.zeros(planes, dtype=bool)
    step = float(np.linalg.norm(grid_affine[:3, 2]))
    heights = (metal @ ct.affine[:3, :3].T + ct.affine[:3, 3] - grid_affine[:3, 3]) @ (grid_affine[:3, 2] / step)
    heights = np.unique(np.round(heights, 1))  # mm along the grid's axis 2; a screw has many voxels per height
    plane_heights = np.arange(planes) * step
    return np.abs(plane_heights[:, None] - heights[None, :]).min(axis=1) <= METAL_MARGIN_MM


def lateral_reach(bone: np.ndarray, instances: np.ndarray, spacing, count: int | None = None) -> np.ndarray:
    """Per instance (1..``count`` of ``instances``, default all, on a grid whose axis 0 runs left-right; ``spacing``
    in mm): how far from its midline (the median left-right position of its voxels) it, or a rib-sized ``bone``
    part touching it, extends, in mm (0 for an instance not on the grid)."""
    count = int(instances.max()) if count is None else count
    spacing = np.asarray(spacing, dtype=float)
    vertebrae = instances > 0
    if not vertebrae.any():
        return np.zeros(count)
    surface = vertebrae & ~ndimage.binary_erosion(vertebrae)
    # Distances from the bone outside the vertebrae to their surface, within FAR_MM (infinite beyond): only the
    # bone is asked, which is far quicker than a distance map of the whole grid.
    outside = np.argwhere(bone & ~vertebrae)
    distance, nearest = cKDTree(np.argwhere(surface) * spacing).query(outside * spacing, distance_upper_bound=FAR_MM)
    loose = np.zeros(bone.shape, dtype=bool)
    loose[tuple(outside[distance > GAP_MM].T)] = True
    pieces, piece_count = ndimage.label(loose, np.ones((3, 3, 3), dtype=bool))
    piece_of = pieces[tuple(outside.T)]
    far_mm3 = np.bincount(piece_of[np.isinf(distance)], minlength=piece_count + 1) * float(np.prod(spacing))
    rib_sized = (far_mm3 > 0) & (far_mm3 <= RIB_MAX_MM3)
    rib_sized[0] = False

    x_mm = np.arange(instances.shape[0]) * spacing[0]

    def farthest(across: slice, midline: float) -> float:
        """How far from ``midline`` a part spanning ``across`` (its box along axis 0) reaches, in mm."""
        return float(np.abs(x_mm[[across.start, across.stop - 1]] - midline).max())

    midline, reach = np.zeros(count), np.zeros(count)
    for index, box in enumerate(ndimage.find_objects(instances)):
        if box is None:
            continue
        xs = np.broadcast_to(x_mm[box[0]][:, None, None], instances[box].shape)[instances[box] == index + 1]
        midline[index] = np.median(xs)
        reach[index] = farthest(box[0], midline[index])
    touching = rib_sized[piece_of] & (distance <= TOUCH_MM)
    owners = instances[surface][nearest[touching]]
    piece_boxes = ndimage.find_objects(pieces)
    for piece, instance in np.unique(np.stack([piece_of[touching], owners]), axis=1).T:
        reach[instance - 1] = max(reach[instance - 1], farthest(piece_boxes[piece - 1][0], midline[instance - 1]))
    return reach


def rib_log_likelihood(reach: np.ndarray, partly_seen: np.ndarray, table: LabelTable) -> np.ndarray:
    """Per vertebra (rows, ordered like ``reach``) and label (columns): the log-likelihood of its ``reach`` if it
    had that label: cervical and lumbar vertebrae bear no ribs, T1 bears the short first rib, and the thoracic
    vertebrae below it long ribs; the sacrum (its wings and the pelvis reach far) is left to the network. A
    vertebra ``partly_seen`` (cut by the view) that shows no long rib may have lost it with the cut, so says
    nothing."""
    any_rib, long_rib = (np.clip((reach - centre) / RIB_REACH_SPREAD_MM, -RIB_LOG_ODDS, RIB_LOG_ODDS)
                         for centre in (RIB_REACH_MM, LONG_RIB_REACH_MM))
    regions = np.array([label.region for label in table.labels])
    first_rib = np.array([label.name == "T1" for label in table.labels])
    rows = np.where(regions[None, :] == "thoracic", -np.logaddexp(0.0, -long_rib)[:, None],
                    -np.logaddexp(0.0, any_rib)[:, None])
    rows[:, first_rib] = -np.logaddexp(0.0, -any_rib)[:, None]
    rows[:, regions == "sacral"] = 0.0
    rows[partly_seen & (long_rib < 0)] = 0.0
    return rows


def trim_ribs(named: np.ndarray, spacing, table: LabelTable) -> np.ndarray:
    """``named`` (label values on a grid whose axis 0 runs left-right) with each thoracic vertebra cut at
    ``THORACIC_HALF_WIDTH_MM`` from its midline. The network sees no seam at a costovertebral joint and now and
    then runs a vertebra on along its rib: on the tuning phantoms up to a quarter of a lower thoracic vertebra's
    voxels lay more than 10 mm outside it. Only thoracic vertebrae bear ribs; the others are left alone."""
    out = named.copy()
    x_mm = np.arange(named.shape[0]) * float(spacing[0])
    thoracic = {label.value for label in table.labels if label.region == "thoracic"}
    for value, box in enumerate(ndimage.find_objects(named), start=1):
        if box is None or value not in thoracic:
            continue
        part = out[box]
        mine = part == value
        across = np.broadcast_to(x_mm[box[0]][:, None, None], part.shape)
        part[mine & (np.abs(across - np.median(across[mine])) > THORACIC_HALF_WIDTH_MM)] = 0
    return out
