"""Sample grids as PIL images."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from einops import rearrange
from PIL import Image, ImageDraw


def image_grid(images: torch.Tensor, num_rows: int, *, scale: int = 1, row_labels: Sequence[str] | None = None,
               padding: int = 2) -> Image.Image:
    """Tiles (n, 3, h, w) images in [0, 1] into ``num_rows`` rows, optionally with a text label per row.

    ``scale`` enlarges each image by pixel repetition (nearest), so small samples stay crisp.
    """
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected images of shape (n, 3, h, w), got {tuple(images.shape)}")
    if num_rows < 1 or images.shape[0] % num_rows:
        raise ValueError(f"{images.shape[0]} images do not fill {num_rows} rows evenly")
    if row_labels is not None and len(row_labels) != num_rows:
        raise ValueError(f"got {len(row_labels)} row labels for {num_rows} rows")
    pixels = images.clamp(0, 1).repeat_interleave(scale, dim=2).repeat_interleave(scale, dim=3)
    pixels = torch.nn.functional.pad(pixels, (padding, padding, padding, padding), value=1.0)
    grid = rearrange(pixels, "(r c) ch h w -> (r h) (c w) ch", r=num_rows)
    canvas = Image.fromarray((grid.numpy() * 255).round().astype(np.uint8))
    if row_labels is None:
        return canvas
    label_width = 8 + 7 * max(len(label) for label in row_labels)
    labelled = Image.new("RGB", (canvas.width + label_width, canvas.height), "white")
    labelled.paste(canvas, (label_width, 0))
    draw = ImageDraw.Draw(labelled)
    row_height = canvas.height // num_rows
    for row, label in enumerate(row_labels):
        draw.text((4, row * row_height + row_height // 2 - 5), label, fill="black")
    return labelled
