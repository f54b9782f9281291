"""Blockwise masked-diffusion decoding (SDAR): blocks left to right, several tokens committed per pass inside one.

Shapes: b batch, l tokens, B block size, v vocabulary.

For a generator of blocks (``block_size`` B, ``mask_id``, and ``step(block, condition, cache, finished=...)``
returning every fed position's logits, :class:`arvis.posttrain.sdar.model.SDARRaster`), each block starts all
[MASK] and takes at most S = ``denoising_steps`` passes:

1. the block is fed against the cache without being stored (the block before it, complete, goes in with its first
   pass and is stored then, so a block costs only its passes);
2. with guidance the logits of [conditional; null] are mixed at every pass, each position with the scale its token
   index gets under the schedule; a token is drawn at every masked
   position (temperature, top-k, top-p), its confidence the probability it was drawn with;
3. some masked positions are committed (never re-masked), n_s = B / S of them at pass s (the remainder going to the
   first passes): ``low_confidence_static`` the n_s most confident, ``sequential`` the n_s leftmost,
   ``low_confidence_dynamic`` every one above ``confidence_threshold`` θ or, if fewer than n_s are, the n_s most
   confident (upstream's default, θ 0.85 in its ``generate.py``).

Rows are decoded together; a row whose block is complete rides along without drawing, so with one generator per
sample a row's tokens do not depend on the rest of the batch.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Literal

import torch
from torch import Tensor

from arvis.conditions import Condition
from arvis.samplers.base import SAMPLERS, Sampler
from arvis.samplers.guidance import feed_both, guidance_conditions, guide
from arvis.samplers.logits import RandomSource, cfg_scale_at, filter_logits, sample_categorical
from arvis.samplers.settings import CategoricalSettings, setting

CommitStrategy = Literal["low_confidence_dynamic", "low_confidence_static", "sequential"]
STRATEGIES = typing.get_args(CommitStrategy)


@dataclasses.dataclass(frozen=True, kw_only=True)
class BlockwiseSettings(CategoricalSettings):
    """Settings of the ``blockwise`` sampler (SDAR)."""

    denoising_steps: int = setting(4, "SDAR: passes per block at most (S, 1..block size)")
    commit_strategy: CommitStrategy = setting("low_confidence_dynamic", "SDAR: which masked positions a pass commits")
    confidence_threshold: float = setting(0.85, "SDAR dynamic commits: every position drawn above this probability")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.denoising_steps < 1:
            raise ValueError(f"denoising_steps must be >= 1, got {self.denoising_steps}")
        if not 0.0 <= self.confidence_threshold <= 1.0:
            raise ValueError(f"confidence_threshold must lie in [0, 1], got {self.confidence_threshold}")


def commit_counts(block_size: int, steps: int) -> list[int]:
    """n_s per pass: B / S, the remainder going to the first passes (B 5, S 2: [3, 2])."""
    return [block_size // steps + (1 if index < block_size % steps else 0) for index in range(steps)]


def positions_to_commit(confidence: Tensor, masked: Tensor, count: int, strategy: str, threshold: float) -> Tensor:
    """confidence (b, B) float, masked (b, B) bool -> (b, B) bool: the masked positions this pass commits (at most
    the masked ones; ``count`` = n_s)."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown commit strategy {strategy!r}; choose one of {list(STRATEGIES)}")
    if strategy == "sequential":
        order = torch.arange(masked.shape[1], device=masked.device).expand_as(masked).float()
        score = torch.where(masked, -order, torch.full_like(order, -float("inf")))
    else:
        score = torch.where(masked, confidence.float(), torch.full_like(confidence, -float("inf"), dtype=torch.float))
    ranks = score.argsort(dim=1, descending=True).argsort(dim=1)
    chosen = (ranks < count) & masked
    if strategy == "low_confidence_dynamic":
        chosen |= masked & (confidence > threshold)
    return chosen


def guide_block(logits: Tensor, settings: CategoricalSettings, start: int, length: int) -> Tensor:
    """(2b, n, v) logits of [conditional; null] for tokens start..start+n−1 -> (b, n, v), each position guided at
    its own token index (the schedules run over the l tokens); one mix when the scale is the same for all."""
    if not settings.guided:
        return logits
    scales = {cfg_scale_at(settings.cfg_schedule, settings.cfg_scale, start + j, length, settings.cfg_start,
                           settings.cfg_interval) for j in range(logits.shape[1])}
    if len(scales) == 1:
        return guide(logits, settings, start, length)
    return torch.cat([guide(logits[:, j:j + 1], settings, start + j, length) for j in range(logits.shape[1])], dim=1)


@SAMPLERS.register
class BlockwiseSampler(Sampler):
    """Decodes a block generator block by block, committing several tokens per pass (see the module docstring)."""

    name = "blockwise"
    config_class = BlockwiseSettings
    description = "SDAR's blockwise masked-diffusion decoding: several tokens per pass within each block"

    @torch.inference_mode()
    def __call__(self, model, condition: Condition | Tensor, *, rng: RandomSource = None) -> Tensor:
        """condition of b samples -> tokens (b, l) long; ``rng``: one generator, or one per sample."""
        self.check_drivable(model)
        condition = model.check_condition(condition)
        settings = self.settings
        block, length = model.block_size, model.layout.length
        if settings.denoising_steps > block:
            raise ValueError(f"denoising_steps ({settings.denoising_steps}) must be at most the block size ({block})")
        batch = condition.batch_size
        per_sample = isinstance(rng, (list, tuple))
        if per_sample and len(rng) != batch:
            raise ValueError(f"got {len(rng)} per-sample generators for a batch of {batch}")
        conditions = guidance_conditions(condition, model, settings)
        cache = model.new_cache(conditions.batch_size)
        model.step(None, conditions, cache)
        tokens = torch.full((batch, length), model.mask_id, dtype=torch.long, device=condition.device)
        counts = commit_counts(block, settings.denoising_steps)
        for start in range(0, length, block):
            finished = feed_both(tokens[:, start - block:start], settings) if start else None
            current = tokens[:, start:start + block]
            for count in counts:
                masked = current == model.mask_id
                if not masked.any():
                    break
                logits = model.step(feed_both(current, settings), conditions, cache, finished=finished)
                finished = None
                logits = guide_block(logits, settings, start, length)
                logits = filter_logits(logits, temperature=settings.temperature, top_k=settings.top_k,
                                       top_p=settings.top_p)
                active = masked.any(1).nonzero()[:, 0].tolist()
                drawn = current.clone()
                generators = [rng[row] for row in active] if per_sample else rng
                drawn[active] = sample_categorical(logits[active], generators)
                confidence = logits.float().softmax(-1).gather(-1, drawn.clamp(max=model.vocab_size - 1)[..., None])
                chosen = positions_to_commit(confidence[..., 0], masked, count, settings.commit_strategy,
                                             settings.confidence_threshold)
                current = torch.where(chosen, drawn, current)
            tokens[:, start:start + block] = current
        return model.to_layout_order(tokens)
