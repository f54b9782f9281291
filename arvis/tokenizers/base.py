"""Tokenizer interface: pixels <-> tokens, given as discrete ids or as continuous latent vectors.

Shapes (einops legend used across arvis):
    b batch, c channels, h w image height and width, l token sequence length, e latent dimension (the
    width of one token's vector in the quantizer's input space, :attr:`Tokenizer.latent_dim`).

A tokenizer works in its own pixel range (``pixel_range``, e.g. (-1, 1) for
LlamaGen's VQ) and declares its token ``layout``. Users hand images in [0, 1];
:meth:`Tokenizer.from_unit_range` / :meth:`Tokenizer.to_unit_range` convert at the
boundary so that no caller has to know a tokenizer's convention.

Tokens come in two forms, described by :attr:`Tokenizer.token_spec`: ids (b, l) long from :meth:`Tokenizer.encode`,
and latents (b, l, e) float from :meth:`Tokenizer.encode_latents`, the quantizer's input per token, whose nearest
codes are the ids. :meth:`Tokenizer.decode` takes either (vectors may be unquantised, as Distilled Decoding's).
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


@dataclasses.dataclass(frozen=True)
class TokenSpec:
    """What a component's tokens are: their layout, the id vocabulary and the width of one token's vector.

    Attributes:
        layout: how the flat sequence of l tokens is arranged.
        vocab_size: ids lie in [0, vocab_size); None: continuous tokens only (no ids). For a consumer: None means
            it needs no ids.
        latent_dim: e, the width of one token's vector in the quantizer's input space; None when no vector space
            is exposed (or, for a consumer, when it needs none).
    """

    layout: TokenLayout
    vocab_size: int | None
    latent_dim: int | None

    def __post_init__(self) -> None:
        if not isinstance(self.layout, TokenLayout):
            raise ValueError(f"TokenSpec.layout must be a TokenLayout, got {type(self.layout).__name__}")
        for name in ("vocab_size", "latent_dim"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"TokenSpec.{name} must be a positive integer or None, got {value!r}")

    def check_serves(self, needed: TokenSpec, who: str) -> None:
        """Raises ``ValueError`` naming the mismatch unless tokens of this (the tokenizer's) spec can feed ``who``
        (e.g. "generator"), which needs ``needed``: equal layouts, and equal ``vocab_size`` / ``latent_dim``
        wherever ``needed`` gives one."""
        if needed.vocab_size is not None and self.vocab_size is None:
            raise ValueError(
                f"tokenizer has no vocabulary (its tokens are continuous latents only) but the {who} needs token "
                f"ids of a vocabulary of {needed.vocab_size}; use a codebook tokenizer or a {who} of latents"
            )
        if needed.vocab_size is not None and self.vocab_size != needed.vocab_size:
            raise ValueError(
                f"tokenizer vocabulary ({self.vocab_size}) does not match the {who}'s ({needed.vocab_size}); "
                f"train the {who} on this tokenizer's tokens"
            )
        if self.layout != needed.layout:
            raise ValueError(
                f"tokenizer token layout {self.layout.shapes} does not match the {who}'s "
                f"{needed.layout.shapes}; the {who} was built for another image size or tokenizer"
            )
        if needed.latent_dim is not None and self.latent_dim is None:
            raise ValueError(
                f"tokenizer exposes no token latents but the {who} needs {needed.latent_dim}-dimensional ones; "
                "use a tokenizer with latents (VQ, VAR, ResTok or LARP)"
            )
        if needed.latent_dim is not None and self.latent_dim != needed.latent_dim:
            raise ValueError(
                f"tokenizer latent dimension ({self.latent_dim}) does not match the {who}'s ({needed.latent_dim}); "
                f"train the {who} on this tokenizer's latents"
            )


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
    """Base class. Subclasses implement ``encode``, ``decode_ids``, ``forward`` and the properties below; those
    with latents also ``latent_dim``, ``encode_latents``, ``nearest_tokens`` and ``decode_vectors``."""

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
    def latent_dim(self) -> int | None:
        """e, the width of one token's latent vector (the quantizer's input space); None: no latents exposed."""
        return None

    @property
    def token_spec(self) -> TokenSpec:
        """This tokenizer's tokens: layout, vocabulary (None: continuous only) and latent dimension."""
        return TokenSpec(self.layout, self.vocab_size, self.latent_dim)

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

    def check_latents(self, vectors: Tensor, length: int | None = None) -> None:
        """Raises ``ValueError`` unless ``vectors`` is (b, length, e) floating point with e = :attr:`latent_dim`
        (``length`` defaults to the layout's l)."""
        name = type(self).__name__
        length = self.layout.length if length is None else length
        if self.latent_dim is None:
            raise ValueError(f"{name} exposes no token latents, so it cannot take token vectors; pass (batch, "
                             f"{length}) long token ids")
        expected = (length, self.latent_dim)
        if not isinstance(vectors, Tensor) or not vectors.is_floating_point() or vectors.ndim != 3 \
                or tuple(vectors.shape[1:]) != expected:
            shape = (f"{vectors.dtype} {tuple(vectors.shape)}" if isinstance(vectors, Tensor)
                     else type(vectors).__name__)
            hint = "; token ids (batch, l) must be torch.long" if getattr(vectors, "ndim", None) == 2 else ""
            raise ValueError(f"expected float token vectors of shape (batch, {expected[0]}, {expected[1]}) for {name} "
                             f"(one {expected[1]}-dimensional latent per token), got {shape}{hint}")

    def forward(self, pixels: Tensor, *, generator: torch.Generator | None = None) -> TokenizerOutput:
        """Training pass: pixels in the tokenizer's range -> :class:`TokenizerOutput`. ``generator`` is the
        randomness of the draws a tokenizer makes explicitly in training (ResTok's nested dropout; the trainer
        seeds it by run seed, step, micro-batch and process); None draws from torch's global RNG."""
        raise NotImplementedError

    def encode(self, pixels: Tensor) -> Tensor:
        """pixels (b, c, h, w) (or clips) in the tokenizer's range -> token ids (b, l) long."""
        raise NotImplementedError

    def encode_latents(self, pixels: Tensor) -> Tensor:
        """pixels as :meth:`encode` -> latents (b, l, e) float: the quantizer's input per token, in the order of
        :meth:`encode` (after the L2 normalisation the codebook lives in, where the quantizer normalises), so that
        ``nearest_tokens(encode_latents(x))`` equals ``encode(x)``. Changes no state."""
        raise ValueError(f"{type(self).__name__} exposes no latents (no quantizer input per token); encode it to "
                         "token ids with encode(), or use a tokenizer with latents (VQ, VAR, ResTok or LARP)")

    def nearest_tokens(self, latents: Tensor) -> Tensor:
        """latents (b, l, e) float -> token ids (b, l) long by the quantizer's own nearest-code rule."""
        raise ValueError(f"{type(self).__name__} exposes no latents, so it has no nearest-code rule for vectors")

    def decode(self, tokens: Tensor) -> Tensor:
        """tokens -> pixels (b, c, h, w) (or clips), not clamped (``to_unit_range`` clamps). ``tokens`` are ids
        (b, l) long, or floating vectors (b, l, e) with e = :attr:`latent_dim`: code vectors, quantised or not
        (e.g. ``code_vectors()[ids]``, Distilled Decoding's continuous output, or :meth:`encode_latents`)."""
        if isinstance(tokens, Tensor) and tokens.is_floating_point():
            return self.decode_vectors(tokens)
        if not isinstance(tokens, Tensor) or tokens.dtype != torch.long:
            vectors = "" if self.latent_dim is None else \
                f" or token vectors (batch, {self.layout.length}, {self.latent_dim}) floating point"
            raise ValueError(f"expected token ids (batch, {self.layout.length}) torch.long{vectors}, got "
                             f"{getattr(tokens, 'dtype', type(tokens).__name__)}")
        return self.decode_ids(tokens)

    def decode_ids(self, tokens: Tensor) -> Tensor:
        """tokens (b, l) long -> pixels, not clamped; what :meth:`decode` does with ids."""
        raise NotImplementedError

    def decode_vectors(self, vectors: Tensor) -> Tensor:
        """vectors (b, l, e) float -> pixels, not clamped; what :meth:`decode` does with vectors."""
        self.check_latents(vectors)
        raise ValueError(f"{type(self).__name__} cannot decode token vectors; pass (batch, {self.layout.length}) "
                         "long token ids")

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
