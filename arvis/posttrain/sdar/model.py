"""SDAR: a raster generator turned into a blockwise masked-diffusion generator that decodes several tokens per pass.

Cheng et al., "SDAR: A Synergistic Diffusion-AutoRegression Paradigm for Scalable Sequence Generation", 2025,
https://arxiv.org/abs/2510.06303 (upstream JetAstra/SDAR; notes in ``shared/reference/posttraining.md`` §4).

Shapes: b batch, l tokens, B block size, P the base's prefix length, d width, v vocabulary.

An :class:`SDARRaster` wraps a copy of a :class:`~arvis.generators.raster.RasterGenerator` (``self.base``) and adds
one learned [MASK] input embedding (a (d,) parameter beside the token table, never weight-decayed). The input id
``v`` (one past the vocabulary) stands for [MASK]. There is no
logit shift: the output at token i's position predicts token i (SDAR's choice), and token i keeps the RoPE row its
input has in the base (grid cell i).

* Training: the sequence is [prefix; x_t (l); x_0 (l)] with the same position ids in both halves and
  :func:`arvis.nn.attention.block_diffusion_mask`; the loss is the sum over masked positions of CE / p, divided by l.
* Decoding: the prefix is stored first; each block is fed against the cache without storing it (``store=False``),
  and a finished block is stored by the next block's first pass (``finished=``), so a block costs its denoising
  passes and no extra call.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from arvis.conditions import Condition, as_condition
from arvis.config import Config
from arvis.generators.base import GENERATORS, GeneratorOutput, check_batch
from arvis.generators.raster import RasterGenerator
from arvis.nn.attention import block_diffusion_mask, with_key_padding
from arvis.nn.kv_cache import KVCache
from arvis.posttrain.wrapped import RasterWrapper

MIN_MASK_RATE = 1e-3  # p = (1 - 1e-3)·t + 1e-3, upstream's


@dataclasses.dataclass(frozen=True, kw_only=True)
class SDARRasterConfig(Config):
    """Attributes:
        base: {"type": the base generator's class name, "config": its config as a dict}.
        block_size: B, tokens per block (upstream default 4); the token count must be a multiple of it.
    """

    base: dict[str, Any] = dataclasses.field(default_factory=dict)
    block_size: int = 4

    def __post_init__(self) -> None:
        if self.block_size < 1:
            raise ValueError(f"block_size must be >= 1, got {self.block_size}")


@GENERATORS.register
class SDARRaster(RasterWrapper):
    """Blockwise masked diffusion over a raster generator's tokens (see the module docstring)."""

    config_class = SDARRasterConfig
    unit = "block"
    samplers = ("blockwise",)

    def __init__(self, config: SDARRasterConfig) -> None:
        super().__init__(config)
        if self.layout.length % config.block_size:
            raise ValueError(f"the {self.layout.length} tokens are not a whole number of blocks of "
                             f"{config.block_size}; choose a block size that divides them")
        self.mask_embedding = nn.Parameter(torch.empty(self.base.config.dim))
        nn.init.normal_(self.mask_embedding, std=self.base.config.initializer_range)

    @classmethod
    def from_base(cls, base: RasterGenerator, *, block_size: int = 4) -> SDARRaster:
        """An SDAR generator around a copy of ``base`` (its weights copied)."""
        return cls.wrap(base, block_size=block_size)

    @property
    def block_size(self) -> int:
        return self.config.block_size

    @property
    def mask_id(self) -> int:
        """The input id of [MASK]: one past the vocabulary."""
        return self.vocab_size

    # ---- inputs and masks ------------------------------------------------------------------------------

    def embed_inputs(self, tokens: Tensor) -> Tensor:
        """(b, n) ids in [0, v] (v: [MASK]) -> (b, n, d)."""
        masked = tokens == self.mask_id
        embedded = self.base.embed_tokens(tokens.masked_fill(masked, 0))
        return torch.where(masked[..., None], self.mask_embedding.to(embedded.dtype), embedded)

    @staticmethod
    def draw_masks(batch_size: int, length: int, device: torch.device) -> tuple[Tensor, Tensor]:
        """-> (masked (b, l) bool, mask rate p (b,)): t ~ U(0, 1) per sample, p = (1 − 1e-3)·t + 1e-3, each token
        masked with probability p, and at least one per sample (torch's global RNG, which the loop seeds)."""
        rate = (1 - MIN_MASK_RATE) * torch.rand(batch_size, device=device) + MIN_MASK_RATE
        masked = torch.rand(batch_size, length, device=device) < rate[:, None]
        forced = torch.randint(length, (batch_size,), device=device)
        masked[torch.arange(batch_size, device=device), forced] = True
        return masked, rate

    # ---- passes ----------------------------------------------------------------------------------------

    def forward(self, tokens: Tensor, condition: Condition | Tensor, targets: Tensor | None = None, *,
                masked: Tensor | None = None, rate: Tensor | None = None) -> GeneratorOutput:
        """Block-diffusion teacher forcing. tokens (b, l) long x_0, condition; ``masked`` (b, l) bool and ``rate``
        (b,) (default: drawn by :meth:`draw_masks` in training; in eval mode every token masked at rate 1, the
        deterministic first-pass view of each block) -> loss (Σ over masked positions of CE / p, ÷ l, averaged
        over the batch) and the noisy half's logits (b, l, v), position i predicting token i."""
        base = self.base
        self.check_tokens(tokens)
        condition = self.check_condition(condition)
        check_batch(tokens, condition)
        if targets is not None:
            raise ValueError("SDAR's targets are its inputs (no shift): pass targets=None")
        batch, length = tokens.shape
        if masked is None and self.training:
            masked, rate = self.draw_masks(batch, length, tokens.device)
        elif masked is None:
            masked = torch.ones_like(tokens, dtype=torch.bool)
            rate = torch.ones(batch, device=tokens.device)
        elif rate is None or masked.shape != tokens.shape or masked.dtype != torch.bool:
            raise ValueError(f"masked must be a (b, l) bool tensor given with its rate (b,), got "
                             f"{masked.dtype} {tuple(masked.shape)}")
        dropped = base.drop_condition(condition)
        prefix = base.prefix_length
        noisy = tokens.masked_fill(masked, self.mask_id)
        x = torch.cat([base.condition_embedding(dropped), self.embed_inputs(noisy), base.embed_tokens(tokens)], dim=1)
        grid = torch.arange(prefix, prefix + length, device=x.device)
        positions = torch.cat([torch.arange(prefix, device=x.device), grid, grid])
        mask = block_diffusion_mask(prefix, length, self.config.block_size, device=x.device)
        attendable = base.prefix_attendable(dropped)
        if attendable is not None:
            mask = with_key_padding(mask, attendable, x.shape[1], x.shape[1])
        hidden = base.trunk(base.tok_dropout(x), positions=positions, mask=mask)
        logits = base.logits(hidden[:, prefix:prefix + length])
        cross_entropy = F.cross_entropy(logits.flatten(0, 1), tokens.flatten(), reduction="none").view(batch, length)
        loss = ((cross_entropy * masked) / rate[:, None]).sum(1).div(length).mean()
        accuracy = ((logits.argmax(-1) == tokens) & masked).sum() / masked.sum().clamp(min=1)
        return GeneratorOutput(loss=loss, logits=logits, metrics={"accuracy": accuracy.detach(),
                                                                  "masked": masked.float().mean().detach()})

    def new_cache(self, batch_size: int) -> KVCache:
        return self.base.trunk.new_cache(self.prefix_length + self.layout.length)

    def step(self, tokens: Tensor | None, condition: Condition | Tensor, cache: KVCache, *,
             finished: Tensor | None = None, store: bool = False) -> Tensor:
        """Feeds the condition prefix (``tokens=None``, first call, stored; -> (b, 0, v)) or a block's (b, n) ids
        (``mask_id`` at masked positions) against the cache, bidirectionally within it -> its logits (b, n, v),
        position i predicting its own token. ``finished`` (b, B): the block before, complete, fed first and stored
        (it sees the cache and itself); the block itself is stored only with ``store=True``. Only logits come
        back (no ``output=``): the ``blockwise`` sampler is the one that drives it."""
        base = self.base
        condition = as_condition(condition)
        self.check_step_order(tokens, cache.length, "the condition prefix")
        if tokens is None:
            self.check_condition(condition)
            x = base.condition_embedding(condition)
            mask = base.attention_mask(condition, 0, x.shape[1], x.device)
            base.trunk(x, mask=mask, cache=cache)
            return x.new_zeros(x.shape[0], 0, self.vocab_size).float()
        start = cache.length
        parts = [tokens] if finished is None else [finished, tokens]
        lengths = [part.shape[1] for part in parts]
        if start + sum(lengths) > self.prefix_length + self.layout.length:
            raise ValueError(f"the pass would feed positions up to {start + sum(lengths)}, past the sequence's "
                             f"{self.prefix_length + self.layout.length}")
        x = self.embed_inputs(torch.cat(parts, dim=1))
        count = x.shape[1]
        # cached keys: all seen; the finished block sees itself, the block sees the finished one and itself
        unit = torch.repeat_interleave(torch.arange(len(parts), device=x.device),
                                       torch.tensor(lengths, device=x.device))
        mask = torch.cat([torch.ones(count, start, dtype=torch.bool, device=x.device),
                          unit[None, :] <= unit[:, None]], dim=1)
        attendable = base.prefix_attendable(condition)
        if attendable is not None:
            mask = with_key_padding(mask, attendable, count, start + count)
        hidden = base.trunk(x, mask=mask, cache=cache, store=store or finished is not None)
        if finished is not None and not store:
            cache.rewind(start + lengths[0])  # keep the finished block's keys, drop the block's
        return base.logits(hidden[:, count - tokens.shape[1]:])


GENERATORS.add_preset("sdar-raster-tiny",
                      SDARRasterConfig(base={"type": "RasterGenerator",
                                             "config": GENERATORS.preset("raster-tiny").to_dict()}, block_size=4),
                      "SDAR around raster-tiny (16 tokens in blocks of 4; made by SDARRaster.from_base in practice)")
