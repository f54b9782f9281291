"""Decoding policies as pure functions on logits, shared by every sampler.

Shapes: ``...`` any leading dims, v vocabulary. Filters set removed entries to -inf
and never change the kept ones, so they compose in any order; samplers apply them
as LlamaGen does: CFG mix, temperature, top-k, top-p, then a categorical draw with
an explicit ``torch.Generator``.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor


def cfg_mix(cond: Tensor, uncond: Tensor, scale: float) -> Tensor:
    """Classifier-free guidance: uncond + scale·(cond − uncond). Scale 1 returns ``cond``.

    VAR writes the same rule as (1+t)·cond − t·uncond, i.e. scale = 1 + t.
    """
    if scale == 1.0:
        return cond
    return uncond + scale * (cond - uncond)


def constant_cfg(scale: float, step: int, num_steps: int) -> float:
    """The same guidance scale at every step (LlamaGen)."""
    return scale


def linear_cfg(scale: float, step: int, num_steps: int) -> float:
    """Ramps the scale linearly from 1 (no guidance) at the first step to ``scale`` at the last (VAR)."""
    if num_steps <= 1:
        return scale
    return 1.0 + (scale - 1.0) * step / (num_steps - 1)


CFG_SCHEDULES: dict[str, Callable[[float, int, int], float]] = {"constant": constant_cfg, "linear": linear_cfg}


def cfg_scale_at(schedule: str, scale: float, step: int, num_steps: int) -> float:
    """The guidance scale of ``step`` (0-based) out of ``num_steps`` under a named schedule."""
    if schedule not in CFG_SCHEDULES:
        raise ValueError(f"unknown CFG schedule {schedule!r}; choose one of {sorted(CFG_SCHEDULES)}")
    return CFG_SCHEDULES[schedule](scale, step, num_steps)


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
    """Nucleus filter: keeps the smallest set of top tokens whose probability reaches ``p`` (p >= 1 keeps all).

    The most likely token is always kept.
    """
    if p >= 1.0:
        return logits
    if p <= 0.0:
        raise ValueError(f"top_p must be in (0, 1], got {p}")
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    cumulative = sorted_logits.softmax(-1).cumsum(-1)
    remove_sorted = cumulative - sorted_logits.softmax(-1) >= p  # mass before this token already reaches p
    remove = remove_sorted.scatter(-1, order, remove_sorted)
    return logits.masked_fill(remove, float("-inf"))


def filter_logits(logits: Tensor, *, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0) -> Tensor:
    """Temperature, then top-k, then top-p."""
    return top_p_filter(top_k_filter(apply_temperature(logits, temperature), top_k), top_p)


def sample_categorical(logits: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Draws one index per row of (..., v) logits -> (...) long, with an explicit random generator."""
    probs = logits.float().softmax(-1)
    flat = probs.reshape(-1, probs.shape[-1])
    return torch.multinomial(flat, 1, generator=generator).reshape(probs.shape[:-1])
