"""Sampling a distilled generator: one step, two steps, or with the teacher in the middle (DD1).

Shapes: b batch, l tokens, e code dimension.

* One step: ε ~ N(0, I) of shape (b, l, e); one pass at timestep 0; the output codes are assembled
  (:meth:`DistilledGenerator.assemble`: argmax codes before the split, regression vectors after).
* Two steps (DD1's ``t_list`` 0, t): the first pass's output of the first ``boundary(t)`` positions is kept
  (argmax codes before the split, regression vectors from it), every later position is reset to the *same*
  noise ε (not fresh noise), and a second pass runs at t = ``model.second_step``; its first ``boundary(t)``
  positions are the kept ones, as upstream's ``final_predict``.
* Teacher-involved: the first pass's first ``boundary(teacher_start)`` tokens are kept (no first pass
  when ``teacher_start`` is 0), the teacher continues autoregressively with its own sampler up to
  ``second_step``, and a pass there finishes from the original noise.

The result is (b, l, e) float code vectors (continuous after the split), which pipelines decode with
``Tokenizer.decode`` (ids or vectors). No guidance is applied: the guided teacher policy was distilled in.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from arvis.conditions import Condition
from arvis.generators.base import Generator
from arvis.posttrain.distilled_decoding.model import DistilledGenerator, DistilledOutput
from arvis.samplers.base import SAMPLERS, Sampler
from arvis.samplers.logits import RandomSource, normal_noise
from arvis.samplers.settings import SamplerSettings, setting


@dataclasses.dataclass(frozen=True, kw_only=True)
class DistilledSettings(SamplerSettings):
    """Settings of the ``distilled`` sampler. No guidance or filtering: the teacher's policy was distilled in."""

    distilled_steps: int = setting(1, "Distilled Decoding: passes of the distilled generator, 1 or 2")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.distilled_steps not in (1, 2):
            raise ValueError(f"distilled_steps must be 1 or 2, got {self.distilled_steps}")


@SAMPLERS.register
class DistilledSampler(Sampler):
    """Drives a :class:`DistilledGenerator` with ``settings.distilled_steps`` passes (1 or 2)."""

    name = "distilled"
    config_class = DistilledSettings
    description = "Distilled Decoding: one or two passes of a distilled generator from Gaussian noise"

    @torch.inference_mode()
    def __call__(self, model: DistilledGenerator, condition: Condition | Tensor, *, rng: RandomSource = None,
                 noise: Tensor | None = None) -> Tensor:
        """condition (class ids (b,)) -> codes (b, l, e). ``noise`` (b, l, e) replaces drawing it from ``rng``."""
        self.check_drivable(model)
        labels = model.check_condition(condition, allow_null=False).labels
        noise = self._noise(model, labels, rng, noise)
        first = model.assemble(self._first_pass(model, labels, noise))
        if self.settings.distilled_steps == 1:
            return first
        return self._finish(model, labels, noise, first)

    @torch.inference_mode()
    def teacher_involved(self, model: DistilledGenerator, teacher: Generator, teacher_sampler,
                         condition: Condition | Tensor, *,
                         teacher_start: int, rng: RandomSource = None, noise: Tensor | None = None) -> Tensor:
        """condition (class ids (b,)) -> codes (b, l, e): one distilled pass, the teacher (``teacher_sampler``, e.g. the teacher
        pipeline's sampler) from timestep ``teacher_start`` to ``model.second_step``, then one distilled pass from
        there."""
        self.check_drivable(model)
        labels = model.check_condition(condition, allow_null=False).labels
        if teacher.layout != model.layout or teacher.vocab_size != model.vocab_size:
            raise ValueError(f"the teacher's tokens (layout {teacher.layout.shapes}, vocabulary {teacher.vocab_size}) "
                             f"are not the distilled model's ({model.layout.shapes}, {model.vocab_size}); pass the "
                             "teacher it was distilled from")
        second = model.second_step
        if not 0 <= teacher_start <= second:
            raise ValueError(f"teacher_start must lie in [0, second_step={second}], got {teacher_start}")
        noise = self._noise(model, labels, rng, noise)
        prefix = None  # teacher_start 0: the teacher starts from the class alone, no first pass is needed
        if teacher_start:
            prefix = self._first_pass(model, labels, noise).logits.argmax(-1)[:, :model.boundary(teacher_start)]
        tokens = teacher_sampler(teacher, labels, rng=rng, prefix=prefix, length=model.boundary(second))
        codes = torch.zeros_like(noise)
        codes[:, :tokens.shape[1]] = model.code_vectors[tokens].to(noise.dtype)
        return self._finish(model, labels, noise, codes)

    @staticmethod
    def _first_pass(model: DistilledGenerator, labels: Tensor, noise: Tensor) -> DistilledOutput:
        """The pass at timestep 0: every position is fed its noise."""
        return model(*model.timestep_inputs(noise, noise, 0), labels)

    @staticmethod
    def _finish(model: DistilledGenerator, labels: Tensor, noise: Tensor, codes: Tensor) -> Tensor:
        """A pass at ``model.second_step`` with the first ``boundary(second_step)`` positions fixed to ``codes``."""
        inputs, is_data = model.timestep_inputs(noise, codes, model.second_step)
        final = model.assemble(model(inputs, is_data, labels))
        count = model.boundary(model.second_step)
        return torch.cat([codes[:, :count].float(), final[:, count:]], dim=1)

    @staticmethod
    def _noise(model: DistilledGenerator, labels: Tensor, rng: RandomSource, noise: Tensor | None) -> Tensor:
        shape = (labels.shape[0], model.layout.length, model.config.code_dim)
        if noise is None:
            return normal_noise(shape, rng, labels.device)
        if tuple(noise.shape) != shape or not noise.is_floating_point():
            raise ValueError(f"expected float noise of shape {shape}, got {tuple(noise.shape)} {noise.dtype}")
        return noise.to(labels.device)

