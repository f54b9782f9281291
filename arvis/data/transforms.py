"""Image transforms shared by datasets: PIL resize and crop, and PIL to tensor."""

from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image


def resize_shorter_side(pil_image: Image.Image, size: int) -> Image.Image:
    """Resizes so the shorter side is ``size``: first halved with a box filter while it stays at least twice
    ``size``, then bicubic (ADM's and LlamaGen's ``center_crop_arr`` / ``random_crop_arr``)."""
    while min(pil_image.size) >= 2 * size:
        pil_image = pil_image.resize(tuple(side // 2 for side in pil_image.size), resample=Image.Resampling.BOX)
    width, height = pil_image.size
    ratio = size / min(width, height)
    new_width, new_height = max(size, round(width * ratio)), max(size, round(height * ratio))
    return pil_image.resize((new_width, new_height), Image.Resampling.BICUBIC)


def center_crop_resize(pil_image: Image.Image, size: int) -> Image.Image:
    """Resizes so the shorter side is ``size`` (:func:`resize_shorter_side`), then crops the central square."""
    if size < 1:
        raise ValueError(f"size must be a positive number of pixels, got {size}")
    resized = resize_shorter_side(pil_image, size)
    left, top = (resized.width - size) // 2, (resized.height - size) // 2
    return resized.crop((left, top, left + size, top + size))


def random_crop_resize(pil_image: Image.Image, size: int, *, max_scale: float = 1.25,
                       generator: torch.Generator | None = None) -> Image.Image:
    """LlamaGen's tokenizer augmentation (``random_crop_arr`` with crop fractions 0.8-1.0): the shorter side is
    resized to an integer drawn uniformly from [size, ceil(max_scale * size)], then a size x size square is
    cropped at a uniformly drawn offset. Draws come from ``generator`` (None: torch's global RNG)."""
    if size < 1:
        raise ValueError(f"size must be a positive number of pixels, got {size}")
    shorter = int(torch.randint(size, math.ceil(size * max_scale) + 1, (), generator=generator))
    resized = resize_shorter_side(pil_image, shorter)
    top = int(torch.randint(resized.height - size + 1, (), generator=generator))
    left = int(torch.randint(resized.width - size + 1, (), generator=generator))
    return resized.crop((left, top, left + size, top + size))


SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")


def as_rgb(pil_image: Image.Image) -> Image.Image:
    """An 8-bit RGB copy of ``pil_image``, scaled by the image's real bit depth.

    PIL's own ``convert("RGB")`` clips 16-bit greyscale (modes ``I;16*``, and ``I`` for a 16-bit PNG as older
    Pillow versions open it) at 255, so a mid-grey 16-bit PNG (32768) would come out white; here 0..65535 maps
    onto 0..255. 16-bit RGB PNGs already open as 8-bit RGB. Floating-point images (mode ``F``) and 32-bit integer
    images of other formats have no defined range and are refused.
    """
    mode = pil_image.mode
    if mode == "I" and pil_image.format != "PNG":
        raise ValueError(f"a 32-bit integer {pil_image.format or ''} image has no defined value range; save it as an "
                         "8- or 16-bit image")
    if mode in SIXTEEN_BIT_MODES or mode == "I":
        values = np.asarray(pil_image).astype(np.int64)
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise ValueError(f"a 32-bit integer image spans [{values.min()}, {values.max()}], beyond 16 bits; "
                             "save it as an 8- or 16-bit image")
        grey = np.round(values / 257.0).astype(np.uint8)  # 65535 / 257 = 255 exactly
        return Image.fromarray(grey, mode="L").convert("RGB")
    if mode == "F":
        raise ValueError("floating-point (mode F) images have no defined value range; save them as 8- or 16-bit "
                         "integer images")
    return pil_image.convert("RGB")


def to_unit_tensor(pil_image: Image.Image) -> torch.Tensor:
    """(3, h, w) float32 tensor in [0, 1] from any PIL image, converted to RGB by :func:`as_rgb`."""
    pixels = np.asarray(as_rgb(pil_image), dtype=np.float32) / 255.0  # (h, w, 3)
    return torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1)))
