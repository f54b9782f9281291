"""Image transforms shared by datasets: PIL resize and crop, and PIL to tensor."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image


def center_crop_resize(pil_image: Image.Image, size: int) -> Image.Image:
    """Resizes so the shorter side is ``size`` (bicubic), then crops the central size x size square."""
    if size < 1:
        raise ValueError(f"size must be a positive number of pixels, got {size}")
    width, height = pil_image.size
    ratio = size / min(width, height)
    new_width, new_height = max(size, round(width * ratio)), max(size, round(height * ratio))
    resized = pil_image.resize((new_width, new_height), Image.Resampling.BICUBIC)
    left, top = (new_width - size) // 2, (new_height - size) // 2
    return resized.crop((left, top, left + size, top + size))


def to_unit_tensor(pil_image: Image.Image) -> torch.Tensor:
    """(3, h, w) float32 tensor in [0, 1] from any PIL image, converted to RGB."""
    pixels = np.asarray(pil_image.convert("RGB"), dtype=np.float32) / 255.0  # (h, w, 3)
    return torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1)))
