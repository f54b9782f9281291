"""Decoding policies as pure functions on logits, shared by every sampler.

Shapes: b batch, ``...`` any further dims, v vocabulary. Filters set removed
entries to -inf and never change the kept ones; samplers apply them as LlamaGen
does: CFG mix, temperature, top-k, top-p, then a categorical draw.

Randomness is explicit. ``rng`` is either one ``torch.Generator`` for the whole
batch, or a sequence of generators, one per sample (row of the batch), so that a
sample's draws do not depend on which other samples share its batch.
"""

from __future__ import annotations

from typing import Callable, Sequence, Union

import numpy as np
import torch
from torch import Tensor

RandomSource = Union[torch.Generator, Sequence[torch.Generator], None]
# A sampler's draw: (b, n, v) filtered logits of positions [start, start + n) and ``start`` -> (b, n) long ids.
Draw = Callable[[Tensor, int], Tensor]


def cfg_mix(cond: Tensor, uncond: Tensor, scale: float) -> Tensor:
    """Classifier-free guidance: uncond + scale·(cond − uncond). Scale 1 returns ``cond``.

    VAR writes the same rule as (1+t)·cond − t·uncond, i.e. scale = 1 + t.
    """
    if scale == 1.0:
        return cond
    return uncond + scale * (cond - uncond)


def constant_cfg(scale: float, step: int, num_steps: int, start: float) -> float:
    """The same guidance scale at every step (LlamaGen)."""
    return scale


def linear_cfg(scale: float, step: int, num_steps: int, start: float) -> float:
    """Ramps the scale linearly from 1 (no guidance) at the first step to ``scale`` at the last (VAR)."""
    if num_steps <= 1:
        return scale
    return 1.0 + (scale - 1.0) * step / (num_steps - 1)


def step_cfg(scale: float, step: int, num_steps: int, start: float) -> float:
    """No guidance before the fraction ``start`` of the steps, ``scale`` from there on (ResTok's "step" schedule).

    The fraction of step s is s / (num_steps - 1), as upstream's ``step_schedule`` with ``num_steps``:
    for 9 HAR steps and start 0.25, steps 0 and 1 run unguided. (Upstream's 1 + 1e-4 for "unguided"
    is exactly 1 here.)
    """
    if num_steps <= 1:
        return scale
    return scale if step / (num_steps - 1) >= start else 1.0


CFG_SCHEDULES: dict[str, Callable[[float, int, int, float], float]] = {
    "constant": constant_cfg, "linear": linear_cfg, "step": step_cfg}


def cfg_scale_at(schedule: str, scale: float, step: int, num_steps: int, start: float = 0.25,
                 interval: int = -1) -> float:
    """The guidance scale of ``step`` (0-based) out of ``num_steps`` under a named schedule
    (``start`` is read by the "step" schedule only).

    ``interval`` is LlamaGen's ``cfg_interval``: with k >= 0, steps after k + 1 use the conditional logits
    alone (scale 1; upstream's decode loop counts from the second token, so tokens 0 .. k + 1 are guided);
    -1 guides every step.
    """
    if schedule not in CFG_SCHEDULES:
        raise ValueError(f"unknown CFG schedule {schedule!r}; choose one of {sorted(CFG_SCHEDULES)}")
    if interval >= 0 and step > interval + 1:
        return 1.0
    return CFG_SCHEDULES[schedule](scale, step, num_steps, start)


def apply_temperature(logits: Tensor, temperature: float) -> Tensor:
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0 (use top_k=1 for greedy decoding), got {temperature}")
    return logits if temperature == 1.0 else logits / temperature


def top_k_filter(logits: Tensor, k: int) -> Tensor:
    """Keeps the ``k`` largest logits of the last dim (k <= 0 or k >= v keeps all)."""
    if k <= 0 or k >= logits.shape[-1]:
        return logits
    threshold = torch.topk(logits, k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < threshold, float("-inf"))


def top_p_filter(logits: Tensor, p: float) -> Tensor:
    """Nucleus filter: keeps the top tokens until their probability mass exceeds ``p`` (p >= 1 keeps all).

    As LlamaGen's filter, a token is removed when the mass of the more likely tokens is
    strictly greater than ``p``; the most likely token is always kept.
    """
    if p >= 1.0:
        return logits
    if p <= 0.0:
        raise ValueError(f"top_p must be in (0, 1], got {p}")
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    sorted_probs = sorted_logits.softmax(-1)
    mass_before = sorted_probs.cumsum(-1) - sorted_probs
    remove_sorted = mass_before > p  # LlamaGen: drop tokens once the mass before them exceeds p
    remove = remove_sorted.scatter(-1, order, remove_sorted)
    return logits.masked_fill(remove, float("-inf"))


def filter_logits(logits: Tensor, *, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0) -> Tensor:
    """Temperature, then top-k, then top-p."""
    return top_p_filter(top_k_filter(apply_temperature(logits, temperature), top_k), top_p)


def sample_seeds(seed: int, start: int, count: int) -> list[int]:
    """Independent 64-bit seeds of samples ``start .. start + count - 1`` of a run seeded ``seed``."""
    return [int(np.random.SeedSequence([seed, index]).generate_state(1, dtype=np.uint64)[0])
            for index in range(start, start + count)]


def per_sample_generators(seed: int, start: int, count: int, device: torch.device | str = "cpu") -> list[torch.Generator]:
    """One ``torch.Generator`` per sample, seeded by (run seed, sample index)."""
    return [torch.Generator(device=device).manual_seed(s) for s in sample_seeds(seed, start, count)]


def uniform_noise(shape: tuple[int, ...], rng: RandomSource, device: torch.device | str) -> Tensor:
    """Uniform [0, 1) noise of ``shape`` (b, ...); with per-sample generators, row i comes from ``rng[i]``."""
    return _noise(torch.rand, shape, rng, device)


def normal_noise(shape: tuple[int, ...], rng: RandomSource, device: torch.device | str) -> Tensor:
    """Standard normal noise of ``shape`` (b, ...); with per-sample generators, row i comes from ``rng[i]``."""
    return _noise(torch.randn, shape, rng, device)


def _noise(draw: Callable[..., Tensor], shape: tuple[int, ...], rng: RandomSource, device: torch.device | str) -> Tensor:
    if rng is None or isinstance(rng, torch.Generator):
        return draw(shape, generator=rng, device=device)
    if len(rng) != shape[0]:
        raise ValueError(f"got {len(rng)} per-sample generators for a batch of {shape[0]}")
    return torch.stack([draw(shape[1:], generator=g, device=g.device) for g in rng]).to(device)


def sample_categorical(logits: Tensor, rng: RandomSource = None) -> Tensor:
    """Draws one index per row of (b, ..., v) logits -> (b, ...) long, by inverse-CDF sampling.

    Only tokens with non-zero probability can be drawn (a draw lands strictly inside a
    token's share of the cumulative distribution).
    """
    probs = logits.float().softmax(-1)
    cumulative = probs.cumsum(-1)
    noise = uniform_noise(tuple(probs.shape[:-1]), rng, probs.device)
    threshold = noise.unsqueeze(-1) * cumulative[..., -1:]
    return torch.searchsorted(cumulative, threshold, right=True).squeeze(-1).clamp_max(probs.shape[-1] - 1)


def categorical_draw(rng: RandomSource = None) -> Draw:
    """The default draw of every sampler: independent categorical samples from ``rng``."""
    return lambda logits, start: sample_categorical(logits, rng)


def check_prefix(prefix: Tensor | None, boundaries: Sequence[int], length: int | None, condition,
                 vocab_size: int) -> tuple[int, int]:
    """Checks a sampler's ``prefix`` (b, k) and ``length`` against the unit ``boundaries`` (cumulative token
    counts, 0 first) for the batch of ``condition`` (an :class:`arvis.conditions.Condition`) -> (k, length)."""
    total = boundaries[-1]
    if prefix is not None:
        if prefix.ndim != 2 or prefix.shape[0] != condition.batch_size or prefix.dtype != torch.long:
            raise ValueError(f"prefix must be (batch, k) long token ids for a batch of {condition.batch_size}, got "
                             f"{tuple(prefix.shape)} {prefix.dtype}")
        if prefix.device != condition.device:
            raise ValueError(f"prefix is on {prefix.device} but the condition is on {condition.device}")
        if prefix.numel() and (prefix.min() < 0 or prefix.max() >= vocab_size):
            raise ValueError(f"prefix token ids must lie in [0, {vocab_size - 1}]")
    given = 0 if prefix is None else prefix.shape[1]
    length = total if length is None else length
    if given not in boundaries or length not in boundaries or not given <= length:
        shown = list(boundaries) if len(boundaries) <= 12 else f"every token count from 0 to {total}"
        raise ValueError(f"prefix length {given} and length {length} must be unit boundaries ({shown}) with "
                         "prefix length <= length")
    return given, length
