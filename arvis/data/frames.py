"""Reading videos stored as folders of frame images (shared by the video datasets and FVD)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from PIL import Image

from arvis.data.transforms import as_rgb

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def natural_key(path: Path) -> list:
    """Sort key of a file name with numbers compared as numbers (``frame_2`` before ``frame_10``)."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", path.name)]


def read_frames(frames: list[Path], size: tuple[int, int]) -> np.ndarray:
    """Frame files, all ``size`` = (width, height) -> uint8 (t, h, w, 3); a frame of another size is a ValueError."""
    images = []
    for frame in frames:
        with Image.open(frame) as image:
            if image.size != size:
                raise ValueError(f"frame {frame} is {image.size[0]}x{image.size[1]}, expected {size[0]}x{size[1]}")
            images.append(np.asarray(as_rgb(image)))
    return np.stack(images)
