"""Glyph attributes measured from images, in the caption bins of :mod:`arvis.data.captions`.

From the foreground (:func:`arvis.data.control.foreground_mask`) of a (b, 3, H, W) image in [0, 1]:

* colour: the hue of the mean foreground colour -> ``hue_bin``;
* size: the scale whose rendered area matches the foreground's, given the glyph class (each class covers its own
  fraction of its square; rotation does not change the area) -> ``size_bin``;
* position: the foreground's centroid as the centre, in image coordinates [-1, 1] -> ``position_bins``.

An image with an empty foreground gets -1 in every attribute (it matches nothing).
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from torch import Tensor

from arvis.data.captions import hue_bin, position_bins, size_bin
from arvis.data.control import foreground_mask
from arvis.data.glyphs import GLYPH_CLASSES, GlyphParams, render_glyphs_with_coverage

ATTRIBUTES = ("colour", "size", "position")


@functools.cache
def class_fill_fractions(size: int = 128) -> tuple[float, ...]:
    """Per class, the fraction of its square (side = scale × image side) that the glyph covers."""
    params = GlyphParams(centre=(0.0, 0.0), scale=0.5, rotation_degrees=0.0, foreground=(1.0, 1.0, 1.0),
                         background=(0.0, 0.0, 0.0))
    _, coverage = render_glyphs_with_coverage(list(range(len(GLYPH_CLASSES))), size, [params] * len(GLYPH_CLASSES))
    return tuple(float(fraction) / 0.25 for fraction in coverage.mean(axis=(1, 2)))


def measure_attributes(images: Tensor, labels: Tensor) -> dict[str, Tensor]:
    """images (b, 3, H, W) in [0, 1] and the glyph classes (b,) long they should show -> {"colour": (b,),
    "size": (b,), "position": (b,)} long bin indices (position = 3 · row + column), -1 where the foreground is
    empty."""
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise ValueError(f"expected one class per image, got labels {tuple(labels.shape)} for {images.shape[0]} images")
    masks = foreground_mask(images.float())[:, 0]  # (b, H, W)
    height, width = masks.shape[1:]
    ys = (torch.arange(height, dtype=torch.float32) + 0.5) * (2.0 / height) - 1.0
    xs = (torch.arange(width, dtype=torch.float32) + 0.5) * (2.0 / width) - 1.0
    fills = class_fill_fractions()
    results = {name: torch.full((images.shape[0],), -1, dtype=torch.long) for name in ATTRIBUTES}
    for index, (mask, image) in enumerate(zip(masks.cpu(), images.float().cpu(), strict=True)):
        area = float(mask.mean())
        if area == 0:
            continue
        colour = (image * mask).flatten(1).sum(1) / mask.sum()
        scale = float(np.sqrt(area / fills[int(labels[index])]))
        centre = (float((mask.sum(0) * xs).sum() / mask.sum()), float((mask.sum(1) * ys).sum() / mask.sum()))
        column, row = position_bins(centre, scale)
        results["colour"][index] = hue_bin(tuple(float(channel) for channel in colour))
        results["size"][index] = size_bin(scale)
        results["position"][index] = 3 * row + column
    return results


def caption_attributes(labels: Tensor, params: list[GlyphParams]) -> dict[str, Tensor]:
    """The bins the captions of these glyphs name (what :func:`measure_attributes` should find)."""
    colour, size, position = [], [], []
    for parameters in params:
        column, row = position_bins(parameters.centre, parameters.scale)
        colour.append(hue_bin(parameters.foreground))
        size.append(size_bin(parameters.scale))
        position.append(3 * row + column)
    return {"colour": torch.tensor(colour), "size": torch.tensor(size), "position": torch.tensor(position)}
