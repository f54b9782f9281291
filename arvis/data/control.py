"""Control maps from images: a foreground mask and an edge map, for any (b, 3, H, W) images in [0, 1].

The glyph datasets yield these maps with each image (computed by these same functions from the rendered image),
and ControlAR conditions on them; they work the same on a user's own images.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

_LUMA = (0.299, 0.587, 0.114)


def _check_images(images: Tensor) -> None:
    if not isinstance(images, Tensor) or images.ndim != 4 or images.shape[1] != 3 or not images.is_floating_point():
        raise ValueError(f"expected float images (b, 3, H, W) in [0, 1], got "
                         f"{getattr(images, 'dtype', type(images).__name__)} {tuple(getattr(images, 'shape', ()))}")
    if images.numel() and (images.min() < 0 or images.max() > 1 or not torch.isfinite(images).all()):
        raise ValueError("images must lie in [0, 1]; convert them with tokenizer.to_unit_range first")


def luma(images: Tensor) -> Tensor:
    """(b, 3, H, W) -> (b, 1, H, W) Rec. 601 luma."""
    weights = torch.tensor(_LUMA, dtype=images.dtype, device=images.device)
    return torch.einsum("bchw,c->bhw", images, weights)[:, None]


def foreground_mask(images: Tensor) -> Tensor:
    """(b, 3, H, W) in [0, 1] -> (b, 1, H, W) float {0, 1}: the pixels brighter than halfway between the image's
    2nd and 98th luma percentiles (the glyphs' bright shape on its darker background)."""
    _check_images(images)
    values = luma(images).flatten(1)
    low, high = torch.quantile(values, torch.tensor([0.02, 0.98], dtype=values.dtype, device=values.device),
                               dim=1)
    threshold = (low + high) / 2
    return (values > threshold[:, None]).to(images.dtype).reshape(images.shape[0], 1, *images.shape[2:])


def edge_map(images: Tensor) -> Tensor:
    """(b, 3, H, W) in [0, 1] -> (b, 1, H, W) in [0, 1]: the Sobel gradient magnitude of the luma (replicated
    borders), divided by its largest possible value (4·sqrt(2))."""
    _check_images(images)
    sobel_x = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], dtype=images.dtype,
                           device=images.device)
    kernels = torch.stack([sobel_x, sobel_x.T])[:, None]  # (2, 1, 3, 3)
    gradients = F.conv2d(F.pad(luma(images), (1, 1, 1, 1), mode="replicate"), kernels)
    return (gradients.pow(2).sum(1, keepdim=True).sqrt() / (4 * 2 ** 0.5)).clamp(0, 1)
