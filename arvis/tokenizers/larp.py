"""LARP: holistic video tokenizer with a learned AR prior (Wang et al., 2024, arXiv:2410.21264; upstream
``models/larp_tokenizer.py``, ``bottleneck.py``, ``gptc.py``; see ``shared/reference/tokenizers.md`` section 3).

Shapes: b batch, c channels, t frames, h w frame size, (pt, p, p) the 3D patch, g = (t/pt)(h/p)(w/p)
patch tokens, n holistic tokens (1024 in LARP-L), d transformer width, e code dimension, k codebook size.

Pipeline::

    clip (b, c, t, h, w) in [0, 1] -> Conv3d patches (b, g, d) + fixed 3D sin-cos positions
    encoder: full self-attention over [patches ; n learned queries]; the query outputs are kept
    Linear d -> e -> stochastic VQ (unit codes, shared codebook) -> tokens (b, n)
    Linear e -> d + fixed 1D sin-cos positions = context
    decoder: full self-attention over [context ; g fixed 3D sin-cos patch queries + a learned type
        embedding]; the patch-query outputs -> LayerNorm -> Linear d -> pt*p*p*c (zero init) -> clip

No attention masks: the queries gather the clip's information through joint self-attention only. The
token order (query index 0..n-1) is given meaning by the AR prior (:mod:`arvis.tokenizers.larp_prior`),
trained with the tokenizer through ``prior_weight`` times its cross-entropy and discarded after
training (:meth:`LARPTokenizer.for_inference`).

Deviations from upstream (deliberate):
    * Encoding (:meth:`encode`) always takes the most likely code; the stochastic draw happens only in
      training-mode :meth:`forward`. Upstream samples in eval mode too unless told otherwise.
    * The fixed sin-cos tables are non-persistent buffers (rebuilt, not stored). Their 3D layout is upstream's
      (``sincos_layout="additive"``: a full-width 2D table plus a full-width frame table, ``models/embed.py``);
      arvis 0.1 put the frame and the 2D position side by side (``"concat"``), which folders it saved keep.
    * Not ported: torch.compile and the learnable or scheduled τ. LARP's transformer video discriminator,
      its label-smoothed losses and LeCam are part of the tokenizer objective
      (:mod:`arvis.tokenizers.losses`, ``configs/larp_l_tokenizer.yaml``).
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import Tensor, nn

from arvis.checks import check_token_ids
from arvis.config import Config
from arvis.nn.sincos import sincos_1d, sincos_3d
from arvis.nn.vit import ViTBlock, xavier_init_vit
from arvis.quantizers.stochastic import StochasticVectorQuantizer
from arvis.tokenizers.base import TOKENIZERS, Tokenizer, TokenizerOutput, TokenLayout
from arvis.tokenizers.larp_prior import ContinuousPrior, prior_loss, scheduled_sampling_ratio


@dataclasses.dataclass(frozen=True, kw_only=True)
class LARPConfig(Config):
    """Architecture and training objective of a :class:`LARPTokenizer`; the defaults are LARP-L-Long.

    Attributes:
        image_size, num_frames, in_channels: the clips (b, c, t, h, w) it encodes.
        patch_size, temporal_patch_size: the 3D patch (pt, p, p) of the encoder and the decoder.
        width, encoder_depth, decoder_depth, num_heads: the two ViTs (timm blocks, no qkv bias).
        num_tokens: n holistic tokens.
        codebook_size, codebook_dim, temperature: the stochastic VQ (k x e codes, τ).
        commitment_beta: commitment weight inside the VQ loss.
        entropy_loss_ratio: weight of LlamaGen's codebook entropy loss; 0 (LARP) turns it off. Not in LARP: small
            demo codebooks collapse onto a few codes that the prior predicts easily without it.
        vq_weight: weight of the VQ loss (codebook + beta·commitment) in the objective.
        continuous_warmup: fraction of training (``set_training_progress``) spent as a plain autoencoder:
            the decoder reconstructs from the unit-normalised continuous latents instead of the codes, and
            the quantizer and the prior see the latents detached, so that the codebook (its VQ and entropy
            losses) and the prior follow the encoder while only the reconstruction trains it; 0 (LARP) never
            does. Not in LARP: trained from random codes, a small 1D tokenizer stays at blurry colour blobs for
            thousands of steps (TiTok needs a two-stage recipe for the same reason); the CPU demo warms up.
        query_init_std: std of the learned queries.
        latent_pos_base: base of the decoder's 1D sin-cos latent positions.
        prior: train the AR prior with the tokenizer.
        prior_width, prior_depth, prior_heads, prior_dropout: the prior GPT (gptc-S: 384, 12, 6, 0.1).
        prior_weight: weight of its cross-entropy (0.06).
        prior_rounds: scheduled-sampling rounds (2).
        prior_replace_max, prior_replace_peak: the replaced fraction ramps to ``max`` at ``peak`` of training.
        prior_temperature: cosine-logit temperature of the prior (1.0).
        prior_lr_multiplier: the prior's learning rate over the base. 1 is what upstream's trainer in effect runs
            (its per-step learning-rate schedule sets every parameter group of the tokenizer's optimiser to the
            base rate, overwriting the prior's 50x group); 50 is the paper's stated multiplier.
        usage_window: recent indices kept for the codebook-usage metric.
        sincos_layout: the 3D sin-cos layout of the patch positions, ``"additive"`` (upstream) or ``"concat"``
            (arvis 0.1, see :func:`arvis.nn.sincos.sincos_3d`).
    """

    saved_defaults = {"sincos_layout": "concat"}

    image_size: int = 128
    num_frames: int = 16
    in_channels: int = 3
    patch_size: int = 8
    temporal_patch_size: int = 4
    width: int = 768
    encoder_depth: int = 12
    decoder_depth: int = 12
    num_heads: int = 12
    num_tokens: int = 1024
    codebook_size: int = 8192
    codebook_dim: int = 16
    temperature: float = 0.03
    commitment_beta: float = 0.25
    entropy_loss_ratio: float = 0.0
    vq_weight: float = 0.1
    continuous_warmup: float = 0.0
    query_init_std: float = 0.02
    latent_pos_base: float = 10000.0
    prior: bool = True
    prior_width: int = 384
    prior_depth: int = 12
    prior_heads: int = 6
    prior_dropout: float = 0.1
    prior_weight: float = 0.06
    prior_rounds: int = 2
    prior_replace_max: float = 0.5
    prior_replace_peak: float = 0.3
    prior_temperature: float = 1.0
    prior_lr_multiplier: float = 1.0
    usage_window: int = 65536
    sincos_layout: Literal["additive", "concat"] = "additive"

    def __post_init__(self) -> None:
        for name in ("image_size", "num_frames", "in_channels", "patch_size", "temporal_patch_size", "width",
                     "encoder_depth", "decoder_depth", "num_heads", "num_tokens", "codebook_size", "codebook_dim",
                     "prior_width", "prior_depth", "prior_heads", "prior_rounds", "usage_window"):
            if getattr(self, name) < 1:
                raise ValueError(f"LARPConfig.{name} must be a positive integer, got {getattr(self, name)}")
        if self.image_size % self.patch_size:
            raise ValueError(f"LARPConfig.image_size {self.image_size} must be divisible by patch_size {self.patch_size}")
        if self.num_frames % self.temporal_patch_size:
            raise ValueError(f"LARPConfig.num_frames {self.num_frames} must be divisible by temporal_patch_size "
                             f"{self.temporal_patch_size}")
        position_multiple = 16 if self.sincos_layout == "concat" else 4
        if self.width % self.num_heads or self.width % position_multiple:
            raise ValueError(f"LARPConfig.width {self.width} must be divisible by num_heads {self.num_heads} and "
                             f"by {position_multiple} ({self.sincos_layout} 3D sin-cos positions)")
        if self.prior_width % self.prior_heads:
            raise ValueError(f"LARPConfig.prior_width {self.prior_width} must be divisible by prior_heads "
                             f"{self.prior_heads}")
        if self.num_tokens < 2 and self.prior:
            raise ValueError("LARPConfig: the AR prior needs at least 2 tokens")
        if self.entropy_loss_ratio < 0:
            raise ValueError(f"LARPConfig.entropy_loss_ratio must be >= 0, got {self.entropy_loss_ratio}")
        for name in ("temperature", "prior_temperature"):
            if not getattr(self, name) > 0:
                raise ValueError(f"LARPConfig.{name} must be > 0, got {getattr(self, name)}")
        if not 0.0 <= self.continuous_warmup <= 1.0:
            raise ValueError(f"LARPConfig.continuous_warmup must lie in [0, 1], got {self.continuous_warmup}")
        if not 0.0 <= self.prior_replace_max <= 1.0 or not 0.0 <= self.prior_replace_peak <= 1.0:
            raise ValueError("LARPConfig.prior_replace_max and prior_replace_peak must lie in [0, 1]")

    @property
    def patch_grid(self) -> tuple[int, int, int]:
        """(t/pt, h/p, w/p) patches."""
        side = self.image_size // self.patch_size
        return self.num_frames // self.temporal_patch_size, side, side


@TOKENIZERS.register
class LARPTokenizer(Tokenizer):
    """Clips (b, c, t, h, w) in [0, 1] <-> n holistic tokens (b, n); an AR prior shapes them while training."""

    config_class = LARPConfig
    pixel_range = (0.0, 1.0)

    def __init__(self, config: LARPConfig) -> None:
        super().__init__(config)
        d, e = config.width, config.codebook_dim
        frames, rows, cols = config.patch_grid
        patch = (config.temporal_patch_size, config.patch_size, config.patch_size)
        block = {"qk_norm": False, "layer_scale_init": None, "qkv_bias": False, "norm_eps": 1e-5}
        self.patch_embed = nn.Conv3d(config.in_channels, d, kernel_size=patch, stride=patch)
        self.register_buffer("patch_positions", sincos_3d(d, frames, rows, cols, config.sincos_layout),
                             persistent=False)
        self.queries = nn.Parameter(torch.randn(config.num_tokens, d) * config.query_init_std)
        self.encoder = nn.ModuleList(ViTBlock(d, config.num_heads, **block) for _ in range(config.encoder_depth))
        self.quant_proj = nn.Linear(d, e)
        self.quantizer = StochasticVectorQuantizer(
            config.codebook_size, e, temperature=config.temperature, commitment_beta=config.commitment_beta,
            entropy_loss_ratio=config.entropy_loss_ratio, usage_window=config.usage_window)
        self.post_quant_proj = nn.Linear(e, d)
        self.register_buffer("latent_positions", sincos_1d(d, torch.arange(config.num_tokens), config.latent_pos_base),
                             persistent=False)
        self.patch_query_type = nn.Parameter(torch.randn(d) * 0.02)
        self.decoder = nn.ModuleList(ViTBlock(d, config.num_heads, **block) for _ in range(config.decoder_depth))
        self.output_norm = nn.LayerNorm(d, eps=1e-6)
        self.output_proj = nn.Linear(d, config.in_channels * config.temporal_patch_size * config.patch_size ** 2)
        self.prior = (ContinuousPrior(e, config.num_tokens - 1, width=config.prior_width, depth=config.prior_depth,
                                      num_heads=config.prior_heads, dropout=config.prior_dropout)
                      if config.prior else None)
        self.training_progress = 0.0
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Upstream's ``initialize_weights``: Xavier-uniform linears (the prior's too) and patch embedding,
        zero biases, zero output projection."""
        xavier_init_vit(self, self.patch_embed)
        nn.init.zeros_(self.output_proj.weight)
        nn.init.zeros_(self.output_proj.bias)

    # ------------------------------------------------------------------ interface
    @property
    def layout(self) -> TokenLayout:
        return TokenLayout(((self.config.num_tokens,),))

    @property
    def latent_dim(self) -> int:
        """e, the codebook dimension."""
        return self.config.codebook_dim

    @property
    def num_frames(self) -> int:
        return self.config.num_frames

    @property
    def pixel_shape(self) -> tuple[int, ...]:
        return (self.config.in_channels, self.config.num_frames, *self.image_size)

    def set_training_progress(self, fraction: float) -> None:
        """Sets the scheduled-sampling ramp position (the trainer calls this before every step)."""
        self.training_progress = float(min(1.0, max(0.0, fraction)))

    def learning_rate_multipliers(self) -> dict[str, float]:
        return {"prior.": self.config.prior_lr_multiplier} if self.prior is not None else {}

    def for_inference(self) -> LARPTokenizer:
        """A copy without the AR prior, which is only a training objective (what the trainer saves)."""
        if self.prior is None:
            return self
        parameter = next(self.parameters())
        stripped = LARPTokenizer(dataclasses.replace(self.config, prior=False))
        stripped.load_state_dict({name: value for name, value in self.state_dict().items()
                                  if not name.startswith("prior.")})
        return stripped.to(device=parameter.device, dtype=parameter.dtype).train(self.training)

    # ------------------------------------------------------------------ encoder / decoder
    def latents(self, pixels: Tensor) -> Tensor:
        """clips (b, c, t, h, w) -> pre-quantization codes (b, e, 1, n) (no input checks)."""
        patches = rearrange(self.patch_embed(pixels), "b d t h w -> b (t h w) d") + self.patch_positions
        queries = repeat(self.queries, "n d -> b n d", b=pixels.shape[0])
        x = torch.cat([patches, queries], dim=1)
        for block in self.encoder:
            x = block(x)
        return rearrange(self.quant_proj(x[:, patches.shape[1]:]), "b n e -> b e 1 n")

    def decode_codes(self, codes: Tensor) -> Tensor:
        """unit codes (b, e, 1, n) -> clips (b, c, t, h, w) (not clamped)."""
        config = self.config
        frames, rows, cols = config.patch_grid
        context = self.post_quant_proj(rearrange(codes, "b e 1 n -> b n e")) + self.latent_positions
        queries = (self.patch_positions + self.patch_query_type).expand(codes.shape[0], -1, -1)
        x = torch.cat([context, queries], dim=1)
        for block in self.decoder:
            x = block(x)
        patches = self.output_proj(self.output_norm(x[:, context.shape[1]:]))
        p, pt = config.patch_size, config.temporal_patch_size
        return rearrange(patches, "b (t h w) (pt p q c) -> b c (t pt) (h p) (w q)", t=frames, h=rows, w=cols,
                         pt=pt, p=p, q=p)

    # ------------------------------------------------------------------ public API
    def encode(self, pixels: Tensor) -> Tensor:
        """clips (b, c, t, h, w) in [0, 1] -> tokens (b, n) long: the most likely code of every token."""
        self.check_pixels(pixels)
        return rearrange(self.quantizer.nearest_indices(self.latents(pixels)), "b 1 n -> b n")

    def encode_latents(self, pixels: Tensor) -> Tensor:
        """clips (b, c, t, h, w) in [0, 1] -> latents (b, n, e) float: the unit-normalised pre-quantization codes,
        whose nearest (most likely) codes are :meth:`encode`'s tokens. Changes no state."""
        self.check_pixels(pixels)
        return rearrange(self.quantizer.prepare(self.latents(pixels)), "b e 1 n -> b n e")

    def nearest_tokens(self, latents: Tensor) -> Tensor:
        """latents (b, n, e) float -> tokens (b, n) long: the nearest (most likely) codes, never a draw."""
        self.check_latents(latents)
        return rearrange(self.quantizer.nearest_indices(rearrange(latents, "b n e -> b e 1 n")), "b 1 n -> b n")

    def decode_ids(self, tokens: Tensor) -> Tensor:
        """tokens (b, n) long -> clips (b, c, t, h, w), not clamped."""
        check_token_ids(tokens, self.config.num_tokens, self.vocab_size)
        return self.decode_codes(self.quantizer.lookup(rearrange(tokens, "b n -> b 1 n")))

    def decode_vectors(self, vectors: Tensor) -> Tensor:
        """vectors (b, n, e) float, unquantised allowed -> clips (b, c, t, h, w), not clamped."""
        self.check_latents(vectors)
        return self.decode_codes(rearrange(vectors.to(self.post_quant_proj.weight.dtype), "b n e -> b e 1 n"))

    def forward(self, pixels: Tensor, *, generator: torch.Generator | None = None) -> TokenizerOutput:
        """Training pass: stochastic codes in training mode (nearest in eval), VQ losses and the prior's loss.

        During the ``continuous_warmup`` part of training the reconstruction is decoded from the unit
        continuous latents, and the VQ, entropy and prior losses are taken on the detached latents (they
        train the codebook and the prior, not the encoder); in eval mode it always comes from the codes.

        ``generator`` is unused: LARP's stochastic codes and scheduled sampling draw from torch's global RNG,
        which a resume restores.
        """
        self.check_pixels(pixels)
        config = self.config
        latents = self.latents(pixels)
        warming_up = self.training and self.training_progress < config.continuous_warmup
        quantized = self.quantizer(latents.detach() if warming_up else latents)
        decoded = F.normalize(latents, dim=1) if warming_up else quantized.quantized
        tokens = rearrange(quantized.indices, "b 1 n -> b n")
        losses = {name: value if name == "entropy" else config.vq_weight * value
                  for name, value in quantized.losses.items()}
        metrics = {"codebook_usage": quantized.usage}
        if self.prior is not None and self.training:
            ratio = scheduled_sampling_ratio(self.training_progress, config.prior_replace_max, config.prior_replace_peak)
            cross_entropy, accuracy = prior_loss(
                self.prior, rearrange(quantized.quantized, "b e 1 n -> b n e"), tokens, self.quantizer.codes(),
                rounds=config.prior_rounds, replace_ratio=ratio, temperature=config.prior_temperature)
            losses["prior"] = config.prior_weight * cross_entropy
            metrics.update(prior_cross_entropy=cross_entropy.detach(), prior_accuracy=accuracy)
        return TokenizerOutput(reconstruction=self.decode_codes(decoded), tokens=tokens,
                               losses=losses, metrics=metrics)


TOKENIZERS.add_preset(
    "larp-tiny",
    LARPConfig(image_size=16, num_frames=4, patch_size=8, temporal_patch_size=2, width=32, encoder_depth=2,
               decoder_depth=2, num_heads=2, num_tokens=8, codebook_size=64, codebook_dim=8, prior_width=32,
               prior_depth=2, prior_heads=2, prior_dropout=0.0, usage_window=1024),
    "Tiny LARP for tests: 4 frames at 16 px, patch (2, 8, 8) -> 8 patches, 8 tokens, codebook 64x8, 2-layer prior.",
)
TOKENIZERS.add_preset(
    "larp-demo",
    LARPConfig(image_size=32, num_frames=8, patch_size=8, temporal_patch_size=2, width=128, encoder_depth=4,
               decoder_depth=4, num_heads=4, num_tokens=32, codebook_size=256, codebook_dim=8, prior_width=64,
               prior_depth=2, prior_heads=2, usage_window=8192),
    "Moving-glyph LARP: 8 frames at 32 px, patch (2, 8, 8) -> 64 patches, 32 tokens, codebook 256x8, τ 0.03, "
    "2-layer 64-wide prior.",
)
TOKENIZERS.add_preset(
    "larp-l",
    LARPConfig(),
    "LARP-L-Long (paper): 16 frames at 128 px, patch (4, 8, 8) -> 1024 patches, 1024 tokens, ViT 12+12 blocks "
    "768 wide, SVQ 8192x16 τ 0.03, gptc-S prior (12 layers, 384 wide) at the base learning rate (what upstream's "
    "trainer runs; the paper states 50x: prior_lr_multiplier=50).",
)
