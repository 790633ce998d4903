"""Training targets for the auxiliary heads, built from a batch after augmentation.

- :func:`vertebra_boxes`: one box per vertebra present in each (augmented) class map, with its identity label —
  what Vertebraformer's identification head is trained on (ground-truth boxes in training; at inference the
  boxes come from the predicted mask).
- :func:`lesion_targets`: CenterNet regression targets from the lesion list the sampler moved with the image:
  the centre voxel, the sub-voxel offset of the true centre from it, and the log box size in voxels.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage


def vertebra_boxes(seg: torch.Tensor, min_voxels: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Boxes ``(K, 7)`` = (batch index, d0, h0, w0, d1, h1, w1) half-open in voxels, and labels ``(K,)``.

    ``seg`` holds class indices, (B, 1, D, H, W) or (B, D, H, W). Per image, every class ``c ≥ 1`` with at least
    ``min_voxels`` voxels gets the bounding box of its voxels and the label ``c - 1`` (identification id ``j`` is
    segmentation class ``j + 1``). Rows run image by image, classes increasing, i.e. cranio-caudally (the label
    table's order), which the order-consistency loss expects. A vertebra cut by the patch edge gets the box of its
    visible part.
    """
    labels = seg[:, 0] if seg.ndim == 5 else seg
    array = labels.detach().to("cpu", torch.int64).numpy()
    boxes, ids = [], []
    for b, image in enumerate(array):
        counts = np.bincount(image.ravel())
        for c, where in enumerate(ndimage.find_objects(image), start=1):
            if where is None or counts[c] < min_voxels:
                continue
            boxes.append([b] + [s.start for s in where] + [s.stop for s in where])
            ids.append(c - 1)
    return (torch.tensor(boxes, dtype=torch.float32).reshape(-1, 7),
            torch.tensor(ids, dtype=torch.int64).reshape(-1))


def lesion_targets(lesions: torch.Tensor, shape) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(centers (K, 4) long, offsets (K, 3), log_sizes (K, 3))`` from a batch's lesion rows.

    ``lesions`` (N, 8): batch index, centre (3, continuous voxels in the patch), box size (3, voxels), class.
    The centre voxel is the *rounded* centre — where the Gaussian heatmap target has its peak of exactly 1 —
    so offsets lie in [-0.5, 0.5]; lesions whose centre voxel falls outside the patch are left out (their
    heatmap tail still counts in the focal loss). Sizes are clamped to at least one voxel before the log.
    """
    lesions = lesions.reshape(-1, 8).float()
    centre = lesions[:, 1:4]
    voxel = torch.round(centre)
    inside = ((voxel >= 0) & (voxel < torch.as_tensor(list(shape), dtype=voxel.dtype))).all(dim=1)
    lesions, centre, voxel = lesions[inside], centre[inside], voxel[inside]
    centers = torch.cat([lesions[:, :1], voxel], dim=1).long()
    return centers, centre - voxel, torch.log(lesions[:, 4:7].clamp(min=1.0))
