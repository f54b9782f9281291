"""Sample grids as PIL images, clips as animated GIFs and frame folders."""

from __future__ import annotations

from pathlib import Path
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
    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
        raise ValueError(f"scale is the pixel repetition factor and must be an integer >= 1, got {scale!r}")
    if isinstance(padding, bool) or not isinstance(padding, int) or padding < 0:
        raise ValueError(f"padding must be an integer >= 0, got {padding!r}")
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


def clip_grid(clips: torch.Tensor, num_rows: int, *, scale: int = 1, row_labels: Sequence[str] | None = None,
              padding: int = 2) -> list[Image.Image]:
    """Tiles (n, 3, t, h, w) clips in [0, 1] into ``num_rows`` rows: one grid image per frame (t images)."""
    if clips.ndim != 5 or clips.shape[1] != 3:
        raise ValueError(f"expected clips of shape (n, 3, t, h, w), got {tuple(clips.shape)}")
    return [image_grid(clips[:, :, frame], num_rows, scale=scale, row_labels=row_labels, padding=padding)
            for frame in range(clips.shape[2])]


def save_gif(frames: Sequence[Image.Image], path: str | Path, *, fps: float = 8.0) -> Path:
    """Writes frames as a looping animated GIF at ``fps`` frames per second."""
    if not frames:
        raise ValueError("no frames to write")
    if not fps > 0 or fps == float("inf"):
        raise ValueError(f"fps must be a positive finite number of frames per second, got {fps!r}")
    path = Path(path)
    frames[0].save(path, save_all=True, append_images=list(frames[1:]), duration=round(1000 / fps), loop=0)
    return path


def save_clip_frames(clip: np.ndarray, folder: str | Path) -> Path:
    """Writes one uint8 clip (t, h, w, 3) as ``folder/frame_0000.png`` ... (the layout the video datasets read)."""
    if clip.ndim != 4 or clip.shape[-1] != 3 or clip.dtype != np.uint8:
        raise ValueError(f"expected a uint8 clip of shape (t, h, w, 3), got {clip.dtype} {clip.shape}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for index, frame in enumerate(clip):
        Image.fromarray(frame).save(folder / f"frame_{index:04d}.png")
    return folder
