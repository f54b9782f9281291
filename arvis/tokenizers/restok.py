"""ResTok: hierarchical residual 1D tokenizer (``modeling/restok.py`` of the ResTok release; see
``shared/reference/tokenizers.md`` section 4).

Shapes: b batch, c image channels, h w image size, f pixels per image token (patch size or CNN
factor), g = h/f side of the image-token grid, n = g*g image tokens, l latent tokens (128 in the
paper), d transformer width, e code dimension, k a decoded prefix length.

Pipeline::

    pixels -> patchify (or CNN encoder) -> n image tokens
    latents <- residual area pooling of the image-token map, one grid per level, + level embeddings
    ViT encoder over [image ; latents], hierarchical block-causal mask, image tokens merged 2:1
        into residual levels at ``merge_layers`` (after attention, before the MLP)
    per-level linear d -> e, one shared L2-normalised codebook (tokens (b, l))
    per-level linear e -> d (dropped / missing tail -> ``latent_mask_token``)
    ViT decoder over [latents ; n image mask tokens] (full attention) -> unpatchify (or CNN decoder)

Latent levels have sizes [1, 1, 2, 4, ..., l/2] (halving l); level j is initialised from the
residual image-token map area-pooled to the grid ``level_grid`` gives (width doubles first):
(1,1), (1,1), (1,2), (2,2), (2,4), ... The second level token is therefore ~0 at initialisation
(the residual of the global mean has zero mean): its level embedding is its only content, as upstream.

Mask: image tokens see all image tokens (of every merge level) and no latent; latent level j sees all
image tokens and latent levels <= j. So the first k tokens, for k on a level boundary, depend only on
the image, and a decoder given a prefix is consistent with the encoder.

Upstream details followed (each a config field; a saved ``config.json`` without it keeps arvis 0.1's behaviour,
see ``ResTokConfig.saved_defaults``): trunc-normal(0.02) initialisation of every linear and conv layer and
N(0, 1/d) level embeddings and mask tokens (``weight_init``), a LayerNorm (``ln_pre``) on the encoder's and the
decoder's input sequence, LayerNorm eps 1e-5 (``norm_eps``), the merge-level embedding added after the whole
block (``merge_embed_after_block``), a fixed zero key bias (``key_bias=False``), and nested dropout that keeps
all tokens with probability 1 - ``nested_dropout_prob`` (upstream's ``drop_prob`` 0.2: 80%).

Deviations from upstream (deliberate):
    * Positions are learned absolute embeddings (image grid and latent index, encoder and decoder)
      instead of upstream's 2D/1D hybrid RoPE, initialised N(0, 0.02).
    * The latent mask token lives in width space after the per-level projection (upstream: in code space
      before ``decoder_embed``).
    * Upstream's ``is_legacy`` reshape (encoder output (b, l, d) read as (b, d, l, 1), which mixes the channels
      of all latents into each code) is not reproduced: each level has its own linear projection d -> e.
    * ``merge_mode``: "subsample" (default, what upstream's code does: nearest 1D interpolation over
      the flattened raster, i.e. even positions) or "average" (the paper's average pooling of pairs).
    * Nested dropout draws the kept counts of a batch by stratified inverse-CDF sampling (one uniform
      per sample, stratified over the batch, randomly permuted): each sample's marginal distribution
      is the configured one, the batch covers it more evenly. The draws come from an explicit generator
      (the trainer's, seeded by run seed, step, micro-batch and process), so resuming needs no extra state.
      Upstream's weights are 2^i over the dropped counts and (2^(n-1) - 1)(int(1/p) - 1) for keeping all;
      the mixture here equals that distribution whenever 1/p is an integer (p = 0.2).
    * Image tokens of all merge levels attend to each other fully.
    * The optional ImageNet normalisation is applied inside the encoder only; decoded pixels are in
      [0, 1] (``pixel_range``) and not clamped.
    * Not ported: VF alignment to DINOv3, the DINO discriminator, LPIPS crop jitter (training losses).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from arvis.checks import check_token_ids
from arvis.config import Config
from arvis.nn.attention import block_causal_mask
from arvis.nn.cnn_autoencoder import CNNDecoder, CNNEncoder
from arvis.nn.vit import ViTBlock
from arvis.quantizers.vq import VectorQuantizer
from arvis.tokenizers.base import TOKENIZERS, Tokenizer, TokenizerOutput, TokenLayout

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def level_sizes(num_tokens: int) -> tuple[int, ...]:
    """Latent level sizes by halving: 128 -> (1, 1, 2, 4, 8, 16, 32, 64); ``num_tokens`` a power of two."""
    if num_tokens < 2 or num_tokens & (num_tokens - 1):
        raise ValueError(f"the number of latent tokens must be a power of two >= 2, got {num_tokens}")
    return (1,) + tuple(2 ** j for j in range(int(math.log2(num_tokens))))


def level_grid(size: int) -> tuple[int, int]:
    """(rows, cols) pooling grid of a level of ``size`` = 2^j tokens; the width doubles first."""
    if size < 1 or size & (size - 1):
        raise ValueError(f"a level size must be a power of two, got {size}")
    j = int(math.log2(size))
    return 2 ** (j // 2), 2 ** (j - j // 2)


def residual_level_pooling(image_map: Tensor, sizes: tuple[int, ...]) -> Tensor:
    """image_map (b, d, g, g) -> (b, sum(sizes), d): per level, area-pool the residual to the level's
    grid, flatten it (raster order) and subtract its nearest upsampling from the residual."""
    height, width = image_map.shape[-2:]
    residual, tokens = image_map, []
    for size in sizes:
        pooled = F.interpolate(residual, size=level_grid(size), mode="area")
        tokens.append(rearrange(pooled, "b d h w -> b (h w) d"))
        residual = residual - F.interpolate(pooled, size=(height, width), mode="nearest")
    return torch.cat(tokens, dim=1)


def merge_image_tokens(tokens: Tensor, mode: str = "subsample") -> tuple[Tensor, Tensor]:
    """tokens (b, m, d), m even, raster order -> (merged (b, m/2, d), residual (b, m, d)).

    ``merged`` keeps every other token ("subsample", upstream's code) or averages pairs ("average",
    the paper); ``residual`` is ``tokens`` minus the nearest (2x repeat) upsampling of ``merged``.
    """
    if tokens.shape[1] % 2:
        raise ValueError(f"cannot merge an odd number of image tokens ({tokens.shape[1]}) 2:1")
    if mode == "subsample":
        merged = tokens[:, ::2]
    elif mode == "average":
        merged = rearrange(tokens, "b (m two) d -> b m two d", two=2).mean(dim=2)
    else:
        raise ValueError(f"merge mode must be 'subsample' or 'average', got {mode!r}")
    return merged, tokens - merged.repeat_interleave(2, dim=1)


def hierarchical_mask(num_image_tokens: int, sizes: tuple[int, ...], *,
                      device: torch.device | str | None = None) -> Tensor:
    """(n + l, n + l) boolean mask, True where a query may attend, over [image ; latent levels]."""
    num_latents = sum(sizes)
    total = num_image_tokens + num_latents
    mask = torch.zeros(total, total, dtype=torch.bool, device=device)
    mask[:, :num_image_tokens] = True
    mask[num_image_tokens:, num_image_tokens:] = block_causal_mask(sizes, device=device)
    return mask


@dataclasses.dataclass(frozen=True, kw_only=True)
class ResTokConfig(Config):
    """Architecture of a :class:`ResTokTokenizer`; the defaults are ResTok-L at 256 px, 128 tokens.

    Attributes:
        image_size: square image side in pixels.
        in_channels: image channels.
        patch_size: pixels per image token without the CNN (ignored when ``cnn`` is on).
        cnn: use the VQGAN CNN encoder/decoder around the ViTs (f = 2 ** (len(cnn_ch_mult) - 1)).
        cnn_ch, cnn_ch_mult, cnn_num_res_blocks, cnn_z_channels, cnn_num_groups: that CNN.
        width: ViT width d (encoder and decoder).
        encoder_depth, decoder_depth: ViT blocks.
        num_heads: attention heads.
        mlp_ratio: MLP hidden width / d.
        qk_norm: LayerNorm on queries and keys.
        layer_scale_init: LayerScale initial value (None: no LayerScale).
        num_latent_tokens: l, a power of two; levels are ``level_sizes(l)``.
        merge_layers: encoder blocks after whose attention the coarsest image level is merged 2:1.
        merge_mode: "subsample" (upstream code, default) or "average" (the paper's figure).
        codebook_size, codebook_dim: the one shared codebook (L2-normalised).
        commitment_beta, entropy_loss_ratio: quantizer loss weights.
        nested_dropout_prob: probability p that a training sample's kept count is drawn from
            ``nested_dropout_counts`` with ``nested_dropout_weights`` (otherwise all l are kept, probability 1 - p;
            a count of l among the counts adds to that).
        nested_dropout_counts: allowed kept counts when dropping (level boundaries; upstream: 4, 8, ..., l/2).
        nested_dropout_weights: their relative weights (upstream: 1, 2, 4, ...).
        imagenet_normalize: normalise [0, 1] pixels with ImageNet statistics inside the encoder (3 channels).
        usage_window: recent indices kept for the codebook-usage metric.
        weight_init: ``"trunc_normal"`` (upstream: trunc-normal(0.02) linear and conv weights, zero biases, N(0, 1/d)
            level embeddings and mask tokens) or ``"torch"`` (arvis 0.1: PyTorch's defaults, N(0, 0.02) tables).
        ln_pre: LayerNorm over the encoder's input [image ; latents] and the decoder's input (upstream ``ln_pre``).
        norm_eps: eps of every LayerNorm but the QK norms (1e-5 upstream; 1e-6 in arvis 0.1).
        merge_embed_after_block: add a merge level's embedding after the block that merged it (upstream), not
            between its attention and MLP (arvis 0.1).
        key_bias: learn a key bias (arvis 0.1); upstream keeps it a zero buffer.
    """

    saved_defaults = {"weight_init": "torch", "ln_pre": False, "norm_eps": 1e-6, "merge_embed_after_block": False,
                      "key_bias": True}

    image_size: int = 256
    in_channels: int = 3
    patch_size: int = 16
    cnn: bool = True
    cnn_ch: int = 128
    cnn_ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4)
    cnn_num_res_blocks: int = 2
    cnn_z_channels: int = 256
    cnn_num_groups: int = 32
    width: int = 1024
    encoder_depth: int = 24
    decoder_depth: int = 24
    num_heads: int = 16
    mlp_ratio: float = 4.0
    qk_norm: bool = True
    layer_scale_init: float | None = 1.0
    num_latent_tokens: int = 128
    merge_layers: tuple[int, ...] = (5, 11, 17)
    merge_mode: Literal["subsample", "average"] = "subsample"
    codebook_size: int = 8192
    codebook_dim: int = 8
    commitment_beta: float = 0.25
    entropy_loss_ratio: float = 0.0
    nested_dropout_prob: float = 0.2
    nested_dropout_counts: tuple[int, ...] = (4, 8, 16, 32, 64)
    nested_dropout_weights: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0, 16.0)
    imagenet_normalize: bool = True
    usage_window: int = 65536
    weight_init: Literal["torch", "trunc_normal"] = "trunc_normal"
    ln_pre: bool = True
    norm_eps: float = 1e-5
    merge_embed_after_block: bool = True
    key_bias: bool = False

    def __post_init__(self) -> None:
        for name in ("image_size", "in_channels", "patch_size", "width", "encoder_depth", "decoder_depth",
                     "num_heads", "codebook_size", "codebook_dim", "usage_window"):
            if getattr(self, name) < 1:
                raise ValueError(f"ResTokConfig.{name} must be a positive integer, got {getattr(self, name)}")
        sizes = level_sizes(self.num_latent_tokens)
        if self.width % self.num_heads:
            raise ValueError(f"ResTokConfig.width {self.width} must be divisible by num_heads {self.num_heads}")
        factor = self.downsample_factor
        if self.image_size % factor:
            raise ValueError(
                f"ResTokConfig.image_size {self.image_size} is not divisible by the pixels per token {factor}"
            )
        grid = self.grid_size
        rows, cols = level_grid(sizes[-1])
        if grid % rows or grid % cols:
            raise ValueError(
                f"ResTokConfig: the finest latent level of {sizes[-1]} tokens pools to a {rows}x{cols} grid, "
                f"which must divide the {grid}x{grid} image-token grid; use fewer latent tokens or more image tokens"
            )
        layers = self.merge_layers
        if list(layers) != sorted(set(layers)) or any(not 0 <= i < self.encoder_depth for i in layers):
            raise ValueError(
                f"ResTokConfig.merge_layers {layers} must be increasing block indices in [0, {self.encoder_depth})"
            )
        if (grid * grid) % (2 ** len(layers)):
            raise ValueError(
                f"ResTokConfig: {grid * grid} image tokens cannot be merged 2:1 {len(layers)} times; "
                "use fewer merge_layers"
            )
        if self.merge_mode not in ("subsample", "average"):
            raise ValueError(f"ResTokConfig.merge_mode must be 'subsample' or 'average', got {self.merge_mode!r}")
        if not 0.0 <= self.nested_dropout_prob <= 1.0:
            raise ValueError(f"ResTokConfig.nested_dropout_prob must be in [0, 1], got {self.nested_dropout_prob}")
        if len(self.nested_dropout_counts) != len(self.nested_dropout_weights) or not self.nested_dropout_counts:
            raise ValueError("ResTokConfig.nested_dropout_counts and nested_dropout_weights must be non-empty "
                             "and of equal length")
        boundaries = self.prefix_lengths
        bad = [k for k in self.nested_dropout_counts if k not in boundaries]
        if bad:
            raise ValueError(f"ResTokConfig.nested_dropout_counts {bad} are not level boundaries {boundaries}")
        if any(w < 0 for w in self.nested_dropout_weights) or sum(self.nested_dropout_weights) <= 0:
            raise ValueError("ResTokConfig.nested_dropout_weights must be non-negative with a positive sum")
        if self.imagenet_normalize and self.in_channels != 3:
            raise ValueError("ResTokConfig.imagenet_normalize needs in_channels == 3")
        if not self.norm_eps > 0:
            raise ValueError(f"ResTokConfig.norm_eps must be > 0, got {self.norm_eps}")

    @property
    def downsample_factor(self) -> int:
        return 2 ** (len(self.cnn_ch_mult) - 1) if self.cnn else self.patch_size

    @property
    def grid_size(self) -> int:
        return self.image_size // self.downsample_factor

    @property
    def level_sizes(self) -> tuple[int, ...]:
        return level_sizes(self.num_latent_tokens)

    @property
    def prefix_lengths(self) -> tuple[int, ...]:
        """Allowed decoded prefix lengths: the cumulative level sizes (1, 2, 4, ..., l)."""
        return tuple(int(s) for s in torch.tensor(self.level_sizes).cumsum(0).tolist())


@TOKENIZERS.register
class ResTokTokenizer(Tokenizer):
    """Pixels (b, c, h, w) in [0, 1] <-> tokens (b, l) in hierarchical levels (coarse first)."""

    config_class = ResTokConfig
    pixel_range = (0.0, 1.0)

    def __init__(self, config: ResTokConfig) -> None:
        super().__init__(config)
        d, sizes = config.width, config.level_sizes
        num_image = config.grid_size ** 2
        self.num_image_tokens = num_image
        self.register_buffer("level_index", torch.tensor(
            [level for level, size in enumerate(sizes) for _ in range(size)]), persistent=False)
        if config.cnn:
            self.pixel_encoder = CNNEncoder(
                in_channels=config.in_channels, ch=config.cnn_ch, ch_mult=config.cnn_ch_mult,
                num_res_blocks=config.cnn_num_res_blocks, z_channels=config.cnn_z_channels,
                num_groups=config.cnn_num_groups)
            self.patch_embed = nn.Conv2d(config.cnn_z_channels, d, 1)
        else:
            self.pixel_encoder = None
            self.patch_embed = nn.Conv2d(config.in_channels, d, config.patch_size, stride=config.patch_size)
        # Encoder: positions, level embeddings of the latents and of every image merge level.
        self.enc_image_pos = nn.Parameter(torch.randn(num_image, d) * 0.02)
        self.enc_latent_pos = nn.Parameter(torch.randn(config.num_latent_tokens, d) * 0.02)
        self.enc_level_embed = nn.Parameter(torch.randn(len(sizes), d) * 0.02)
        self.merge_embed = nn.Parameter(torch.randn(len(config.merge_layers), d) * 0.02)
        block = {"mlp_ratio": config.mlp_ratio, "qk_norm": config.qk_norm, "layer_scale_init": config.layer_scale_init,
                 "norm_eps": config.norm_eps, "key_bias": config.key_bias}
        self.encoder_ln_pre = nn.LayerNorm(d, eps=config.norm_eps) if config.ln_pre else nn.Identity()
        self.encoder = nn.ModuleList(ViTBlock(d, config.num_heads, **block) for _ in range(config.encoder_depth))
        self.encoder_norm = nn.LayerNorm(d, eps=config.norm_eps)
        self.quant_proj = nn.ModuleList(nn.Linear(d, config.codebook_dim) for _ in sizes)
        self.quantizer = VectorQuantizer(
            config.codebook_size, config.codebook_dim, l2_norm=True, commitment_beta=config.commitment_beta,
            entropy_loss_ratio=config.entropy_loss_ratio, usage_window=config.usage_window)
        # Decoder.
        self.post_quant_proj = nn.ModuleList(nn.Linear(config.codebook_dim, d) for _ in sizes)
        self.latent_mask_token = nn.Parameter(torch.randn(d) * 0.02)
        self.image_mask_token = nn.Parameter(torch.randn(d) * 0.02)
        self.dec_latent_pos = nn.Parameter(torch.randn(config.num_latent_tokens, d) * 0.02)
        self.dec_level_embed = nn.Parameter(torch.randn(len(sizes), d) * 0.02)
        self.dec_image_pos = nn.Parameter(torch.randn(num_image, d) * 0.02)
        self.decoder_ln_pre = nn.LayerNorm(d, eps=config.norm_eps) if config.ln_pre else nn.Identity()
        self.decoder = nn.ModuleList(ViTBlock(d, config.num_heads, **block) for _ in range(config.decoder_depth))
        self.decoder_norm = nn.LayerNorm(d, eps=config.norm_eps)
        if config.cnn:
            self.pixel_head = nn.Conv2d(d, config.cnn_z_channels, 1)
            self.pixel_decoder = CNNDecoder(
                out_channels=config.in_channels, ch=config.cnn_ch, ch_mult=config.cnn_ch_mult,
                num_res_blocks=config.cnn_num_res_blocks, z_channels=config.cnn_z_channels,
                num_groups=config.cnn_num_groups)
        else:
            self.pixel_head = nn.Conv2d(d, config.in_channels * config.patch_size ** 2, 1)
            self.pixel_decoder = None
        if config.imagenet_normalize:
            self.register_buffer("pixel_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
            self.register_buffer("pixel_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        if config.weight_init == "trunc_normal":
            self.reset_parameters()

    def reset_parameters(self) -> None:
        """Upstream's ``_init_weights``: trunc-normal(0.02) weights and zero biases for every linear and conv
        layer (the pixel CNN's included; the codebook keeps its own initialisation), and N(0, 1/d) level
        embeddings and mask tokens; arvis's learned positions keep N(0, 0.02)."""
        for name, module in self.named_modules():
            if name.startswith("quantizer"):
                continue
            if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d)):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        scale = self.config.width ** -0.5
        for table in (self.enc_level_embed, self.merge_embed, self.dec_level_embed, self.latent_mask_token,
                      self.image_mask_token):
            nn.init.normal_(table, std=scale)

    # ------------------------------------------------------------------ interface
    @property
    def layout(self) -> TokenLayout:
        return TokenLayout(tuple((size,) for size in self.config.level_sizes))

    @property
    def prefix_lengths(self) -> tuple[int, ...]:
        """Token counts :meth:`decode` accepts: the level boundaries (1, 2, 4, ..., l)."""
        return self.config.prefix_lengths

    @property
    def latent_dim(self) -> int:
        """e, the codebook dimension."""
        return self.config.codebook_dim

    # ------------------------------------------------------------------ encoder
    def image_tokens(self, pixels: Tensor) -> Tensor:
        """pixels (b, c, h, w) in [0, 1] -> image tokens (b, n, d) in raster order, without positions."""
        if self.config.imagenet_normalize:
            pixels = (pixels - self.pixel_mean) / self.pixel_std
        features = self.pixel_encoder(pixels) if self.pixel_encoder is not None else pixels
        return rearrange(self.patch_embed(features), "b d h w -> b (h w) d")

    def initial_latents(self, image: Tensor) -> Tensor:
        """image tokens (b, n, d) -> initial latents (b, l, d): residual pooling + level and position embeddings."""
        image_map = rearrange(image, "b (h w) d -> b d h w", h=self.config.grid_size)
        pooled = residual_level_pooling(image_map, self.config.level_sizes)
        return pooled + self.enc_level_embed[self.level_index] + self.enc_latent_pos

    def encoder_transformer(self, image: Tensor, latents: Tensor) -> tuple[Tensor, Tensor]:
        """image tokens (b, n, d) without positions, latents (b, l, d) -> (image levels (b, n', d), latents (b, l, d)).

        The returned image tokens are the merge levels, coarse first (n' >= n with merging).
        """
        config = self.config
        image = image + self.enc_image_pos
        image_levels = [image.shape[1]]
        x = self.encoder_ln_pre(torch.cat([image, latents], dim=1))
        mask = hierarchical_mask(sum(image_levels), config.level_sizes, device=x.device)
        merges = {layer: i for i, layer in enumerate(config.merge_layers)}
        for index, block in enumerate(self.encoder):
            x = block.attend(x, mask=mask)
            if index in merges:
                coarsest = image_levels[0]
                merged, residual = merge_image_tokens(x[:, :coarsest], config.merge_mode)
                if not config.merge_embed_after_block:
                    merged = merged + self.merge_embed[merges[index]]
                x = torch.cat([merged, residual, x[:, coarsest:]], dim=1)
                image_levels = [coarsest // 2, *image_levels]
                mask = hierarchical_mask(sum(image_levels), config.level_sizes, device=x.device)
            x = block.feed_forward(x)
            if index in merges and config.merge_embed_after_block:
                merged_count = image_levels[0]
                x = torch.cat([x[:, :merged_count] + self.merge_embed[merges[index]], x[:, merged_count:]], dim=1)
        num_image = sum(image_levels)
        return x[:, :num_image], self.encoder_norm(x[:, num_image:])

    def latents(self, pixels: Tensor) -> Tensor:
        """pixels (b, c, h, w) -> pre-quantization codes (b, e, 1, l) (no input checks)."""
        image = self.image_tokens(pixels)
        _, latents = self.encoder_transformer(image, self.initial_latents(image))
        chunks = latents.split(self.config.level_sizes, dim=1)
        codes = torch.cat([proj(chunk) for proj, chunk in zip(self.quant_proj, chunks, strict=True)], dim=1)
        return rearrange(codes, "b l e -> b e 1 l")

    # ------------------------------------------------------------------ decoder
    def decode_codes(self, codes: Tensor, keep: Tensor | None = None) -> Tensor:
        """codes (b, e, 1, l) and optional keep (b, l) bool (False -> latent mask token) -> pixels (b, c, h, w)."""
        config = self.config
        flat = rearrange(codes, "b e 1 l -> b l e")
        chunks = flat.split(config.level_sizes, dim=1)
        latents = torch.cat([proj(chunk) for proj, chunk in zip(self.post_quant_proj, chunks, strict=True)], dim=1)
        if keep is not None:
            latents = torch.where(keep[..., None], latents, self.latent_mask_token.to(latents.dtype))
        latents = latents + self.dec_level_embed[self.level_index] + self.dec_latent_pos
        image = (self.image_mask_token + self.dec_image_pos).expand(latents.shape[0], -1, -1)
        x = self.decoder_ln_pre(torch.cat([latents, image], dim=1))
        for block in self.decoder:
            x = block(x)
        x = self.decoder_norm(x[:, config.num_latent_tokens:])
        grid = rearrange(x, "b (h w) d -> b d h w", h=config.grid_size)
        if self.pixel_decoder is not None:
            return self.pixel_decoder(self.pixel_head(grid))
        p = config.patch_size
        return rearrange(self.pixel_head(grid), "b (c p q) h w -> b c (h p) (w q)", p=p, q=p)

    def sample_kept_counts(self, batch_size: int, device: torch.device | str | None = None,
                           generator: torch.Generator | None = None) -> Tensor:
        """(b,) long kept-token counts for nested dropout (stratified over the batch, see the module doc), drawn
        from ``generator`` (a CPU generator; None: torch's global RNG)."""
        config = self.config
        total = config.num_latent_tokens
        counts = list(config.nested_dropout_counts)
        weights = torch.tensor(config.nested_dropout_weights, dtype=torch.float64)
        probs = config.nested_dropout_prob * weights / weights.sum()
        if total in counts:
            probs[counts.index(total)] += 1.0 - config.nested_dropout_prob
        else:
            counts.append(total)
            probs = torch.cat([probs, torch.tensor([1.0 - config.nested_dropout_prob], dtype=torch.float64)])
        uniforms = (torch.randperm(batch_size, generator=generator)
                    + torch.rand(batch_size, dtype=torch.float64, generator=generator)) / batch_size
        index = torch.searchsorted(probs.cumsum(0), uniforms, right=True).clamp(max=len(counts) - 1)
        return torch.tensor(counts, device=device)[index.to(device)]

    # ------------------------------------------------------------------ public API
    def encode(self, pixels: Tensor) -> Tensor:
        """pixels (b, c, h, w) in [0, 1] -> tokens (b, l) long, levels coarse first. Changes no state."""
        self.check_pixels(pixels)
        return rearrange(self.quantizer.nearest_indices(self.latents(pixels)), "b 1 l -> b l")

    def encode_latents(self, pixels: Tensor) -> Tensor:
        """pixels (b, c, h, w) in [0, 1] -> latents (b, l, e) float, levels coarse first: the per-level projections,
        unit-normalised as the quantizer compares them. Their nearest codes are :meth:`encode`'s tokens. Changes
        no state."""
        self.check_pixels(pixels)
        return rearrange(self.quantizer.prepare(self.latents(pixels)), "b e 1 l -> b l e")

    def nearest_tokens(self, latents: Tensor) -> Tensor:
        """latents (b, l, e) float -> tokens (b, l) long: the quantizer's nearest codes."""
        self.check_latents(latents)
        return rearrange(self.quantizer.nearest_indices(rearrange(latents, "b l e -> b e 1 l")), "b 1 l -> b l")

    def _prefix_count(self, tokens: Tensor) -> int:
        """k of tokens (b, k, ...), checked to be one of :attr:`prefix_lengths`."""
        count = tokens.shape[1]
        if count not in self.prefix_lengths:
            raise ValueError(
                f"cannot decode {count} tokens: a prefix must end on a level boundary, one of {self.prefix_lengths}"
            )
        return count

    def _decode_prefix(self, codes: Tensor) -> Tensor:
        """codes (b, k, e), k in :attr:`prefix_lengths` -> pixels; the missing tail -> the latent mask token."""
        total, count = self.config.num_latent_tokens, codes.shape[1]
        padded = F.pad(codes, (0, 0, 0, total - count))
        keep = None
        if count < total:
            keep = (torch.arange(total, device=codes.device) < count).expand(len(codes), -1)
        return self.decode_codes(rearrange(padded, "b l e -> b e 1 l"), keep)

    def decode_ids(self, tokens: Tensor) -> Tensor:
        """tokens (b, k) long, k in :attr:`prefix_lengths` -> pixels (b, c, h, w), not clamped.

        The missing tail (k < l) is replaced by the latent mask token, as in nested-dropout training.
        """
        if not isinstance(tokens, Tensor) or tokens.ndim != 2:
            raise ValueError(f"expected tokens of shape (batch, k), got {getattr(tokens, 'shape', type(tokens))}")
        count = self._prefix_count(tokens)
        check_token_ids(tokens, count, self.vocab_size)
        codes = self.quantizer.lookup(rearrange(tokens, "b k -> b 1 k"))
        return self._decode_prefix(rearrange(codes, "b e 1 k -> b k e"))

    def decode_vectors(self, vectors: Tensor) -> Tensor:
        """vectors (b, k, e) float, k in :attr:`prefix_lengths`, unquantised allowed -> pixels (b, c, h, w), not
        clamped; the missing tail as for ids."""
        if not isinstance(vectors, Tensor) or vectors.ndim != 3:
            self.check_latents(vectors)  # raises, naming the expected shape
        self.check_latents(vectors, self._prefix_count(vectors))
        return self._decode_prefix(vectors.to(self.post_quant_proj[0].weight.dtype))

    def forward(self, pixels: Tensor, *, generator: torch.Generator | None = None) -> TokenizerOutput:
        """Training pass: pixels -> reconstruction, tokens, quantizer losses; nested dropout in training mode,
        with kept counts drawn from ``generator`` (None: torch's global RNG)."""
        self.check_pixels(pixels)
        quantized = self.quantizer(self.latents(pixels))
        keep, metrics = None, {"codebook_usage": quantized.usage}
        if self.training and self.config.nested_dropout_prob > 0:
            kept = self.sample_kept_counts(pixels.shape[0], device=pixels.device, generator=generator)
            keep = torch.arange(self.config.num_latent_tokens, device=pixels.device)[None, :] < kept[:, None]
            metrics["kept_tokens"] = kept.float().mean()
        return TokenizerOutput(
            reconstruction=self.decode_codes(quantized.quantized, keep),
            tokens=rearrange(quantized.indices, "b 1 l -> b l"),
            losses=quantized.losses,
            metrics=metrics,
        )


TOKENIZERS.add_preset(
    "restok-tiny",
    ResTokConfig(image_size=16, patch_size=4, cnn=False, width=32, encoder_depth=2, decoder_depth=2, num_heads=2,
                 num_latent_tokens=8, merge_layers=(0,), codebook_size=64, codebook_dim=4,
                 nested_dropout_prob=1.0, nested_dropout_counts=(4, 8), nested_dropout_weights=(1.0, 1.0),
                 imagenet_normalize=False, usage_window=1024),
    "Tiny ResTok for tests: 16 px, patch 4 (16 image tokens), 8 latents in levels [1, 1, 2, 4], codebook 64x4; "
    "nested dropout keeps 4 or 8 tokens with equal chance.",
)
TOKENIZERS.add_preset(
    "restok-demo",
    ResTokConfig(image_size=32, patch_size=4, cnn=False, width=64, encoder_depth=4, decoder_depth=4, num_heads=4,
                 num_latent_tokens=32, merge_layers=(1, 2), codebook_size=256, codebook_dim=8,
                 entropy_loss_ratio=0.1, nested_dropout_counts=(4, 8, 16), nested_dropout_weights=(1.0, 2.0, 4.0),
                 imagenet_normalize=False),
    "Small ResTok for the 32 px glyphs: patch 4 (64 image tokens), 32 latents in levels "
    "[1, 1, 2, 4, 8, 16], codebook 256x8, L2-normalised; nested dropout keeps all 32 tokens 80% of the time. "
    "LlamaGen's entropy loss (0.1) is on: without it the codebook collapses to ~6 codes within 100 steps at "
    "this scale (upstream trains with 0).",
)
TOKENIZERS.add_preset(
    "restok-l-128",
    ResTokConfig(),
    "ResTok-L (paper): 256 px, VQGAN CNN ch 128 (1,1,2,2,4), ViT-L 24+24 blocks 1024 wide, 128 tokens in 8 levels, "
    "codebook 8192x8, merges after blocks 5, 11, 17, nested dropout keeping all 128 tokens 80% of the time. "
    "Learned absolute positions instead of RoPE.",
)
