"""SAR's pieces apart from the training loop: which scales are rolled out, their targets, and the predictions.

Shapes: b batch, l tokens (all scales), v vocabulary, K scales.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from arvis.generators.base import IGNORE_INDEX
from arvis.samplers.logits import RandomSource, cfg_scale_at, filter_logits, sample_categorical
from arvis.samplers.settings import CategoricalSettings

Rollout = Literal["last", "all"]


def rolled_scales(rollout: Rollout, num_scales: int) -> list[int]:
    """The scales whose input the student pass builds from the previous scale's prediction: ``"last"`` only the
    last (upstream's code: the second-to-last scale rolled onto the last), ``"all"`` every scale after the first
    (the paper's description of stagger-scale rollout)."""
    if num_scales < 2:
        raise ValueError(f"SAR needs at least 2 scales to roll one onto the next, got {num_scales}")
    if rollout == "last":
        return [num_scales - 1]
    if rollout == "all":
        return list(range(1, num_scales))
    raise ValueError(f"unknown rollout {rollout!r}; choose 'last' or 'all'")


def scale_index(scale_lengths: list[int], device: torch.device) -> Tensor:
    """(l,) long: the scale of every token position."""
    return torch.repeat_interleave(torch.arange(len(scale_lengths), device=device),
                                   torch.tensor(scale_lengths, device=device))


def student_targets(predicted: Tensor, scale_lengths: list[int], rolled: list[int]) -> Tensor:
    """predicted (b, l) long -> targets (b, l) long: the teacher-forced predictions at the rolled-out scales,
    ``IGNORE_INDEX`` elsewhere (the student-forcing loss is a mean over the rolled-out tokens)."""
    scales = scale_index(scale_lengths, predicted.device)
    keep = torch.isin(scales, torch.tensor(rolled, device=predicted.device))
    return torch.where(keep, predicted, torch.full_like(predicted, IGNORE_INDEX))


def sampled_predictions(logits: Tensor, null_logits: Tensor | None, settings: CategoricalSettings,
                        scale_lengths: list[int], rng: RandomSource) -> Tensor:
    """Teacher-forced logits (b, l, v) (and the null condition's, for guidance) -> drawn ids (b, l) long: each
    scale k guided with its scale under ``settings.cfg_schedule`` over the K scales, then filtered (temperature,
    top-k, top-p) and drawn from ``rng`` (upstream's ``sf_use_sampling``)."""
    if settings.guided:
        if null_logits is None:
            raise ValueError("guided predictions need the null condition's logits")
        count = len(scale_lengths)
        scales = torch.tensor([cfg_scale_at(settings.cfg_schedule, settings.cfg_scale, k, count, settings.cfg_start,
                                            settings.cfg_interval) for k in range(count)], device=logits.device)
        per_token = scales[scale_index(scale_lengths, logits.device)][None, :, None]
        logits = null_logits.float() + per_token * (logits.float() - null_logits.float())  # cfg_mix, per scale
    filtered = filter_logits(logits, temperature=settings.temperature, top_k=settings.top_k, top_p=settings.top_p)
    return sample_categorical(filtered, rng)
