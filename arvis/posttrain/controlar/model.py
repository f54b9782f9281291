"""ControlAR: a raster generator that follows a spatial control map (a mask, an edge map) by conditional decoding.

Li et al., "ControlAR: Controllable Image Generation with Autoregressive Models", ICLR 2025,
https://arxiv.org/abs/2410.02705 (upstream hustvl/ControlAR, checked at 87e32e9; notes in
``shared/reference/generators.md`` §4).

Shapes: b batch, c control channels, H × W control pixels, l tokens (an r × s grid), P the base's prefix
length (1 class token, or p prompt positions), e encoder width, d model width, v vocabulary.

A :class:`ControlARRaster` wraps a copy of a trained :class:`~arvis.generators.raster.RasterGenerator`
(``self.base``, built from its config, driven only through its public seam) and adds:

* the control encoder (:class:`~.encoder.ControlEncoder`, a ViT whose patch grid is the token grid), its
  ``adapter_mlp`` (e → d → d) and ``condition_mlp`` (d → d → d; upstream's ``ConditionEmbedder``): control
  features (b, l, d), feature i for token i. Rows carrying the null condition (the null class, the empty prompt)
  get zero features, so label dropout in training zeroes the control of exactly the rows it dropped, and the
  null half of classifier-free guidance has zero control (upstream's ``drop_ids`` and ``condition_null``).
* ``mode="decoding"`` (the paper's method): the sequence stays [prefix, t_0, ..., t_{l-2}]; the input position
  that predicts t_i (P − 1 + i) gets ``injections[k](feature_i)`` added to its hidden state before layer
  ⌊k·L/3⌋, k = 0, 1, 2, through the trunk's per-layer additions (several injections at one layer are summed, as
  at L < 3). No sequence length is added.
* ``mode="prefill"`` (the paper's baseline, conditional prefilling): the l features are prefix tokens after the
  condition, [prefix, f_0, ..., f_{l-1}, t_0, ..., t_{l-2}] (P + 2l − 1 positions), feature j at the RoPE row of
  grid cell j (the row image token j's input has).

``control_strength`` (a sampler setting; 1 in training) scales the injected features (prefill: the prefix
features).

Upstream behaviour not copied (deliberate deviations):

* **Initialisation.** Upstream's ``MLP`` zeroes both its layers, then ``initialize_weights()`` redraws every
  ``nn.Linear`` of the model as N(0, 0.02), the just-loaded DINOv2/ViT encoder's included (its patch embedding,
  positions and norms keep their values), and the base loads with ``strict=False``: training starts from a mostly
  random encoder. Here the encoder keeps its weights (local pretrained ones, or transformers' own initialisation),
  ``adapter_mlp``, ``condition_mlp`` and the injections' first layers are N(0, 0.02) (``initializer_range``), and
  the injections' second layers are zero (``injection_init="zero"``): in decoding mode the model starts as the
  base, and every new part gets a gradient (zeroing both layers of an MLP, upstream's stated intent, would give
  none). ``injection_init="normal"`` is upstream's effective N(0, 0.02). Prefill mode has no injections: its l
  prefix tokens change the base's attention from the first step.
* **Injection layers.** Upstream injects where ``i % (L // 3) == 0``, which indexes past its three MLPs unless 3
  divides L (4 layers: 0, 1, 2, 3); here the layers are ⌊k·L/3⌋.
* **c2i's ``condition_token_num=256`` default** zeroes every training RoPE row and empties the logits slice
  (ControlAR#18; its scripts pass 0); there is no such field here. Upstream's prefilling variant also gives the
  control prefix zeroed RoPE; here it takes its grid cells' rows.
* **``control_strength``.** Upstream t2i scales the injected features by it on its guided path only: its unguided
  prefill passes no strength, which resets it to 1 (the user's setting is ignored), and c2i has no strength at
  all. Here it acts with or without guidance, in both modes.

Which rows carry no control: those carrying the null condition (the null class, the empty prompt), by value. In
training these are exactly the rows label dropout replaced; at sampling, guidance's null half. So a sample asked
for the null class gets no control either (unconditional generation under a control map is not offered: the
model never learns it, as upstream's does not).

Arbitrary resolution: the base's RoPE table and token layout are fixed, so the control map must have the
tokenizer's image size (a clear error names it otherwise).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Literal

import torch
from torch import Tensor, nn

from arvis.conditions import Condition, as_condition
from arvis.config import Config
from arvis.generators.base import GENERATORS, GeneratorOutput, StepOutput
from arvis.generators.raster import RasterGenerator
from arvis.nn.kv_cache import KVCache
from arvis.nn.mlp import GeluMLP
from arvis.posttrain.controlar.encoder import ControlEncoder, ControlEncoderConfig
from arvis.posttrain.wrapped import RasterWrapper

NUM_INJECTIONS = 3  # upstream's condition_layers


def injection_layers(num_layers: int) -> tuple[int, ...]:
    """The layers the three injections precede: ⌊k·L/3⌋ for k = 0, 1, 2 (36 layers: 0, 12, 24)."""
    return tuple(k * num_layers // NUM_INJECTIONS for k in range(NUM_INJECTIONS))


@dataclasses.dataclass(frozen=True, kw_only=True)
class ControlARRasterConfig(Config):
    """A ControlAR generator: the wrapped base and the control path.

    Attributes:
        base: {"type": the base generator's class name, "config": its config as a dict}.
        mode: ``"decoding"`` (control added to the hidden states; ControlAR) or ``"prefill"`` (control
            features as prefix tokens; the paper's baseline).
        encoder: the control encoder's backbone.
        image_size: the control map's side in pixels (the tokenizer's image size).
        control_channels: c, 1 (a mask or an edge map) or 3.
        injection_init: the injections' second layers start at zero (``"zero"``: a decoding-mode model starts as
            the base)
            or N(0, ``initializer_range``) (``"normal"``, upstream's effective initialisation).
        initializer_range: the std of the new MLPs' N(0, std) weights (upstream 0.02, for widths of 768 and
            more; a narrow model may take more, as each layer scales its input by about std·sqrt(width)).
        control_kind: the maps it was trained on, if made by an :mod:`arvis.data.control` operator (``"mask"``,
            ``"edges"``): ``arvis generate --control-from`` computes that kind.
    """

    base: dict[str, Any] = dataclasses.field(default_factory=dict)
    mode: Literal["decoding", "prefill"] = "decoding"
    encoder: ControlEncoderConfig = ControlEncoderConfig()
    image_size: int = 256
    control_channels: int = 1
    injection_init: Literal["zero", "normal"] = "zero"
    initializer_range: float = 0.02
    control_kind: Literal["mask", "edges"] | None = None

    def __post_init__(self) -> None:
        if self.image_size < 1:
            raise ValueError(f"image_size must be positive, got {self.image_size}")
        if self.control_channels not in (1, 3):
            raise ValueError(f"control_channels must be 1 or 3, got {self.control_channels}")
        if self.initializer_range <= 0:
            raise ValueError(f"initializer_range must be > 0, got {self.initializer_range}")


class ControlCache:
    """A decoding pass's state: the base trunk's KV cache and the control features, computed once by the first
    step (decoding: each injection's output padded to the sequence, (b, P − 1 + l, d); prefill: the features)."""

    def __init__(self, kv: KVCache) -> None:
        self.kv = kv
        self.controls: list[Tensor] | None = None

    @property
    def length(self) -> int:
        return self.kv.length

    @property
    def static(self) -> bool:
        return self.kv.static

    @property
    def max_length(self) -> int:
        return self.kv.max_length

    def rewind(self, length: int) -> None:
        self.kv.rewind(length)


@GENERATORS.register
class ControlARRaster(RasterWrapper):
    """A raster generator with ControlAR's control encoder and conditional decoding (or prefilling)."""

    config_class = ControlARRasterConfig
    samplers = ("controlled-next-token", "next-token", "speculative-jacobi")

    def __init__(self, config: ControlARRasterConfig) -> None:
        super().__init__(config)
        rows, cols = self.base.config.token_grid
        if config.image_size % rows or config.image_size % cols:
            raise ValueError(f"the control map side ({config.image_size} px) must be a multiple of the token grid "
                             f"{rows}x{cols}")
        width = self.base.config.dim
        self.encoder = ControlEncoder(config.encoder, (rows, cols), config.control_channels)
        self.adapter_mlp = GeluMLP(config.encoder.width, width, out_dim=width, bias=False)
        self.condition_mlp = GeluMLP(width, width, bias=False)
        count = NUM_INJECTIONS if config.mode == "decoding" else 0
        self.injections = nn.ModuleList(GeluMLP(width, width, bias=False) for _ in range(count))
        self.reset_control_parameters()

    def reset_control_parameters(self) -> None:
        """The new MLPs' initialisation (see the module docstring); the encoder keeps its own."""
        for mlp in (self.adapter_mlp, self.condition_mlp, *self.injections):
            for linear in (mlp.fc1, mlp.fc2):
                nn.init.normal_(linear.weight, std=self.config.initializer_range)
        if self.config.injection_init == "zero":
            for mlp in self.injections:
                nn.init.zeros_(mlp.fc2.weight)

    @classmethod
    def from_base(cls, base: RasterGenerator, *, image_size: int, mode: Literal["decoding", "prefill"] = "decoding",
                  encoder: ControlEncoderConfig | None = None, control_channels: int = 1,
                  injection_init: Literal["zero", "normal"] = "zero", initializer_range: float = 0.02,
                  control_kind: Literal["mask", "edges"] | None = None) -> ControlARRaster:
        """A ControlAR generator around a copy of ``base`` (its weights copied) for ``image_size``-pixel square
        control maps (the tokenizer's image side); ``encoder`` None is upstream c2i's ViT-small."""
        return cls.wrap(base, mode=mode, encoder=encoder if encoder is not None else ControlEncoderConfig(),
                        image_size=image_size, control_channels=control_channels, injection_init=injection_init,
                        initializer_range=initializer_range, control_kind=control_kind)

    # ---- what the wrapper changes of its base ------------------------------------------------------------

    @property
    def condition_fields(self) -> frozenset[str]:
        return self.base.condition_fields | {"control"}

    @property
    def prefix_length(self) -> int:
        """The base's prefix, and in prefill mode the l control tokens after it."""
        extra = self.layout.length if self.config.mode == "prefill" else 0
        return self.base.prefix_length + extra

    @property
    def control_shape(self) -> tuple[int, int, int]:
        """(c, H, W) of one control map."""
        return self.config.control_channels, self.config.image_size, self.config.image_size

    def added_parameters(self) -> int:
        """Parameters beyond the base's: the encoder, the adapter and condition MLPs and the injections."""
        return sum(p.numel() for p in self.parameters()) - sum(p.numel() for p in self.base.parameters())

    def check_tokenizer(self, tokenizer) -> None:
        """Raises ``ValueError`` unless ``tokenizer``'s images are the control maps' size (and the base agrees)."""
        side = self.config.image_size
        if tuple(tokenizer.image_size) != (side, side):
            raise ValueError(f"this ControlAR generator takes {side}x{side} control maps, but the tokenizer's images "
                             f"are {tokenizer.image_size[0]}x{tokenizer.image_size[1]}")
        self.base.check_tokenizer(tokenizer)

    def null_condition(self, batch_size: int, device: torch.device | str | None = None) -> Condition:
        """The base's null condition with zero control maps (whose features are zero anyway: null rows get none)."""
        return self.base.null_condition(batch_size, device).replace(
            control=torch.zeros(batch_size, *self.control_shape, device=device))

    def check_condition(self, condition: Condition | Tensor, *, allow_null: bool = True) -> Condition:
        """The base's fields checked by the base, and ``control`` (b, c, H, W) float in [0, 1]."""
        condition = super().check_condition(condition, allow_null=allow_null)
        self.check_control(condition.control, condition.batch_size)
        return condition

    def check_control(self, control: Tensor, batch_size: int) -> None:
        """Raises ``ValueError`` naming the problem unless ``control`` is (b, c, H, W) float, finite, in [0, 1]."""
        expected = (batch_size, *self.control_shape)
        if not control.is_floating_point() or tuple(control.shape) != expected:
            fix = ""
            if control.ndim == 4 and tuple(control.shape[-2:]) != self.control_shape[1:]:
                fix = (f"; resize the map to {self.config.image_size}x{self.config.image_size} px, the tokenizer's "
                       "image size (this generator's RoPE table and token grid are fixed, so no other size is "
                       "supported)")
            elif control.ndim == 4 and control.shape[1] != self.config.control_channels:
                fix = f"; this generator takes {self.config.control_channels}-channel maps"
            raise ValueError(f"control maps must be float ({', '.join(map(str, expected))}) (batch, channels, height, "
                             f"width), got {control.dtype} {tuple(control.shape)}{fix}")
        if control.numel() and (not torch.isfinite(control).all() or control.min() < 0 or control.max() > 1):
            raise ValueError("control maps must be finite and lie in [0, 1] (a mask of 0 and 1, or an edge map "
                             "scaled to [0, 1])")

    # ---- the control path --------------------------------------------------------------------------------

    def control_features(self, control: Tensor, null_rows: Tensor) -> Tensor:
        """control (b, c, H, W), null_rows (b,) bool -> features (b, l, d): zero on the null rows. In training every
        map is encoded and the null rows' features zeroed (so every parameter gets a gradient, even from a batch
        whose rows all dropped); in eval mode the null rows' maps are not encoded (guidance's null half costs
        nothing here)."""
        if self.training:
            features = self.condition_mlp(self.adapter_mlp(self.encoder(control)))
            return features * (~null_rows).to(features.dtype)[:, None, None]
        kept = (~null_rows).nonzero()[:, 0]
        features = self.adapter_mlp.fc1.weight.new_zeros(control.shape[0], self.layout.length, self.base.config.dim)
        if not len(kept):  # every row null (the null half alone)
            return features
        encoded = self.condition_mlp(self.adapter_mlp(self.encoder(control[kept])))  # (k, l, d)
        return features.index_copy(0, kept, encoded.to(features.dtype))

    def injected(self, features: Tensor) -> list[Tensor]:
        """features (b, l, d) -> each injection's output padded to the decoding sequence, (b, P − 1 + l, d):
        sequence position q gets row q (feature q − P + 1; zeros before it)."""
        pad = features.new_zeros(features.shape[0], self.base.prefix_length - 1, features.shape[2])
        return [torch.cat([pad, mlp(features)], dim=1) for mlp in self.injections]

    def additions(self, injected: list[Tensor], start: int, count: int,
                  strength: float) -> Mapping[int, Tensor]:
        """{layer: (b, count, d)} for the sequence positions [start, start + count)."""
        result: dict[int, Tensor] = {}
        for layer, padded in zip(injection_layers(self.base.config.num_layers), injected, strict=True):
            part = padded[:, start:start + count] * strength
            result[layer] = result[layer] + part if layer in result else part
        return result

    def positions(self, start: int, count: int, device: torch.device) -> Tensor | None:
        """Prefill: the RoPE rows of sequence positions [start, start + count) (the control prefix takes its grid
        cells' rows, and image inputs the rows they have in the base); None (the default rows) for decoding."""
        if self.config.mode == "decoding":
            return None
        index = torch.arange(start, start + count, device=device)
        prefix_end = self.base.prefix_length + self.layout.length
        return torch.where(index < prefix_end, index, index - self.layout.length)

    # ---- passes ------------------------------------------------------------------------------------------

    def forward(self, tokens: Tensor, condition: Condition | Tensor, targets: Tensor | None = None, *,
                control_strength: float = 1.0) -> GeneratorOutput:
        """Teacher forcing. tokens (b, l) long, condition (the base's fields and ``control`` (b, c, H, W)),
        targets (b, l) long (default ``tokens``) -> loss and logits (b, l, v). The base's condition dropout runs
        here (in training), and the dropped rows' control is zeroed with it."""
        base = self.base
        tokens, condition, targets = self.teacher_forcing_batch(tokens, condition, targets)
        dropped = base.drop_condition(condition.replace(control=None))  # the base's condition after its dropout
        features = self.control_features(condition.control, base.null_rows(dropped))
        parts = [base.condition_embedding(dropped)]
        if self.config.mode == "prefill":
            parts.append(features * control_strength)
        x = base.teacher_forcing_inputs(torch.cat([*parts, base.embed_tokens(tokens[:, :-1])], dim=1))
        count = x.shape[1]
        additions = None
        if self.config.mode == "decoding":
            additions = self.additions(self.injected(features), 0, count, control_strength)
        hidden = base.trunk(x, positions=self.positions(0, count, x.device),
                            mask=base.attention_mask(dropped, 0, count, x.device), additions=additions)
        return self.teacher_forcing_output(base.logits(hidden[:, self.prefix_length - 1:]), targets)

    def new_cache(self, batch_size: int) -> ControlCache:
        return ControlCache(self.base.trunk.new_cache(self.prefix_length + self.layout.length))

    def step(self, tokens: Tensor | None, condition: Condition | Tensor, cache: ControlCache, *,
             output: Literal["logits", "hidden", "both"] = "logits", store: bool = True,
             every_position: bool = False, control_strength: float = 1.0) -> Tensor | StepOutput:
        """As :meth:`arvis.generators.llama.NextTokenLlama.step`: feeds the condition prefix (``tokens=None``,
        first call: the control features are computed once here and kept in ``cache``) or the next (b, n) tokens;
        -> the logits (b, 1, v) of the next token (or every fed position's with ``every_position``).
        ``control_strength`` scales the control (1: as trained; 0 in decoding mode: the wrapped trunk's logits
        without additions)."""
        base = self.base
        condition = as_condition(condition)
        if not isinstance(cache, ControlCache):
            raise ValueError(f"expected the cache of this generator's new_cache, got {type(cache).__name__}")
        self.check_step_order(tokens, cache.length, "the condition prefix")
        if tokens is None:
            self.check_condition(condition)
            features = self.control_features(condition.control, base.null_rows(condition))
            cache.controls = self.injected(features) if self.config.mode == "decoding" else [features]
            x = base.condition_embedding(condition.replace(control=None))
            if self.config.mode == "prefill":
                x = torch.cat([x, features * control_strength], dim=1)
        else:
            if cache.controls is None:  # a cache the base's own steps filled
                raise ValueError("the first step must feed the condition prefix: call step(None, condition, cache)")
            x = base.embed_tokens(tokens)
        start, count = cache.length, x.shape[1]
        end = self.prefix_length + self.layout.length - 1  # the prefix and the first l - 1 tokens
        if start + count > end:
            raise ValueError(f"the pass would feed positions up to {start + count}, past the sequence's {end} (the "
                             "prefix and the first l - 1 tokens; the last token is never fed)")
        positions = base.absolute_positions(start, count)
        x = x if positions is None else x + positions
        additions = None
        if self.config.mode == "decoding":
            additions = self.additions(cache.controls, start, count, control_strength)
        hidden = base.trunk(x, positions=self.positions(start, count, x.device),
                            mask=base.attention_mask(condition, start, count, x.device), cache=cache.kv, store=store,
                            additions=additions)
        if not (every_position and tokens is not None):
            hidden = hidden[:, -1:]
        return base.step_output(hidden, output)


def _tiny_encoder(patch_size: int) -> ControlEncoderConfig:
    return ControlEncoderConfig(width=32, num_layers=2, num_heads=2, mlp_dim=64, patch_size=patch_size,
                                position_size=4 * patch_size)


def _preset(base: str, image_size: int, encoder: ControlEncoderConfig, **base_changes: Any) -> ControlARRasterConfig:
    base_config = GENERATORS.preset(base).replace(**base_changes) if base_changes else GENERATORS.preset(base)
    return ControlARRasterConfig(base={"type": "RasterGenerator", "config": base_config.to_dict()},
                                 image_size=image_size, encoder=encoder)


GENERATORS.add_preset("controlar-raster-tiny", _preset("raster-tiny", 16, _tiny_encoder(4)),
                      "ControlAR around raster-tiny for vq-tiny (16 px masks, a 2-layer patch-4 ViT; made by "
                      "ControlARRaster.from_base in practice)")
GENERATORS.add_preset("controlar-raster-t2i-tiny",
                      _preset("raster-t2i-tiny", 16, ControlEncoderConfig(architecture="dinov2", width=32, num_layers=1,
                                                                          num_heads=2, mlp_dim=64, patch_size=2,
                                                                          position_size=8, layer_norm_eps=1e-6)),
                      "ControlAR around raster-t2i-tiny (6 prompt positions) with a 1-layer DINOv2 encoder of patch 2 "
                      "(16 px maps resized to 8 px)")
GENERATORS.add_preset("controlar-raster-demo",
                      _preset("raster-demo", 32, ControlEncoderConfig(width=64, num_layers=2, num_heads=2, mlp_dim=128,
                                                                      patch_size=4, position_size=32)),
                      "ControlAR around raster-demo for the 32 px glyphs (a 2-layer, 64-wide patch-4 ViT)")
GENERATORS.add_preset("controlar-llamagen-b", _preset("llamagen-b", 256, ControlEncoderConfig()),
                      "ControlAR c2i: LlamaGen GPT-B (VQ-16, 256 px) with a ViT-small control encoder (22M)")
GENERATORS.add_preset("controlar-llamagen-l", _preset("llamagen-l", 256, ControlEncoderConfig()),
                      "ControlAR c2i: LlamaGen GPT-L (VQ-16, 256 px) with a ViT-small control encoder")
GENERATORS.add_preset("controlar-llamagen-t2i-xl",
                      _preset("llamagen-t2i-xl", 512,
                              ControlEncoderConfig(architecture="dinov2", mlp_dim=1536, patch_size=14,
                                                   position_size=518, layer_norm_eps=1e-6),
                              token_grid=(32, 32)),
                      "ControlAR t2i: LlamaGen t2i GPT-XL at 512 px (32x32 VQ-16 tokens) with a DINOv2-small control "
                      "encoder (maps resized to 448 px, patch 14)")
