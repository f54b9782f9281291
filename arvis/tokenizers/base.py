"""Tokenizer interface: pixels <-> discrete tokens.

Shapes (einops legend used across arvis):
    b batch, c channels, h w image height and width, l token sequence length.

A tokenizer works in its own pixel range (``pixel_range``, e.g. (-1, 1) for
LlamaGen's VQ) and declares its token ``layout``. Users hand images in [0, 1];
:meth:`Tokenizer.from_unit_range` / :meth:`Tokenizer.to_unit_range` convert at the
boundary so that no caller has to know a tokenizer's convention.
"""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

import torch
from torch import Tensor

from arvis.checks import check_token_ids
from arvis.modeling import Component
from arvis.registry import Registry

TOKENIZERS: Registry = Registry("tokenizer")


@dataclasses.dataclass(frozen=True)
class TokenLayout:
    """How a flat token sequence (b, l) is arranged: one shape per unit (a 2D grid, scales, levels)."""

    shapes: tuple[tuple[int, ...], ...]

    @property
    def length(self) -> int:
        return sum(math.prod(shape) for shape in self.shapes)


@dataclasses.dataclass
class TokenizerOutput:
    """What ``Tokenizer.forward`` returns during training.

    Attributes:
        reconstruction: (b, c, h, w) decoded pixels in the tokenizer's range.
        tokens: (b, l) long token ids.
        losses: named scalar losses of the tokenizer itself (e.g. codebook, commitment).
        metrics: named scalar diagnostics that are not optimised (e.g. codebook usage).
    """

    reconstruction: Tensor
    tokens: Tensor
    losses: dict[str, Tensor]
    metrics: dict[str, Tensor]


class Tokenizer(Component):
    """Base class. Subclasses implement ``encode``, ``decode``, ``forward`` and the properties below."""

    kind: ClassVar[str] = "tokenizer"
    registry = TOKENIZERS
    pixel_range: ClassVar[tuple[float, float]] = (-1.0, 1.0)

    @property
    def layout(self) -> TokenLayout:
        raise NotImplementedError

    # The three below read the config's ``codebook_size``, ``image_size`` (square) and ``in_channels``
    # fields, which every built-in tokenizer config has; override them when a config differs.
    @property
    def vocab_size(self) -> int | None:
        return self.config.codebook_size

    @property
    def image_size(self) -> tuple[int, int]:
        return self.config.image_size, self.config.image_size

    @property
    def in_channels(self) -> int:
        return self.config.in_channels

    @property
    def pixel_shape(self) -> tuple[int, ...]:
        """Shape of one input without the batch: (c, h, w) for images, (c, t, h, w) for video tokenizers."""
        return (self.in_channels, *self.image_size)

    def for_inference(self) -> Tokenizer:
        """The model to save after training, without training-only parts (LARP's prior); default ``self``."""
        return self

    def set_training_progress(self, fraction: float) -> None:
        """Told by the trainer before each step how far training is (0 to 1); for schedules inside a
        tokenizer (LARP's scheduled sampling). The default ignores it."""

    def code_vectors(self) -> Tensor:
        """(v, e) the vectors that token ids stand for (as looked up, e.g. unit-normalised), for methods that
        work on codes rather than ids (Distilled Decoding). Codebook tokenizers override it."""
        raise ValueError(f"{type(self).__name__} does not expose its code vectors; Distilled Decoding needs a "
                         "codebook tokenizer (VQ or VAR)")

    def decode_code_vectors(self, codes: Tensor) -> Tensor:
        """codes (b, l, e), one (possibly continuous, unquantised) code vector per token -> pixels, not clamped."""
        raise ValueError(f"{type(self).__name__} cannot decode continuous code vectors; Distilled Decoding needs a "
                         "codebook tokenizer (VQ or VAR)")

    def check_code_vectors(self, codes: Tensor) -> None:
        """Raises ``ValueError`` unless ``codes`` is (b, l, e) floating point for this tokenizer."""
        expected = (self.layout.length, self.code_vectors().shape[1])
        if not isinstance(codes, Tensor) or not codes.is_floating_point() or codes.ndim != 3 \
                or tuple(codes.shape[1:]) != expected:
            shape = tuple(codes.shape) if isinstance(codes, Tensor) else type(codes).__name__
            raise ValueError(f"expected float code vectors of shape (batch, {expected[0]}, {expected[1]}), got {shape}")

    def forward(self, pixels: Tensor, *, generator: torch.Generator | None = None) -> TokenizerOutput:
        """Training pass: pixels in the tokenizer's range -> :class:`TokenizerOutput`. ``generator`` is the
        randomness of the draws a tokenizer makes explicitly in training (ResTok's nested dropout; the trainer
        seeds it by run seed, step, micro-batch and process); None draws from torch's global RNG."""
        raise NotImplementedError

    def encode(self, pixels: Tensor) -> Tensor:
        raise NotImplementedError

    def decode(self, tokens: Tensor) -> Tensor:
        raise NotImplementedError

    def from_unit_range(self, images: Tensor) -> Tensor:
        """Maps images in [0, 1] to this tokenizer's pixel range."""
        low, high = self.pixel_range
        return images * (high - low) + low

    def to_unit_range(self, pixels: Tensor) -> Tensor:
        """Maps pixels in this tokenizer's range to [0, 1], clamped."""
        low, high = self.pixel_range
        return ((pixels - low) / (high - low)).clamp(0.0, 1.0)

    def check_pixels(self, pixels: Tensor) -> None:
        """Raises ``ValueError`` naming the problem if ``pixels`` cannot be encoded."""
        if not isinstance(pixels, Tensor):
            raise ValueError(f"expected a torch.Tensor of pixels, got {type(pixels).__name__}")
        if not pixels.is_floating_point():
            raise ValueError(
                f"expected floating-point pixels in {self.pixel_range}, got dtype {pixels.dtype}; "
                "convert uint8 images with images.float() / 255 and map them with from_unit_range()"
            )
        weight_dtype = next(self.parameters()).dtype
        if pixels.dtype != weight_dtype and not torch.is_autocast_enabled(pixels.device.type):
            raise ValueError(
                f"pixels are {pixels.dtype} but the tokenizer's weights are {weight_dtype}; "
                f"pass pixels.to({weight_dtype})"
            )
        expected = self.pixel_shape
        if pixels.ndim != 1 + len(expected) or tuple(pixels.shape[1:]) != expected:
            what = "images" if len(expected) == 3 else f"clips of {expected[1]} frames"
            raise ValueError(
                f"expected pixels of shape (batch, {', '.join(map(str, expected))}), got {tuple(pixels.shape)}; "
                f"resize {what} to {self.image_size[0]}x{self.image_size[1]} with {self.in_channels} channels"
            )
        low, high = self.pixel_range
        tolerance = 1e-3 * (high - low)
        if pixels.numel() and (pixels.min() < low - tolerance or pixels.max() > high + tolerance):
            raise ValueError(
                f"pixel values span [{pixels.min().item():.3g}, {pixels.max().item():.3g}] but this tokenizer "
                f"expects {self.pixel_range}; map [0, 1] images with from_unit_range()"
            )

    def check_tokens(self, tokens: Tensor) -> None:
        """Raises ``ValueError`` naming the problem if ``tokens`` do not fit this component."""
        check_token_ids(tokens, self.layout.length, self.vocab_size)
