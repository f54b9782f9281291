"""The post-training interface: a method takes a trained pipeline and gives the shared loop what to train.

A method never edits the pipeline's code or weights in place. Objective methods (VA-π, SAR) return a
loss on the pipeline's own generator; structural methods (Distilled Decoding, SDAR) build a new
registered generator that wraps a copy of it. The entry point (:mod:`arvis.train.posttrain`) runs::

    method = METHODS.get(name)(config, pipeline, pipeline_path=..., output_dir=...)
    data = method.prepare_data(accelerator)      # a Dataset of tensor tuples (may generate it first)
    model = method.build_model()                 # the nn.Module the loop trains
    loss, metrics = method.loss(model, batch)    # per micro-batch, inside the loop
    method.export(trained_model)                 # -> the Pipeline saved as run.output_dir/pipeline
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from accelerate import Accelerator
from torch import Tensor, nn
from torch.utils.data import Dataset

from arvis.config import Config
from arvis.pipeline import Pipeline


class PostTrainingMethod:
    """Base class of post-training methods; subclasses set ``name`` and ``config_class`` and register."""

    name: ClassVar[str]
    config_class: ClassVar[type[Config]]
    description: ClassVar[str] = ""

    def __init__(self, config: Config, pipeline: Pipeline, *, pipeline_path: str, output_dir: Path) -> None:
        if not isinstance(config, self.config_class):
            raise ValueError(f"{type(self).__name__} expects a {self.config_class.__name__}, got {type(config).__name__}")
        self.config = config
        self.pipeline = pipeline
        self.pipeline_path = pipeline_path
        self.output_dir = Path(output_dir)

    def prepare_data(self, accelerator: Accelerator) -> Dataset:
        raise NotImplementedError

    def build_model(self) -> nn.Module:
        raise NotImplementedError

    def loss(self, model: nn.Module, batch: list[Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        raise NotImplementedError

    def export(self, model: nn.Module) -> Pipeline:
        raise NotImplementedError


class MethodRegistry:
    """Post-training methods by name."""

    def __init__(self) -> None:
        self._methods: dict[str, type[PostTrainingMethod]] = {}

    def register(self, cls: type[PostTrainingMethod]) -> type[PostTrainingMethod]:
        """Class decorator: registers a method under its ``name``."""
        if cls.name in self._methods:
            raise ValueError(f"post-training method {cls.name!r} is registered twice")
        self._methods[cls.name] = cls
        return cls

    def get(self, name: str) -> type[PostTrainingMethod]:
        if name not in self._methods:
            raise ValueError(f"unknown post-training method {name!r}; known: {self.names()}")
        return self._methods[name]

    def names(self) -> list[str]:
        return sorted(self._methods)


METHODS = MethodRegistry()
