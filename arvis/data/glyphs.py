"""Glyphs: the embedded procedural class-conditional dataset.

Each sample is one bright shape (a glyph class such as disk, ring or plus) on a darker
background, with random colours, position, scale and a small rotation. Everything is
rendered from continuous coordinates with signed distance functions and a 1-pixel
smooth edge, so the 16, 32 and 64 px versions of a sample look alike.

Sample ``i`` of a dataset with seed ``s`` is drawn from ``np.random.default_rng([s, i])``
and its label is ``i % num_classes``, so any subset or shard is reproducible and
independent of iteration order. The parameter distribution is the same for every class:
the class cannot be inferred from colour, position or scale, only from the shape.

Coordinates: the image spans [-1, 1] on both axes, x to the right and y downward (as
image rows). A glyph lives in local coordinates [-1, 1]^2, mapped onto a square of side
``scale * image_size`` pixels around ``centre``. Shape legend: n = samples, h = w = size.
"""

from __future__ import annotations

import colorsys
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from arvis.data.control import edge_map

SCALE_RANGE = (0.45, 0.75)
MAX_ROTATION_DEGREES = 10.0
_ROTATED_EXTENT = 1.1  # largest half-extent, in local units, of any glyph rotated by up to 10 degrees
_BORDER_MARGIN = 0.04  # image units kept free between the glyph and the image border
RENDER_CHUNK = 2048


@dataclass(frozen=True)
class GlyphParams:
    """Everything but the class that decides how a glyph looks; animate it with ``dataclasses.replace``.

    Attributes:
        centre: (x, y) in image coordinates [-1, 1], y downward.
        scale: glyph side as a fraction of the image side.
        rotation_degrees: counter-clockwise rotation on screen.
        foreground: (r, g, b) in [0, 1] of the shape.
        background: (r, g, b) in [0, 1] of the rest of the image.
    """

    centre: tuple[float, float]
    scale: float
    rotation_degrees: float
    foreground: tuple[float, float, float]
    background: tuple[float, float, float]

    def __post_init__(self) -> None:
        if len(self.centre) != 2:
            raise ValueError(f"centre must be an (x, y) pair, got {self.centre!r}")
        if not self.scale > 0:
            raise ValueError(f"scale must be positive, got {self.scale}")
        for name in ("foreground", "background"):
            colour = getattr(self, name)
            if len(colour) != 3 or not all(0.0 <= channel <= 1.0 for channel in colour):
                raise ValueError(f"{name} must be an (r, g, b) triple in [0, 1], got {colour!r}")


# Signed distance functions in local glyph coordinates: negative inside, about Euclidean.
def _box(x: np.ndarray, y: np.ndarray, half_width: float, half_height: float) -> np.ndarray:
    excess_x = np.abs(x) - half_width
    excess_y = np.abs(y) - half_height
    outside = np.hypot(np.maximum(excess_x, 0.0), np.maximum(excess_y, 0.0))
    return outside + np.minimum(np.maximum(excess_x, excess_y), 0.0)


def _disk(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.hypot(x, y) - 0.9


def _ring(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.abs(np.hypot(x, y) - 0.7) - 0.27


def _square(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return _box(x, y, 0.85, 0.85)


def _square_outline(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.abs(_box(x, y, 0.7, 0.7)) - 0.22


_TRIANGLE_APEX_Y, _TRIANGLE_BASE_Y, _TRIANGLE_HALF_BASE = -0.92, 0.82, 0.95
_TRIANGLE_SIDE_NORMAL = np.array([_TRIANGLE_BASE_Y - _TRIANGLE_APEX_Y, -_TRIANGLE_HALF_BASE]) / math.hypot(
    _TRIANGLE_BASE_Y - _TRIANGLE_APEX_Y, _TRIANGLE_HALF_BASE)


def _triangle(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Upward-pointing isosceles triangle: the largest of its three edge distances."""
    normal_x, normal_y = _TRIANGLE_SIDE_NORMAL
    side = normal_x * np.abs(x) + normal_y * (y - _TRIANGLE_APEX_Y)
    return np.maximum(side, y - _TRIANGLE_BASE_Y)


def _plus(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.minimum(_box(x, y, 0.95, 0.27), _box(x, y, 0.27, 0.95))


def _cross(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    diagonal, antidiagonal = (x + y) / math.sqrt(2.0), (x - y) / math.sqrt(2.0)
    return np.minimum(_box(diagonal, antidiagonal, 1.1, 0.26), _box(diagonal, antidiagonal, 0.26, 1.1))


def _diamond(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    diagonal, antidiagonal = (x + y) / math.sqrt(2.0), (x - y) / math.sqrt(2.0)
    return _box(diagonal, antidiagonal, 0.75, 0.75)


def _horizontal_bars(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return _box(x, np.abs(y) - 0.55, 0.92, 0.3)


def _vertical_bars(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return _horizontal_bars(y, x)


_SHAPES: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "disk": _disk,
    "ring": _ring,
    "square": _square,
    "square_outline": _square_outline,
    "triangle": _triangle,
    "plus": _plus,
    "cross": _cross,
    "diamond": _diamond,
    "horizontal_bars": _horizontal_bars,
    "vertical_bars": _vertical_bars,
}
GLYPH_CLASSES: tuple[str, ...] = tuple(_SHAPES)


def centre_reach(scale: float) -> float:
    """Largest |x| or |y| of a glyph centre that keeps a glyph of ``scale``, rotated by up to
    ``MAX_ROTATION_DEGREES``, inside the image with a ``_BORDER_MARGIN`` to spare."""
    return max(0.0, 1.0 - _BORDER_MARGIN - scale * _ROTATED_EXTENT)


def _luma(rgb: Sequence[float]) -> float:
    return 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]


def sample_glyph_params(label: int, rng: np.random.Generator) -> GlyphParams:
    """Draws the looks of one glyph; the distribution is the same for every ``label``.

    The foreground is a bright saturated colour; the background has a random hue and a
    luma of 5-40% of the foreground's, so the shape always stands out.
    """
    _check_label(label)
    uniform = rng.random(10)  # one draw keeps sampling cheap; each entry has one use below

    def between(position: int, low: float, high: float) -> float:
        return float(low + (high - low) * uniform[position])

    scale = between(0, *SCALE_RANGE)
    reach = centre_reach(scale)
    centre = (between(1, -reach, reach), between(2, -reach, reach))
    rotation = between(3, -MAX_ROTATION_DEGREES, MAX_ROTATION_DEGREES)
    foreground = colorsys.hsv_to_rgb(between(4, 0.0, 1.0), between(5, 0.6, 0.9), between(6, 0.85, 1.0))
    background_hue = colorsys.hsv_to_rgb(between(7, 0.0, 1.0), between(8, 0.2, 0.8), 1.0)
    brightness = between(9, 0.05, 0.4) * _luma(foreground) / _luma(background_hue)
    background = tuple(min(1.0, channel * brightness) for channel in background_hue)
    return GlyphParams(
        centre=centre,
        scale=scale,
        rotation_degrees=rotation,
        foreground=tuple(float(channel) for channel in foreground),
        background=tuple(float(channel) for channel in background),
    )


def _check_label(label: int) -> None:
    if not 0 <= label < len(GLYPH_CLASSES):
        raise ValueError(f"label must be in [0, {len(GLYPH_CLASSES)}) (one of {GLYPH_CLASSES}), got {label}")


def render_glyphs_chw(labels: Sequence[int], size: int, params: Sequence[GlyphParams]) -> np.ndarray:
    """(n, 3, size, size) float32 images."""
    return render_glyphs_with_coverage(labels, size, params)[0]


def render_glyphs_with_coverage(labels: Sequence[int], size: int,
                                params: Sequence[GlyphParams]) -> tuple[np.ndarray, np.ndarray]:
    """-> images (n, 3, size, size) and the foreground coverage (n, size, size), float32 in [0, 1] (the
    renderer's exact foreground mask, soft over the 1-pixel edge); the one rendering path behind every public
    function."""
    if size < 1:
        raise ValueError(f"size must be a positive number of pixels, got {size}")
    if len(labels) != len(params):
        raise ValueError(f"got {len(labels)} labels but {len(params)} params; pass one of each per glyph")
    labels = np.asarray(labels, dtype=np.int64)
    for label in np.unique(labels):
        _check_label(int(label))
    centre = np.array([p.centre for p in params], dtype=np.float32).reshape(-1, 2)
    scale = np.array([p.scale for p in params], dtype=np.float32)
    angle = np.radians(np.array([p.rotation_degrees for p in params], dtype=np.float32))
    foreground = np.array([p.foreground for p in params], dtype=np.float32).reshape(-1, 3)
    background = np.array([p.background for p in params], dtype=np.float32).reshape(-1, 3)

    grid = ((np.arange(size, dtype=np.float32) + 0.5) * (2.0 / size) - 1.0).astype(np.float32)
    coverage = np.empty((len(labels), size, size), dtype=np.float32)
    for label in np.unique(labels):
        rows = np.flatnonzero(labels == label)
        offset_x = grid[None, None, :] - centre[rows, 0, None, None]  # (n, 1, w)
        offset_y = grid[None, :, None] - centre[rows, 1, None, None]  # (n, h, 1)
        cos, sin = np.cos(angle[rows])[:, None, None], np.sin(angle[rows])[:, None, None]
        inverse_scale = (1.0 / scale[rows])[:, None, None]
        local_x = (cos * offset_x - sin * offset_y) * inverse_scale
        local_y = (sin * offset_x + cos * offset_y) * inverse_scale
        distance = _SHAPES[GLYPH_CLASSES[label]](local_x, local_y)  # local units
        pixels_per_unit = (scale[rows] * (size / 2.0))[:, None, None]
        coverage[rows] = np.clip(0.5 - distance * pixels_per_unit, 0.0, 1.0)
    images = background[:, :, None, None] + (foreground - background)[:, :, None, None] * coverage[:, None]
    return np.clip(images, 0.0, 1.0).astype(np.float32, copy=False), coverage  # clip float rounding


def render_glyphs(labels: Sequence[int], size: int, params: Sequence[GlyphParams]) -> np.ndarray:
    """Renders many glyphs at once: (n, size, size, 3) float32 in [0, 1]."""
    return np.ascontiguousarray(render_glyphs_chw(labels, size, params).transpose(0, 2, 3, 1))


def render_glyph(label: int, size: int, params: GlyphParams) -> np.ndarray:
    """Renders one glyph of class ``GLYPH_CLASSES[label]``: (size, size, 3) float32 in [0, 1]."""
    return render_glyphs([label], size, [params])[0]


class GlyphDataset(Dataset):
    """``num_samples`` glyph images with balanced labels ``index % num_classes``.

    Items are (image (3, h, w) float32 in [0, 1], label int), or with ``items="dicts"`` dicts of the image and
    every condition a sample has: ``labels`` (int), ``caption`` (str, :func:`arvis.data.captions.caption`),
    ``mask`` (1, h, w) float32 (the renderer's foreground coverage) and ``edges`` (1, h, w) float32
    (:func:`arvis.data.control.edge_map` of the image). Sample ``index`` depends only on (seed, index), not on
    ``num_samples`` nor on the order of access.

    Args:
        num_samples: number of images, at least 1.
        image_size: side in pixels, in [8, 256].
        seed: non-negative dataset seed.
        num_classes: uses the first ``num_classes`` of ``GLYPH_CLASSES``, in [2, 10].
        items: ``"pairs"`` or ``"dicts"`` (see above).
    """

    def __init__(self, num_samples: int, image_size: int = 32, seed: int = 0, num_classes: int = 10,
                 items: str = "pairs") -> None:
        if items not in ("pairs", "dicts"):
            raise ValueError(f"items must be 'pairs' or 'dicts', got {items!r}")
        self.items = items
        if num_samples < 1:
            raise ValueError(f"num_samples must be at least 1, got {num_samples}")
        if not 8 <= image_size <= 256:
            raise ValueError(f"image_size must be in [8, 256] pixels, got {image_size}")
        if not 2 <= num_classes <= len(GLYPH_CLASSES):
            raise ValueError(f"num_classes must be in [2, {len(GLYPH_CLASSES)}], got {num_classes}")
        if seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed}")
        self.num_samples = int(num_samples)
        self.image_size = int(image_size)
        self.seed = int(seed)
        self.num_classes = int(num_classes)
        self.class_names: tuple[str, ...] = GLYPH_CLASSES[:num_classes]

    def __len__(self) -> int:
        return self.num_samples

    def _check_index(self, index: int) -> int:
        if not -self.num_samples <= index < self.num_samples:
            raise IndexError(f"index {index} out of range for a {type(self).__name__} of {self.num_samples} samples")
        return index % self.num_samples

    def label(self, index: int) -> int:
        """Class index of sample ``index``."""
        return self._check_index(index) % self.num_classes

    def params(self, index: int) -> GlyphParams:
        """The looks of sample ``index``, e.g. to animate it into a video."""
        index = self._check_index(index)
        return sample_glyph_params(index % self.num_classes, np.random.default_rng([self.seed, index]))

    def caption(self, index: int) -> str:
        """The caption of sample ``index`` (class, colour, size and position in words)."""
        from arvis.data.captions import caption

        return caption(self.label(index), self.params(index))

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int] | dict:
        label = self.label(index)
        images, coverage = render_glyphs_with_coverage([label], self.image_size, [self.params(index)])
        image = torch.from_numpy(images[0])
        if self.items == "pairs":
            return image, label
        return {"image": image, "labels": label, "caption": self.caption(index),
                "mask": torch.from_numpy(coverage[:1]), "edges": edge_map(image[None])[0]}

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Renders the whole dataset: images (n, 3, h, w) float32 in [0, 1] and labels (n,) long."""
        labels = torch.arange(self.num_samples) % self.num_classes
        images = torch.empty(self.num_samples, 3, self.image_size, self.image_size)
        for start in range(0, self.num_samples, RENDER_CHUNK):
            indices = range(start, min(start + RENDER_CHUNK, self.num_samples))
            chunk_labels = [index % self.num_classes for index in indices]
            chunk_params = [self.params(index) for index in indices]
            rendered = render_glyphs_chw(chunk_labels, self.image_size, chunk_params)
            images[start:start + len(indices)] = torch.from_numpy(rendered)
        return images, labels
