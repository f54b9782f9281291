"""VQGAN image tokenizer in LlamaGen's configuration (Sun et al., 2024, arXiv:2406.06525; Esser et al., 2021).

Shapes: b batch, c image channels, h w image size, f downsampling factor, d code dimension (= e, the latent
dimension of one token), z latent channels, l = (h/f) * (w/f) tokens in raster order (row by row).

Pipeline: CNN encoder -> 1x1 ``quant_conv`` (z -> d) -> vector quantizer -> 1x1
``post_quant_conv`` (d -> z) -> CNN decoder. Pixels are in [-1, 1].
"""

from __future__ import annotations

import dataclasses

import torch
from einops import rearrange
from torch import Tensor, nn

from arvis.config import Config
from arvis.nn.cnn_autoencoder import CNNDecoder, CNNEncoder
from arvis.quantizers.vq import QuantizerOutput, VectorQuantizer
from arvis.tokenizers.base import TOKENIZERS, Tokenizer, TokenizerOutput, TokenLayout


@dataclasses.dataclass(frozen=True, kw_only=True)
class VQConfig(Config):
    """Architecture of a :class:`VQTokenizer`; the defaults are LlamaGen's VQ-16 at 256 px.

    Attributes:
        image_size: square image side in pixels; divisible by the downsampling factor.
        in_channels: image channels (decoded images have the same count).
        ch: base width of the CNN; ``ch * m`` for every multiplier must be divisible by ``num_groups``.
        ch_mult: encoder width multipliers, one per resolution level; f = 2 ** (len(ch_mult) - 1).
        decoder_ch_mult: decoder multipliers (same length as ``ch_mult``); None means ``ch_mult``.
        num_res_blocks: res blocks per encoder level (the decoder uses one more).
        z_channels: channels of the encoder output and decoder input.
        codebook_size: number of codes (the token vocabulary).
        codebook_dim: dimension of each code (LlamaGen uses a low 8).
        codebook_l2_norm: compare latents and codes on the unit sphere (cosine lookup).
        commitment_beta: weight of the commitment loss.
        entropy_loss_ratio: weight of the entropy loss (0 turns it off).
        entropy_temperature: softmax temperature of the entropy loss.
        dropout: dropout inside the res blocks.
        num_groups: GroupNorm groups.
        usage_window: recent training indices kept for the codebook-usage metric.
    """

    image_size: int = 256
    in_channels: int = 3
    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4)
    decoder_ch_mult: tuple[int, ...] | None = None
    num_res_blocks: int = 2
    z_channels: int = 256
    codebook_size: int = 16384
    codebook_dim: int = 8
    codebook_l2_norm: bool = True
    commitment_beta: float = 0.25
    entropy_loss_ratio: float = 0.0
    entropy_temperature: float = 0.01
    dropout: float = 0.0
    num_groups: int = 32
    usage_window: int = 65536

    def __post_init__(self) -> None:
        for name in ("image_size", "in_channels", "ch", "num_res_blocks", "z_channels", "codebook_size",
                     "codebook_dim", "num_groups", "usage_window"):
            if getattr(self, name) < 1:
                raise ValueError(f"VQConfig.{name} must be a positive integer, got {getattr(self, name)}")
        for name in ("ch_mult", "decoder_ch_mult"):
            multipliers = getattr(self, name)
            if multipliers is None:
                continue
            if not multipliers or any(m < 1 for m in multipliers):
                raise ValueError(f"VQConfig.{name} must be a non-empty tuple of positive integers, got {multipliers}")
            uneven = [self.ch * m for m in multipliers if (self.ch * m) % self.num_groups]
            if uneven:
                raise ValueError(
                    f"VQConfig.{name}: widths {uneven} (ch * multiplier) are not divisible by num_groups "
                    f"{self.num_groups}; pick ch and multipliers so every width is a multiple of num_groups"
                )
        if self.decoder_ch_mult is not None and len(self.decoder_ch_mult) != len(self.ch_mult):
            raise ValueError(
                f"VQConfig.decoder_ch_mult {self.decoder_ch_mult} must have as many levels as ch_mult {self.ch_mult} "
                "so that the decoder upsamples by the factor the encoder downsamples"
            )
        factor = 2 ** (len(self.ch_mult) - 1)
        if self.image_size % factor:
            raise ValueError(
                f"VQConfig.image_size {self.image_size} is not divisible by the downsampling factor {factor} "
                f"(2 ** (len(ch_mult) - 1)); use a multiple of {factor} or fewer ch_mult levels"
            )
        if self.commitment_beta < 0 or self.entropy_loss_ratio < 0:
            raise ValueError(
                f"VQConfig.commitment_beta ({self.commitment_beta}) and entropy_loss_ratio "
                f"({self.entropy_loss_ratio}) must be non-negative"
            )
        if self.entropy_temperature <= 0:
            raise ValueError(f"VQConfig.entropy_temperature must be positive, got {self.entropy_temperature}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"VQConfig.dropout must be in [0, 1), got {self.dropout}")

    @property
    def downsample_factor(self) -> int:
        return 2 ** (len(self.ch_mult) - 1)


@TOKENIZERS.register
class VQTokenizer(Tokenizer):
    """Pixels (b, c, h, w) in [-1, 1] <-> tokens on a (h/f, w/f) grid in raster order: ids (b, l) or latents
    (b, l, d)."""

    config_class = VQConfig

    def __init__(self, config: VQConfig) -> None:
        super().__init__(config)
        shared = dict(ch=config.ch, num_res_blocks=config.num_res_blocks, z_channels=config.z_channels,
                      dropout=config.dropout, num_groups=config.num_groups)
        self.encoder = CNNEncoder(in_channels=config.in_channels, ch_mult=config.ch_mult, **shared)
        self.quant_conv = nn.Conv2d(config.z_channels, config.codebook_dim, 1)
        self.quantizer = VectorQuantizer(
            config.codebook_size, config.codebook_dim, l2_norm=config.codebook_l2_norm,
            commitment_beta=config.commitment_beta, entropy_loss_ratio=config.entropy_loss_ratio,
            entropy_temperature=config.entropy_temperature, usage_window=config.usage_window,
        )
        self.post_quant_conv = nn.Conv2d(config.codebook_dim, config.z_channels, 1)
        decoder_ch_mult = config.decoder_ch_mult if config.decoder_ch_mult is not None else config.ch_mult
        self.decoder = CNNDecoder(out_channels=config.in_channels, ch_mult=decoder_ch_mult, **shared)

    @property
    def downsample_factor(self) -> int:
        return self.config.downsample_factor

    @property
    def grid_size(self) -> tuple[int, int]:
        """(h/f, w/f): the token grid."""
        side = self.config.image_size // self.downsample_factor
        return side, side

    @property
    def layout(self) -> TokenLayout:
        return TokenLayout((self.grid_size,))

    @property
    def latent_dim(self) -> int:
        """d, the codebook dimension."""
        return self.config.codebook_dim

    def quantize(self, pixels: Tensor) -> QuantizerOutput:
        """pixels (b, c, h, w) -> quantizer output on the (b, d, h/f, w/f) latent grid (no input checks)."""
        return self.quantizer(self.quant_conv(self.encoder(pixels)))

    def decode_codes(self, codes: Tensor) -> Tensor:
        """codes (b, d, h/f, w/f) -> pixels (b, c, h, w), not clamped."""
        return self.decoder(self.post_quant_conv(codes))

    def encode(self, pixels: Tensor) -> Tensor:
        """pixels (b, c, h, w) in [-1, 1] -> tokens (b, l) long, raster order. Changes no state."""
        self.check_pixels(pixels)
        latents = self.quant_conv(self.encoder(pixels))
        return rearrange(self.quantizer.nearest_indices(latents), "b h w -> b (h w)")

    def encode_latents(self, pixels: Tensor) -> Tensor:
        """pixels (b, c, h, w) in [-1, 1] -> latents (b, l, d) float, raster order: the ``quant_conv`` output,
        unit-normalised when the quantizer is (``codebook_l2_norm``). Their nearest codes are :meth:`encode`'s
        tokens. Changes no state."""
        self.check_pixels(pixels)
        latents = self.quantizer.prepare(self.quant_conv(self.encoder(pixels)))
        return rearrange(latents, "b d h w -> b (h w) d")

    def nearest_tokens(self, latents: Tensor) -> Tensor:
        """latents (b, l, d) float, raster order -> tokens (b, l) long: the quantizer's nearest codes."""
        self.check_latents(latents)
        height, width = self.grid_size
        grid = rearrange(latents, "b (h w) d -> b d h w", h=height, w=width)
        return rearrange(self.quantizer.nearest_indices(grid), "b h w -> b (h w)")

    def decode_ids(self, tokens: Tensor) -> Tensor:
        """tokens (b, l) long, raster order -> pixels (b, c, h, w).

        The output is not clamped and may slightly leave [-1, 1]; ``to_unit_range`` clamps.
        """
        self.check_tokens(tokens)
        height, width = self.grid_size
        indices = rearrange(tokens, "b (h w) -> b h w", h=height, w=width)
        return self.decode_codes(self.quantizer.lookup(indices))

    def code_vectors(self) -> Tensor:
        """(v, e) codebook vectors as looked up (unit-normalised when the quantizer normalises)."""
        return self.quantizer.codes()

    def decode_vectors(self, vectors: Tensor) -> Tensor:
        """vectors (b, l, d) in raster order, unquantised allowed -> pixels (b, c, h, w), not clamped."""
        self.check_latents(vectors)
        height, width = self.grid_size
        grid = rearrange(vectors, "b (h w) d -> b d h w", h=height, w=width)
        return self.decode_codes(grid.to(self.post_quant_conv.weight.dtype))

    def forward(self, pixels: Tensor, *, generator: torch.Generator | None = None) -> TokenizerOutput:
        """Training pass: pixels (b, c, h, w) -> reconstruction, tokens, quantizer losses and usage (``generator``
        is unused: nothing here is random)."""
        self.check_pixels(pixels)
        quantized = self.quantize(pixels)
        return TokenizerOutput(
            reconstruction=self.decode_codes(quantized.quantized),
            tokens=rearrange(quantized.indices, "b h w -> b (h w)"),
            losses=quantized.losses,
            metrics={"codebook_usage": quantized.usage},
        )


TOKENIZERS.add_preset(
    "vq-tiny",
    VQConfig(image_size=16, ch=32, ch_mult=(1, 1, 2), num_res_blocks=1, z_channels=32, codebook_size=64,
             codebook_dim=4),
    "Tiny VQ for tests: 16 px, f=4 (4x4 tokens), codebook 64x4.",
)
TOKENIZERS.add_preset(
    "vq-demo",
    VQConfig(image_size=32, ch=32, ch_mult=(1, 1, 2), num_res_blocks=1, z_channels=64, codebook_size=256,
             codebook_dim=8),
    "Small VQ for the 32 px quickstart: f=4 (8x8 tokens), codebook 256x8, L2-normalised.",
)
TOKENIZERS.add_preset(
    "vq-f16",
    VQConfig(image_size=256, ch=128, ch_mult=(1, 1, 2, 2, 4), num_res_blocks=2, z_channels=256,
             codebook_size=16384, codebook_dim=8),
    "LlamaGen VQ-16: 256 px, f=16 (16x16 tokens), codebook 16384x8, L2-normalised, 71.9M parameters.",
)
TOKENIZERS.add_preset(
    "vq-f8",
    VQConfig(image_size=256, ch=128, ch_mult=(1, 2, 2, 4), num_res_blocks=2, z_channels=256,
             codebook_size=16384, codebook_dim=8),
    "LlamaGen VQ-8: 256 px, f=8 (32x32 tokens), codebook 16384x8, L2-normalised, 70.1M parameters.",
)
