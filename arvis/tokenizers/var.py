"""VAR's multi-scale residual VQ-VAE (Tian et al., 2024, arXiv:2404.02905; ``models/vqvae.py``).

Shapes: b batch, c image channels, h w image size, f downsampling factor, z latent channels (= code
dimension, VAR's ``Cvae``), p_k side of scale k's token grid, l = sum(p_k ** 2) tokens (680 at 256 px).

Pipeline: CNN encoder -> 3x3 ``quant_conv`` (z -> z) -> :class:`MultiScaleQuantizer` -> 3x3
``post_quant_conv`` (z -> z) -> CNN decoder. The CNN is VQGAN's (the same blocks as the VQ tokenizer,
attention at the lowest resolution and in the middle). Pixels are in [-1, 1]. Tokens are the scales
concatenated coarse to fine, each in raster order. Works without ``torch.distributed``.

A token's latent (:meth:`VARTokenizer.encode_latents`, (b, l, z)) is the residual the quantizer looks up at its scale
and position; a token's vector for :meth:`VARTokenizer.decode` is a code (``code_vectors()[id]``, or any vector):
f_hat is the sum over scales of phi(upsampled code maps).
"""

from __future__ import annotations

import dataclasses

import torch
from einops import rearrange
from torch import Tensor, nn

from arvis.config import Config
from arvis.nn.cnn_autoencoder import CNNDecoder, CNNEncoder
from arvis.quantizers.multiscale import MultiScaleQuantizer, MultiScaleQuantizerOutput
from arvis.tokenizers.base import TOKENIZERS, Tokenizer, TokenizerOutput, TokenLayout


@dataclasses.dataclass(frozen=True, kw_only=True)
class VARTokenizerConfig(Config):
    """Architecture of a :class:`VARTokenizer`; the defaults are VAR's released ``vae_ch160v4096z32``.

    Attributes:
        image_size: square image side in pixels; image_size / f must equal ``patch_nums[-1]``.
        in_channels: image channels.
        ch: base width of the CNN; every ``ch * m`` must be divisible by ``num_groups``.
        ch_mult: width multipliers, one per resolution level; f = 2 ** (len(ch_mult) - 1).
        num_res_blocks: res blocks per encoder level (the decoder uses one more).
        z_channels: latent channels, also the code dimension.
        codebook_size: number of codes, shared by all scales (the token vocabulary).
        patch_nums: token-grid side per scale, coarse to fine; the last is the latent side.
        commitment_beta: weight of the commitment term of the VQ loss.
        codebook_l2_norm: nearest code by cosine similarity (VAR's ``using_znorm``; off upstream).
        quant_resi: phi blend ratio r in (1 - r) * x + r * conv3x3(x); 0 disables phi.
        share_quant_resi: number of phi convs shared over the scales (0: one per scale).
        dropout: dropout inside the res blocks.
        num_groups: GroupNorm groups.
    """

    image_size: int = 256
    in_channels: int = 3
    ch: int = 160
    ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4)
    num_res_blocks: int = 2
    z_channels: int = 32
    codebook_size: int = 4096
    patch_nums: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)
    commitment_beta: float = 0.25
    codebook_l2_norm: bool = False
    quant_resi: float = 0.5
    share_quant_resi: int = 4
    dropout: float = 0.0
    num_groups: int = 32

    def __post_init__(self) -> None:
        for name in ("image_size", "in_channels", "ch", "num_res_blocks", "z_channels", "codebook_size",
                     "num_groups"):
            if getattr(self, name) < 1:
                raise ValueError(f"VARTokenizerConfig.{name} must be a positive integer, got {getattr(self, name)}")
        if not self.ch_mult or any(m < 1 for m in self.ch_mult):
            raise ValueError(f"VARTokenizerConfig.ch_mult must be positive integers, got {self.ch_mult}")
        uneven = [self.ch * m for m in self.ch_mult if (self.ch * m) % self.num_groups]
        if uneven:
            raise ValueError(
                f"VARTokenizerConfig: widths {uneven} (ch * ch_mult) are not divisible by num_groups {self.num_groups}"
            )
        factor = self.downsample_factor
        if self.image_size % factor:
            raise ValueError(
                f"VARTokenizerConfig.image_size {self.image_size} is not divisible by the downsampling factor {factor}"
            )
        side = self.image_size // factor
        increasing = all(self.patch_nums[i] < self.patch_nums[i + 1] for i in range(len(self.patch_nums) - 1))
        if not self.patch_nums or self.patch_nums[-1] != side or self.patch_nums[0] < 1 or not increasing:
            raise ValueError(
                f"VARTokenizerConfig.patch_nums {self.patch_nums} must be strictly increasing sides in [1, {side}] "
                f"ending with the latent side {side} (image_size {self.image_size} / f {factor})"
            )
        if self.commitment_beta < 0:
            raise ValueError(f"VARTokenizerConfig.commitment_beta must be non-negative, got {self.commitment_beta}")
        if not 0.0 <= self.quant_resi <= 1.0:
            raise ValueError(f"VARTokenizerConfig.quant_resi must be in [0, 1], got {self.quant_resi}")
        if self.share_quant_resi < 0:
            raise ValueError(f"VARTokenizerConfig.share_quant_resi must be >= 0, got {self.share_quant_resi}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"VARTokenizerConfig.dropout must be in [0, 1), got {self.dropout}")

    @property
    def downsample_factor(self) -> int:
        return 2 ** (len(self.ch_mult) - 1)

    @property
    def layout(self) -> TokenLayout:
        """One (p, p) grid per scale; computable without building the model."""
        return TokenLayout(tuple((p, p) for p in self.patch_nums))


@TOKENIZERS.register
class VARTokenizer(Tokenizer):
    """Pixels (b, c, h, w) in [-1, 1] <-> tokens: k scales of (p_k, p_k) grids, coarse to fine, as ids (b, l) or
    latents (b, l, z)."""

    config_class = VARTokenizerConfig

    def __init__(self, config: VARTokenizerConfig) -> None:
        super().__init__(config)
        shared = dict(ch=config.ch, ch_mult=config.ch_mult, num_res_blocks=config.num_res_blocks,
                      z_channels=config.z_channels, dropout=config.dropout, num_groups=config.num_groups)
        self.encoder = CNNEncoder(in_channels=config.in_channels, **shared)
        self.quant_conv = nn.Conv2d(config.z_channels, config.z_channels, 3, padding=1)
        self.quantizer = MultiScaleQuantizer(
            config.codebook_size, config.z_channels, config.patch_nums, commitment_beta=config.commitment_beta,
            l2_norm=config.codebook_l2_norm, quant_resi=config.quant_resi, share_quant_resi=config.share_quant_resi,
        )
        self.post_quant_conv = nn.Conv2d(config.z_channels, config.z_channels, 3, padding=1)
        self.decoder = CNNDecoder(out_channels=config.in_channels, **shared)

    @property
    def layout(self) -> TokenLayout:
        return self.config.layout

    @property
    def latent_dim(self) -> int:
        """z, the latent channels (= the code dimension)."""
        return self.config.z_channels

    @property
    def patch_nums(self) -> tuple[int, ...]:
        return self.config.patch_nums

    @property
    def downsample_factor(self) -> int:
        return self.config.downsample_factor

    def latents(self, pixels: Tensor) -> Tensor:
        """pixels (b, c, h, w) -> f = quant_conv(encoder(pixels)) (b, z, h/f, w/f) (no input checks)."""
        return self.quant_conv(self.encoder(pixels))

    def decode_latents(self, f_hat: Tensor) -> Tensor:
        """f_hat (b, z, h/f, w/f) -> pixels (b, c, h, w), not clamped."""
        return self.decoder(self.post_quant_conv(f_hat.to(self.post_quant_conv.weight.dtype)))

    def encode_scales(self, pixels: Tensor) -> list[Tensor]:
        """pixels (b, c, h, w) in [-1, 1] -> list of k (b, p_k, p_k) long indices. Changes no state."""
        self.check_pixels(pixels)
        return self.quantizer.latents_to_scales(self.latents(pixels))

    def decode_scales(self, indices_list: list[Tensor]) -> Tensor:
        """List of k (b, p_k, p_k) long indices -> pixels (b, c, h, w), not clamped (``to_unit_range`` clamps)."""
        return self.decode_latents(self.quantizer.scales_to_fhat(indices_list))

    def encode(self, pixels: Tensor) -> Tensor:
        """pixels (b, c, h, w) in [-1, 1] -> tokens (b, l) long, scales concatenated coarse to fine."""
        return self.quantizer.scales_to_indices(self.encode_scales(pixels))

    def encode_latents(self, pixels: Tensor) -> Tensor:
        """pixels (b, c, h, w) in [-1, 1] -> latents (b, l, z) float32, scales concatenated coarse to fine: at each
        scale the residual f_rest area-downsampled to (p_k, p_k), the input of that scale's nearest-code search (raw,
        like VAR's codes; with ``codebook_l2_norm`` the search is by cosine). Their nearest codes are
        :meth:`encode`'s tokens. Changes no state."""
        self.check_pixels(pixels)
        residuals = self.quantizer.latents_to_residuals(self.latents(pixels))
        return torch.cat([rearrange(residual, "b z h w -> b (h w) z") for residual in residuals], dim=1)

    def nearest_tokens(self, latents: Tensor) -> Tensor:
        """latents (b, l, z) float, scales concatenated -> tokens (b, l) long: each scale's nearest codes."""
        self.check_latents(latents)
        return self.quantizer.scales_to_indices(
            self.quantizer.nearest_scales(self.quantizer.split_code_vectors(latents)))

    def decode_ids(self, tokens: Tensor) -> Tensor:
        """tokens (b, l) long -> pixels (b, c, h, w), not clamped."""
        self.check_tokens(tokens)
        return self.decode_scales(self.quantizer.indices_to_scales(tokens))

    def code_vectors(self) -> Tensor:
        """(v, e) the raw codebook (VAR's codes are not normalised)."""
        return self.quantizer.codebook.weight

    def decode_vectors(self, vectors: Tensor) -> Tensor:
        """vectors (b, l, z), scales concatenated, unquantised allowed -> pixels (b, c, h, w), not clamped.

        f_hat is the sum over scales of phi(bicubic-upsampled code maps), as for token ids.
        """
        self.check_latents(vectors)
        return self.decode_latents(self.quantizer.code_maps_to_fhat(self.quantizer.split_code_vectors(vectors)))

    def quantize(self, pixels: Tensor) -> MultiScaleQuantizerOutput:
        """pixels (b, c, h, w) -> quantizer output (straight-through f_hat, tokens, VQ loss, usage); no checks."""
        return self.quantizer(self.latents(pixels))

    def forward(self, pixels: Tensor, *, generator: torch.Generator | None = None) -> TokenizerOutput:
        """Training pass: reconstruction from the straight-through f_hat, tokens, ``{"vq"}`` loss, per-scale usage
        (``generator`` is unused: nothing here is random)."""
        self.check_pixels(pixels)
        quantized = self.quantize(pixels)
        metrics = {"codebook_usage": quantized.usage}
        for side, usage in zip(self.patch_nums, quantized.scale_usage, strict=True):
            metrics[f"codebook_usage_{side}x{side}"] = usage
        return TokenizerOutput(
            reconstruction=self.decode_latents(quantized.quantized),
            tokens=quantized.indices,
            losses=quantized.losses,
            metrics=metrics,
        )


TOKENIZERS.add_preset(
    "var-vae-tiny",
    VARTokenizerConfig(image_size=16, ch=32, ch_mult=(1, 1, 2), num_res_blocks=1, z_channels=8, codebook_size=64,
                       patch_nums=(1, 2, 3, 4)),
    "Tiny VAR VQ-VAE for tests: 16 px, f=4, scales (1, 2, 3, 4) = 30 tokens, codebook 64x8, 4 phi convs.",
)
TOKENIZERS.add_preset(
    "var-vae-demo",
    VARTokenizerConfig(image_size=32, ch=32, ch_mult=(1, 1, 2), num_res_blocks=1, z_channels=16, codebook_size=512,
                       patch_nums=(1, 2, 3, 4, 6, 8)),
    "Small VAR VQ-VAE for the 32 px quickstart: f=4, scales (1, 2, 3, 4, 6, 8) = 130 tokens, codebook 512x16.",
)
TOKENIZERS.add_preset(
    "var-vae-f16",
    VARTokenizerConfig(),
    "VAR's released VQ-VAE (vae_ch160v4096z32): 256 px, f=16, 10 scales (1..16) = 680 tokens, codebook 4096x32, "
    "plain L2, 4 shared phi convs, 108.9M parameters.",
)
TOKENIZERS.add_preset(
    "var-vae-f16-512",
    VARTokenizerConfig(image_size=512, patch_nums=(1, 2, 3, 4, 6, 9, 13, 18, 24, 32)),
    "The same released VQ-VAE at 512 px (VAR-d36's schedule 1..32) = 2240 tokens.",
)
