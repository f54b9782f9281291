"""The ``sar`` post-training method: self-autoregressive refinement of a next-scale (VAR) generator.

Zhou et al., "SAR: Self-Autoregressive Refinement for scale-wise autoregressive models", 2025,
https://arxiv.org/abs/2512.06421 (upstream GengzeZhou/SAR on FlexVAR; notes in
``shared/reference/posttraining.md`` §2).

``accelerate launch -m arvis.train.posttrain --method sar --pipeline DIR [key=value ...]``

Per batch (b rows, l tokens over K scales):

1. **Teacher forcing:** the generator's own loss over every scale (:meth:`VARGenerator.forward` on the
   ground-truth ids, its label smoothing included), L_TF.
2. **Predictions** ŷ, without gradient: the argmax of the teacher-forced logits at every scale (upstream's
   default), or a draw from them (``predictions="sampled"``: guided, filtered, from this micro-batch's stream).
3. **Stagger-scale rollout, one extra pass:** the inputs of the rolled-out scales are rebuilt from ŷ of the
   scale before (:meth:`VARGenerator.student_forcing_inputs`: f_hat of the ground truth before it plus ŷ), the
   others stay the ground truth's. L_SF is the cross-entropy of that pass toward ŷ at the rolled-out scales
   (the "contrastive student-forcing loss": the target is the teacher-forced prediction, not the ground truth),
   with the generator's label smoothing (0 by default, upstream's).
4. L = L_TF + σ·L_SF (σ 0.01). Labels are dropped once per row (:meth:`VARGenerator.drop_condition`) and both
   passes see the same ones.

Deviations from upstream, each forced by arvis's VAR or chosen: residual f_hat inputs (VAR) instead of FlexVAR's
upsampled tokens; fixed scales instead of random FlexVAR schedules; the student pass keeps the full context
(every earlier scale) instead of the class token plus one map; label dropout drawn once for both passes
(upstream draws it in each).

Export: the same tokenizer and sampler settings around the refined generator.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from typing import Literal

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from torch import Tensor

from arvis.config import Config
from arvis.generators.base import IGNORE_INDEX
from arvis.generators.var import VARGenerator
from arvis.pipeline import Pipeline
from arvis.posttrain.base import METHODS, MicroBatchStreams, PostTrainingMethod, TrainingContext
from arvis.posttrain.sar.objective import Rollout, rolled_scales, sampled_predictions, student_targets
from arvis.posttrain.tokens import encoded_training_data
from arvis.samplers.settings import CategoricalSettings
from arvis.train.loop import check_image_size
from arvis.train.options import DataConfig
from arvis.train.tokens import ConditionedTokens

# upstream's sf_use_sampling draw: top-k 900, top-p 0.96, guidance t ramping over the scales to 2.5 (scale 1 + t)
UPSTREAM_SAMPLING = CategoricalSettings(top_k=900, top_p=0.96, cfg_scale=3.5, cfg_schedule="linear")


@dataclasses.dataclass(frozen=True, kw_only=True)
class SARConfig(Config):
    """Settings of the ``sar`` method (defaults: upstream's, but for the guidance ramp of sampled predictions).

    Attributes:
        sigma: σ, the weight of the student-forcing loss (0.01; 0 trains on teacher forcing alone, the control
            branch with the same passes).
        rollout: ``"last"`` rolls the second-to-last scale onto the last (upstream's code), ``"all"`` every scale
            onto the next (the paper's description).
        predictions: ``"argmax"`` of the teacher-forced logits (upstream's default) or ``"sampled"`` from them.
        sampling: how sampled predictions are drawn (top-k 900, top-p 0.96, guidance up to 3.5 by the linear
            schedule). Upstream ramps its t from 0.5·s to s; arvis's linear schedule ramps the scale from 1.
        sample_seed: seed of the sampled predictions (one stream per process, step and micro-batch).
        data: the training images (their size must be the tokenizer's).
        encode_batch_size: images encoded at once.
    """

    sigma: float = 0.01
    rollout: Rollout = "last"
    predictions: Literal["argmax", "sampled"] = "argmax"
    sampling: CategoricalSettings = UPSTREAM_SAMPLING
    sample_seed: int = 0
    data: DataConfig = DataConfig()
    encode_batch_size: int = 256

    def __post_init__(self) -> None:
        if not isinstance(self.sigma, (int, float)) or not math.isfinite(self.sigma) or self.sigma < 0:
            raise ValueError(f"sigma must be a finite number >= 0 (upstream 0.01), got {self.sigma!r}")
        if self.rollout not in ("last", "all"):
            raise ValueError(f"rollout must be 'last' or 'all', got {self.rollout!r}")
        if self.predictions not in ("argmax", "sampled"):
            raise ValueError(f"predictions must be 'argmax' or 'sampled', got {self.predictions!r}")
        if self.sample_seed < 0 or self.encode_batch_size < 1:
            raise ValueError(f"sample_seed must be >= 0 and encode_batch_size >= 1, got {self.sample_seed}, "
                             f"{self.encode_batch_size}")
        if self.data.is_video:
            raise ValueError(f"SAR trains on images; data.name {self.data.name!r} gives clips")


@METHODS.register
class SAR(PostTrainingMethod):
    """SAR: teacher forcing plus a student-forcing loss on a stagger-scale rollout, for VAR generators."""

    name = "sar"
    config_class = SARConfig
    description = "SAR: refine a next-scale generator on its own predictions (stagger-scale rollout)"

    def __init__(self, config: SARConfig, pipeline: Pipeline, **kwargs) -> None:
        super().__init__(config, pipeline, **kwargs)
        if not isinstance(pipeline.generator, VARGenerator):
            raise ValueError(f"sar refines next-scale generators (VARGenerator), not "
                             f"{type(pipeline.generator).__name__}")
        check_image_size(pipeline.tokenizer, config.data)
        self.scale_lengths = pipeline.generator.unit_lengths()
        self.rolled = rolled_scales(config.rollout, len(self.scale_lengths))
        self.streams = MicroBatchStreams(config.sample_seed)

    def setup(self, accelerator: Accelerator) -> None:
        self.streams.process_index = accelerator.process_index

    def prepare_data(self, accelerator: Accelerator) -> ConditionedTokens:
        return encoded_training_data(self.pipeline, self.config.data, self.config.encode_batch_size,
                                     accelerator.device)

    def build_model(self) -> VARGenerator:
        """A copy of the pipeline's generator (its quantizer stays frozen)."""
        return copy.deepcopy(self.pipeline.generator)

    def before_step(self, step: int) -> None:
        self.streams.start_step(step)

    def loss(self, context: TrainingContext, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        """batch: tokens (b, l), condition fields -> (L_TF + σ·L_SF, metrics)."""
        tokens, condition = ConditionedTokens.split(batch)
        generator: VARGenerator = context.unwrapped
        condition = generator.drop_condition(condition)  # once: both passes see the same labels
        teacher = context.model(tokens, condition, condition_dropout=False)
        predicted = self.predictions(context, tokens, teacher.logits.detach())
        student_inputs = generator.student_forcing_inputs(tokens, predicted, self.rolled)
        targets = student_targets(predicted, self.scale_lengths, self.rolled)
        student = context.model(student_inputs, condition, targets, condition_dropout=False)
        loss = teacher.loss + self.config.sigma * student.loss
        rolled = targets != IGNORE_INDEX
        with torch.no_grad():  # the rolled-out scales against the ground truth: the exposure-bias gap
            student_truth = F.cross_entropy(student.logits[rolled].float(), tokens[rolled])
            teacher_truth = F.cross_entropy(teacher.logits[rolled].float(), tokens[rolled])
        return loss, {"teacher_forcing": teacher.loss.detach(), "student_forcing": student.loss.detach(),
                      "accuracy": teacher.metrics["accuracy"], "student_agreement": student.metrics["accuracy"],
                      "teacher_truth_ce": teacher_truth, "student_truth_ce": student_truth}

    def predictions(self, context: TrainingContext, tokens: Tensor, logits: Tensor) -> Tensor:
        """ŷ (b, l) long from the teacher-forced logits (b, l, v), without gradient."""
        config = self.config
        if config.predictions == "argmax":
            return logits.argmax(-1)
        null_logits = None
        if config.sampling.guided:  # a pass of its own, in train mode like the others (dropout, drop path)
            generator: VARGenerator = context.unwrapped
            with torch.no_grad():
                null = generator.null_condition(tokens.shape[0], tokens.device)
                null_logits = context.model(tokens, null, condition_dropout=False).logits
        return sampled_predictions(logits, null_logits, config.sampling, self.scale_lengths,
                                   self.streams.next(context.device))

    def export(self, model: VARGenerator) -> Pipeline:
        return self.pipeline_around(model)
