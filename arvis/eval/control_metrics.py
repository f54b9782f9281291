"""How closely generated images follow their control maps: mask IoU and edge F1.

Shapes: n images, H × W pixels. The generated images' maps are computed by the same operators as the controls
(:mod:`arvis.data.control`), so a perfect follower scores 1 (up to the tokenizer's reconstruction: score the
reconstructions of the real images the controls came from for the practical ceiling).

* mask IoU: |A ∩ B| / |A ∪ B| of the control mask (> 0.5) and the generated image's foreground mask, per image
  (1 where both are empty).
* edge F1: pixel-wise F1 of the control's and the generated image's edges, each binarised at ``threshold`` (edge
  maps in [0, 1], :func:`arvis.data.control.edge_map`), per image (1 where both have none), with no distance
  tolerance. Both return one score per image; reports average them.
"""

from __future__ import annotations

import torch
from torch import Tensor

from arvis.data.control import edge_map, foreground_mask

EDGE_THRESHOLD = 0.1  # an edge map of a step of 0.14 in luma across a pixel reaches it


def _check_pair(images: Tensor, controls: Tensor) -> None:
    if controls.ndim != 4 or controls.shape[1] != 1 or controls.shape[0] != images.shape[0] \
            or controls.shape[2:] != images.shape[2:]:
        raise ValueError(f"expected one (1, H, W) control per image, got controls {tuple(controls.shape)} for images "
                         f"{tuple(images.shape)}")


def mask_iou(images: Tensor, masks: Tensor) -> Tensor:
    """images (n, 3, H, W) in [0, 1], masks (n, 1, H, W) in [0, 1] -> (n,) IoU of each image's foreground with its
    mask."""
    _check_pair(images, masks)
    generated, wanted = foreground_mask(images) > 0.5, masks > 0.5
    intersection = (generated & wanted).flatten(1).sum(1).float()
    union = (generated | wanted).flatten(1).sum(1).float()
    return torch.where(union > 0, intersection / union.clamp(min=1), torch.ones_like(union))


def edge_f1(images: Tensor, edges: Tensor, threshold: float = EDGE_THRESHOLD) -> Tensor:
    """images (n, 3, H, W) in [0, 1], edges (n, 1, H, W) in [0, 1] -> (n,) pixel-wise F1 of each image's edges
    (its edge map above ``threshold``) against the control's."""
    _check_pair(images, edges)
    generated, wanted = edge_map(images) > threshold, edges > threshold
    true_positive = (generated & wanted).flatten(1).sum(1).float()
    total = generated.flatten(1).sum(1).float() + wanted.flatten(1).sum(1).float()
    return torch.where(total > 0, 2 * true_positive / total.clamp(min=1), torch.ones_like(total))
