"""The post-training interface: a method takes a trained pipeline and gives the shared loop what to train.

A method never edits the pipeline's code or weights in place. Objective methods (VA-π, SAR) return a
loss on a copy of the pipeline's own generator; structural methods (Distilled Decoding, SDAR) build a new
registered generator that wraps a copy of it, chosen by the teacher's class in the method's
:class:`TeacherAdapters`. The entry point (:mod:`arvis.train.posttrain`) runs::

    method = METHODS.get_class(name)(config, pipeline, pipeline_path=..., output_dir=...)
    method.setup(accelerator)                    # once: frozen helpers (LPIPS, the tokenizer) on the device
    data = method.prepare_data(accelerator)      # a Dataset of tensor tuples or dicts (may generate it first)
    model = method.build_model()                 # the nn.Module the loop trains
    # per optimiser step: method.before_step(step), then per micro-batch, in the loop's train mode:
    loss, metrics = method.loss(context, batch)  # context: a TrainingContext (the model, its device, eval mode)
    method.export(trained_model)                 # -> the Pipeline saved as run.output_dir/pipeline
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from accelerate import Accelerator
from torch import Tensor, nn
from torch.utils.data import Dataset

from arvis.config import Config
from arvis.modeling import eval_mode
from arvis.pipeline import Pipeline
from arvis.registry import Registry
from arvis.samplers.settings import SamplerSettings

METHODS: Registry = Registry("post-training method", key="name")


@dataclasses.dataclass(frozen=True)
class TrainingContext:
    """What a method's :meth:`~PostTrainingMethod.loss` sees of the loop.

    Attributes:
        model: the model as the loop trains it (possibly wrapped for distribution): call it for the forward
            pass whose loss is back-propagated.
        unwrapped: the same module unwrapped, for its attributes and methods (its parameters are the model's).
        device: where the batch and the model are.
    """

    model: nn.Module
    unwrapped: nn.Module
    device: torch.device

    @contextlib.contextmanager
    def eval_mode(self) -> Iterator[nn.Module]:
        """Runs the block with the model in eval mode (no dropout, no label dropout) and restores its mode after
        (train mode inside a training step): for no-grad passes inside a step (rollouts, old log-probabilities),
        or a gradient pass that must match them (VA-π's one pass: call ``context.model`` inside the block).
        Yields the unwrapped model."""
        with eval_mode(self.unwrapped):
            yield self.unwrapped


class PostTrainingMethod:
    """Base class of post-training methods; subclasses set ``name`` and ``config_class`` and register in
    :data:`METHODS`."""

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

    def setup(self, accelerator: Accelerator) -> None:
        """Called once before :meth:`prepare_data`, with the run's accelerator: load frozen helpers (LPIPS, a
        reward model) on ``accelerator.device`` here. The default does nothing."""

    def prepare_data(self, accelerator: Accelerator) -> Dataset:
        raise NotImplementedError

    def build_model(self) -> nn.Module:
        raise NotImplementedError

    def before_step(self, step: int) -> None:
        """Called before optimiser step ``step`` (0-based, resumed runs start at their checkpoint's step), e.g. for
        a schedule of the method's own. The default does nothing."""

    def loss(self, context: TrainingContext, batch: Any) -> tuple[Tensor, dict[str, Tensor]]:
        """One micro-batch (on ``context.device``) -> (loss, named scalar metrics); the model is in train mode."""
        raise NotImplementedError

    def export(self, model: nn.Module) -> Pipeline:
        raise NotImplementedError

    def pipeline_around(self, model: nn.Module, settings: SamplerSettings | None = None) -> Pipeline:
        """A pipeline of the input pipeline's tokenizer and text parts around ``model`` (put in eval mode), sampled
        with ``settings`` (default: the input pipeline's own): what most exports return."""
        pipeline = self.pipeline
        return Pipeline(pipeline.tokenizer, model.eval(), pipeline.sampling if settings is None else settings,
                        text_tokenizer=pipeline.text_tokenizer, text_encoder=pipeline.text_encoder)


class MicroBatchStreams:
    """The random streams of a method's own draws (VA-π's rollouts, SAR's sampled predictions): one
    ``torch.Generator`` per (seed, process, step, micro-batch), a function of those alone, so a resumed run draws
    what an uninterrupted one would without saving any state. Call :meth:`start_step` from
    :meth:`PostTrainingMethod.before_step` and :meth:`next` once per micro-batch."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.process_index = 0
        self.step = self.micro_batch = 0

    def start_step(self, step: int) -> None:
        self.step, self.micro_batch = step, 0

    def next(self, device: torch.device) -> torch.Generator:
        """This micro-batch's generator (the next call gives the next micro-batch's)."""
        entropy = [self.seed, self.process_index, self.step, self.micro_batch]
        seed = int(np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))
        self.micro_batch += 1
        return torch.Generator(device).manual_seed(seed)


class TeacherAdapters:
    """A structural method's table from teacher generator classes to the model class that wraps one.

    A teacher class takes the adapter registered for it or, failing that, for its nearest registered base class
    (as ``functools.singledispatch`` does), so a generator built on a supported one is served unless it
    registers an adapter of its own.
    """

    def __init__(self, method: str) -> None:
        self.method = method
        self._adapters: dict[type, type] = {}

    def register(self, teacher_class: type, adapter: type) -> None:
        if teacher_class in self._adapters:
            raise ValueError(f"{self.method} already has an adapter for {teacher_class.__name__}: "
                             f"{self._adapters[teacher_class].__name__}")
        self._adapters[teacher_class] = adapter

    def for_teacher(self, teacher: nn.Module) -> type:
        """The adapter class of ``teacher``'s class; ``ValueError`` naming the supported classes otherwise."""
        for cls in type(teacher).__mro__:
            if cls in self._adapters:
                return self._adapters[cls]
        supported = ", ".join(sorted(cls.__name__ for cls in self._adapters))
        raise ValueError(f"{self.method} adapts generators of the classes {supported} (and their subclasses), "
                         f"not {type(teacher).__name__}")
