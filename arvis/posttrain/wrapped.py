"""The base of generators that wrap a copy of a trained raster generator (ControlAR, SDAR).

A wrapper's config names its base as ``{"type", "config"}`` (:func:`arvis.generators.base.wrapped_spec`); the
wrapper builds it (``self.base``), copies its weights in :meth:`RasterWrapper.wrap`, and drives it only through
its public seam. Everything the wrapper does not change is the base's: layout, vocabulary, classes, condition
fields and prefix, null condition, condition checks, the tokenizer binding and compiled decoding.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from arvis.conditions import Condition
from arvis.generators.base import Generator, build_wrapped, wrapped_spec
from arvis.generators.raster import RasterGenerator
from arvis.tokenizers.base import TokenLayout


class RasterWrapper(Generator):
    """Base class (not registered); subclasses set ``config_class`` (with a ``base`` field) and their passes."""

    base_class = RasterGenerator

    def __init__(self, config) -> None:
        super().__init__(config)
        self.base = build_wrapped(config.base, self.base_class, type(self).__name__, "base")

    @classmethod
    def wrap(cls, base: RasterGenerator, **fields: Any):
        """A wrapper around a copy of ``base`` (its weights copied, on its device); ``fields`` are the wrapper's
        own config fields."""
        if not isinstance(base, cls.base_class):
            raise ValueError(f"{cls.__name__} wraps a {cls.base_class.__name__}, got {type(base).__name__}")
        model = cls(cls.config_class(base=wrapped_spec(base), **fields)).to(next(base.parameters()).device)
        model.base.load_state_dict(base.state_dict())
        return model

    @classmethod
    def fit_config(cls, config, *, tokenizer, num_classes: int):
        raise ValueError(f"{cls.__name__} is made from a trained raster generator ({cls.__name__}.from_base, or "
                         "its post-training method), not trained from a preset")

    @property
    def layout(self) -> TokenLayout:
        return self.base.layout

    @property
    def vocab_size(self) -> int:
        return self.base.vocab_size

    @property
    def num_classes(self) -> int:
        return self.base.num_classes

    @property
    def condition_fields(self) -> frozenset[str]:
        return self.base.condition_fields

    @property
    def prefix_length(self) -> int:
        return self.base.prefix_length

    @property
    def prompt_length(self) -> int:
        return self.base.prompt_length

    def null_condition(self, batch_size: int, device: torch.device | str | None = None) -> Condition:
        return self.base.null_condition(batch_size, device)

    def check_labels(self, labels: Tensor, *, allow_null: bool = False) -> None:
        self.base.check_labels(labels, allow_null=allow_null)

    def check_prompt(self, prompt: Tensor, mask: Tensor) -> None:
        self.base.check_prompt(prompt, mask)

    def bind_tokenizer(self, tokenizer) -> None:
        self.base.bind_tokenizer(tokenizer)

    def check_tokenizer(self, tokenizer) -> None:
        self.base.check_tokenizer(tokenizer)

    def compile_decoding(self, **options):
        self.base.compile_decoding(**options)
        return self
