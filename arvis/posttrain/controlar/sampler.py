"""Sampling ControlAR: LlamaGen's next-token loop with the control strength passed to every step.

The ``controlled-next-token`` sampler is the ``next-token`` sampler (guidance doubles the batch with the null
condition, whose control is zero) with one more setting, ``control_strength``, which scales the control
features the generator adds (ControlAR's ``--control-strength``; 1 is how the model was trained, the upstream
README uses 0.6 with its base t2i models). The plain ``next-token`` and ``speculative-jacobi`` samplers also drive
a ControlAR generator, at strength 1.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from arvis.samplers.base import SAMPLERS
from arvis.samplers.next_token import NextTokenSampler
from arvis.samplers.settings import NextTokenSettings, setting


@dataclasses.dataclass(frozen=True, kw_only=True)
class ControlledNextTokenSettings(NextTokenSettings):
    """Settings of the ``controlled-next-token`` sampler: ``next-token``'s and the control strength."""

    control_strength: float = setting(1.0, "ControlAR: scale of the control features (1: as trained, 0: no control)")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.control_strength < 0:
            raise ValueError(f"control_strength must be >= 0, got {self.control_strength}")


@SAMPLERS.register
class ControlledNextTokenSampler(NextTokenSampler):
    """Next-token sampling of a ControlAR generator at ``settings.control_strength``."""

    name = "controlled-next-token"
    config_class = ControlledNextTokenSettings
    description = "next-token sampling of a ControlAR generator, its control scaled by control_strength"

    def step_options(self) -> dict[str, Any]:
        return {"control_strength": self.settings.control_strength}
