"""Sampling settings, stored with a pipeline and overridable per call."""

from __future__ import annotations

import dataclasses
from typing import Literal

from arvis.config import Config


@dataclasses.dataclass(frozen=True, kw_only=True)
class SamplingConfig(Config):
    """Decoding policy of a sampler (every sampler reads the fields that apply to it)."""

    temperature: float = 1.0
    top_k: int = 0  # 0 keeps the whole vocabulary
    top_p: float = 1.0  # 1.0 disables nucleus filtering
    cfg_scale: float = 1.0  # uncond + cfg_scale·(cond − uncond); 1.0 runs the conditional model only
    cfg_schedule: Literal["constant", "linear", "step"] = "constant"
    cfg_start: float = 0.25  # "step" schedule only: guidance from this fraction of the steps on (ResTok)
    cfg_interval: int = -1  # LlamaGen's cfg_interval: k >= 0 guides tokens 0..k+1 only, then conditional logits
    more_smooth: bool = False  # next-scale sampling only: VAR's Gumbel-softmax visualisation mode (not for FID)
    distilled_steps: int = 1  # Distilled Decoding pipelines only: 1 or 2 passes of the distilled generator

    def __post_init__(self) -> None:
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0 (use top_k=1 for greedy decoding), got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0 disables it), got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.cfg_scale < 0:
            raise ValueError(f"cfg_scale must be >= 0, got {self.cfg_scale}")
        if self.distilled_steps not in (1, 2):
            raise ValueError(f"distilled_steps must be 1 or 2, got {self.distilled_steps}")
        if not 0.0 <= self.cfg_start <= 1.0:
            raise ValueError(f"cfg_start must be in [0, 1], got {self.cfg_start}")
        if self.cfg_interval < -1:
            raise ValueError(f"cfg_interval must be -1 (guide every step) or >= 0, got {self.cfg_interval}")


def check_drivable(model, units: frozenset[str]) -> None:
    """Raises ``ValueError`` unless a sampler for ``units`` can drive ``model`` now (right unit, eval mode)."""
    if model.unit not in units:
        raise ValueError(f"this sampler drives generators with unit {sorted(units)}, not {model.unit!r}")
    if model.training:
        raise ValueError(
            f"{type(model).__name__} is in training mode (dropout and label dropout are active); call model.eval() "
            "before sampling"
        )
