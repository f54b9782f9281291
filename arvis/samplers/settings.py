"""Sampler settings: one frozen dataclass per sampler, stored with a pipeline and overridable per call.

A sampler's settings class is its whole public surface: ``arvis.generate(**settings)``, the command-line flags
(:mod:`arvis.samplers.options`) and ``pipeline.json`` are all checked against its fields, so a knob that a
sampler does not read cannot be passed to it. Each field carries a one-line help text (:func:`setting`), from
which the command line is derived. Floats must be finite (:func:`arvis.config.coerce`).
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, Literal

from arvis.config import Config, coerce


def setting(default: Any, help: str) -> Any:  # noqa: A002  (the argparse word)
    """A settings field with its default and the help text of its command-line flag."""
    return dataclasses.field(default=default, metadata={"help": help})


def help_of(field: dataclasses.Field) -> str:
    return field.metadata.get("help", "")


def setting_names(settings_class: type) -> set[str]:
    """The field names of a settings class."""
    return {field.name for field in dataclasses.fields(settings_class)}


def shared_values(settings: SamplerSettings, settings_class: type) -> dict[str, Any]:
    """The values of ``settings`` for the fields ``settings_class`` also has (guidance and filtering carried from
    one sampler's settings to another's)."""
    fields = setting_names(settings_class)
    return {key: value for key, value in settings.to_dict().items() if key in fields}


@dataclasses.dataclass(frozen=True, kw_only=True)
class SamplerSettings(Config):
    """Base of every sampler's settings. Settings built directly (``NextTokenSettings(cfg_scale=2.0)``) are
    checked as settings read from a file are: every value against its field's type, floats finite."""

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for field in dataclasses.fields(self):
            value = coerce(getattr(self, field.name), hints[field.name], f"{type(self).__name__}.{field.name}")
            object.__setattr__(self, field.name, value)  # an int given for a float field is stored as a float


@dataclasses.dataclass(frozen=True, kw_only=True)
class CategoricalSettings(SamplerSettings):
    """Guided, filtered categorical draws: the shared fields of the samplers that draw token ids from logits."""

    temperature: float = setting(1.0, "softmax temperature")
    top_k: int = setting(0, "keep the k most likely tokens (0: all)")
    top_p: float = setting(1.0, "nucleus sampling mass (1: off)")
    cfg_scale: float = setting(1.0, "classifier-free guidance scale: uncond + s·(cond − uncond) (1: off)")
    cfg_schedule: Literal["constant", "linear", "step"] = setting(
        "constant", "guidance schedule over the steps: constant, linear (VAR) or step (ResTok)")
    cfg_start: float = setting(0.25, "step schedule: guide from this fraction of the steps on (ResTok)")
    cfg_interval: int = setting(-1, "LlamaGen's cfg_interval: guide tokens 0..k+1 only (-1: every step)")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0 (use top_k=1 for greedy decoding), got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0 disables it), got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.cfg_scale < 0:
            raise ValueError(f"cfg_scale must be >= 0, got {self.cfg_scale}")
        if not 0.0 <= self.cfg_start <= 1.0:
            raise ValueError(f"cfg_start must be in [0, 1], got {self.cfg_start}")
        if self.cfg_interval < -1:
            raise ValueError(f"cfg_interval must be -1 (guide every step) or >= 0, got {self.cfg_interval}")

    @property
    def guided(self) -> bool:
        """Whether the batch runs doubled with the null condition (any scale but 1)."""
        return self.cfg_scale != 1.0


@dataclasses.dataclass(frozen=True, kw_only=True)
class NextTokenSettings(CategoricalSettings):
    """Settings of the ``next-token`` sampler (LlamaGen's decode loop)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class NextUnitSettings(CategoricalSettings):
    """Settings of the ``next-unit`` sampler (every position of a unit drawn at once: ResTok's levels)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class NextScaleSettings(CategoricalSettings):
    """Settings of the ``next-scale`` sampler (VAR): ``next-unit``'s and VAR's visualisation mode."""

    more_smooth: bool = setting(False, "VAR's Gumbel-softmax visualisation mode: feed soft code mixtures (not for FID)")
