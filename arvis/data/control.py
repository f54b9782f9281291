"""Control maps from images: a foreground mask and an edge map, for any (b, 3, H, W) images in [0, 1].

The glyph datasets yield these maps with each image (computed by these same functions from the rendered image),
and ControlAR conditions on them; they work the same on a user's own images (:func:`control_from_image`), and a
map drawn by hand is read with :func:`control_from_file`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
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


CONTROL_KINDS = {"mask": foreground_mask, "edges": edge_map}  # name -> operator, as the CLI and ControlAR name them


def control_map(images: Tensor, kind: str) -> Tensor:
    """(b, 3, H, W) images in [0, 1] -> (b, 1, H, W) control maps of ``kind`` ("mask" or "edges")."""
    if kind not in CONTROL_KINDS:
        raise ValueError(f"unknown control kind {kind!r}; choose one of {sorted(CONTROL_KINDS)}")
    return CONTROL_KINDS[kind](images)


def read_image_file(path: str | Path, mode: str) -> Tensor:
    """An image file -> (1, c, H, W) float in [0, 1], read by PIL in ``mode`` ("L": one channel, "RGB": three).
    Raises ``FileNotFoundError`` or ``ValueError`` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no image file {path}")
    try:
        with Image.open(path) as image:
            pixels = np.asarray(image.convert(mode), dtype=np.float32) / 255.0
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise ValueError(f"cannot read the image {path}: {error}") from error
    tensor = torch.from_numpy(pixels)
    return (tensor[None, None] if tensor.ndim == 2 else tensor.permute(2, 0, 1)[None]).contiguous()


def control_from_file(path: str | Path, channels: int) -> Tensor:
    """A control map saved as an image (a mask or an edge map, white = 1) -> (1, channels, H, W) in [0, 1]; an RGB
    file is read as grey for a one-channel generator."""
    return read_image_file(path, "L" if channels == 1 else "RGB")


def control_from_image(path: str | Path, kind: str) -> Tensor:
    """A photo -> its (1, 1, H, W) control map of ``kind`` ("mask" or "edges"), by the operators the training data
    uses."""
    return control_map(read_image_file(path, "RGB"), kind)
