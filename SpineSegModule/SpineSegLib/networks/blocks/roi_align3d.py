"""3D RoIAlign by trilinear sampling (``F.grid_sample``), and vertebra boxes from a binary mask.

Boxes are ``(d0, h0, w0, d1, h1, w1)`` in voxels of the network *input*, half-open like Python slices
(voxel ``i`` spans ``[i, i+1)``). Because ``grid_sample`` uses normalised coordinates, the same boxes work on a
feature map of any resolution: only the input size is needed, not a spatial scale.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

Boxes = torch.Tensor | Sequence[torch.Tensor]


def _as_batch_list(boxes: Boxes, batch: int) -> list[torch.Tensor]:
    """Per-image (N_b, 6) tensors from either a list or a (K, 7) tensor whose first column is the batch index."""
    if isinstance(boxes, torch.Tensor):
        if boxes.ndim != 2 or boxes.shape[1] != 7:
            raise ValueError("a boxes tensor must be (K, 7): batch index, d0, h0, w0, d1, h1, w1")
        return [boxes[boxes[:, 0] == b, 1:] for b in range(batch)]
    if len(boxes) != batch:
        raise ValueError(f"got boxes for {len(boxes)} images, batch has {batch}")
    return list(boxes)


def _sampling_grid(boxes: torch.Tensor, points: int, image_size: Sequence[int]) -> torch.Tensor:
    """(N, P, P, P, 3) grid_sample coordinates of P³ bin-centre points in each box, last dim ordered (w, h, d)."""
    steps = (torch.arange(points, device=boxes.device, dtype=boxes.dtype) + 0.5) / points
    size = torch.as_tensor(list(image_size), device=boxes.device, dtype=boxes.dtype)
    lo, hi = boxes[:, :3], boxes[:, 3:]
    coords = lo[:, None, :] + steps[None, :, None] * (hi - lo)[:, None, :]  # (N, P, 3) continuous voxel coords
    coords = 2 * coords / size - 1  # align_corners=False: -1 and 1 are the outer edges of the volume
    d, h, w = coords[..., 0], coords[..., 1], coords[..., 2]
    n = boxes.shape[0]
    grid = torch.stack(torch.broadcast_tensors(
        w[:, None, None, :], h[:, None, :, None], d[:, :, None, None]), dim=-1)
    return grid.reshape(n, points, points, points, 3)


def roi_align3d(features: torch.Tensor, boxes: Boxes, output_size: int, image_size: Sequence[int],
                sampling_ratio: int = 2) -> torch.Tensor:
    """Pool ``features`` (B, C, d, h, w) over boxes → (K, C, S, S, S), rows in the order the boxes were given.

    Each output bin averages ``sampling_ratio³`` trilinear samples (RoIAlign without quantisation).
    """
    batch, channels = features.shape[:2]
    if isinstance(boxes, torch.Tensor):
        boxes = boxes.to(features.device)
    per_image = _as_batch_list(boxes, batch)
    points = output_size * sampling_ratio
    pooled = []
    for b, bx in enumerate(per_image):
        if bx.numel() == 0:
            continue
        grid = _sampling_grid(bx.to(device=features.device, dtype=features.dtype), points, image_size)
        n = grid.shape[0]
        # All boxes of one image in one call: stack their grids along depth, sample, split again.
        sampled = F.grid_sample(features[b:b + 1], grid.reshape(1, n * points, points, points, 3),
                                mode="bilinear", padding_mode="zeros", align_corners=False)
        sampled = sampled.view(channels, n, points, points, points).transpose(0, 1)
        pooled.append(F.avg_pool3d(sampled, sampling_ratio) if sampling_ratio > 1 else sampled)
    if not pooled:
        return features.new_zeros((0, channels, output_size, output_size, output_size))
    out = torch.cat(pooled)
    if isinstance(boxes, torch.Tensor):  # undo the grouping by image
        order = torch.cat([torch.nonzero(boxes[:, 0] == b).flatten() for b in range(batch)])
        out = out[torch.argsort(order)]
    return out


class RoIAlign3d(nn.Module):
    def __init__(self, output_size: int = 4, sampling_ratio: int = 2):
        super().__init__()
        self.output_size = output_size
        self.sampling_ratio = sampling_ratio

    def forward(self, features: torch.Tensor, boxes: Boxes, image_size: Sequence[int]) -> torch.Tensor:
        return roi_align3d(features, boxes, self.output_size, image_size, self.sampling_ratio)


def boxes_from_mask(mask_logits: torch.Tensor, threshold: float = 0.5, min_voxels: int = 8) -> list[torch.Tensor]:
    """One box per connected component (6-connectivity) of ``σ(mask_logits) > threshold``, per image.

    Vertebrae in a binary spine mask are separated by the discs, so components approximate vertebrae.
    Components smaller than ``min_voxels`` are dropped. Boxes come in order of their first voxel along the
    first spatial axis (scipy's labelling order); sort them cranio-caudally with the affine if needed.
    """
    from scipy import ndimage

    probs = torch.sigmoid(mask_logits.detach().float()).cpu().numpy()
    result = []
    for image in probs[:, 0] > threshold:
        labels, _ = ndimage.label(image)
        sizes = np.bincount(labels.ravel())
        objects = ndimage.find_objects(labels)
        boxes = [[s.start for s in sl] + [s.stop for s in sl]
                 for i, sl in enumerate(objects, start=1) if sl is not None and sizes[i] >= min_voxels]
        result.append(torch.tensor(boxes, dtype=torch.float32, device=mask_logits.device).reshape(-1, 6))
    return result
