"""The ``distilled_decoding`` post-training method: teacher pairs -> a distilled one/two-step generator.

``accelerate launch -m arvis.train.posttrain --method distilled_decoding --pipeline DIR [key=value ...]``

1. Pairs: the teacher pipeline is sampled through the flow-matching draw (:mod:`.pairs`), sharded over
   processes and resumable (``method_config.pairs_dir``, default ``run.output_dir/pairs``).
2. Training: a :class:`DistilledRaster` or :class:`DistilledVAR` initialised from the teacher. Every batch
   is seen at every training timestep (default {0, split}, DD1's Fig. 6): at timestep t the first
   ``boundary(t)`` positions are fed the pair's code vectors and the rest its noise; over the noise
   positions of all timesteps the loss is the mean cross-entropy of the logits against the teacher's tokens plus
   ``regression_weight`` times the squared error of the regression head against their code vectors
   (summed over e). DD1 never released its training code; this loss is the one its two heads imply
   (``shared/reference/posttraining.md`` marks it unverified).
3. Export: a pipeline of the teacher's tokenizer and the distilled generator, sampled by the ``distilled``
   sampler in one step by default (``distilled_steps``); the teacher policy the pairs were made with is recorded
   in the pairs' manifest (``pairs.json``).
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from torch import Tensor

from arvis.config import Config
from arvis.generators.base import Generator
from arvis.generators.raster import RasterGenerator
from arvis.generators.var import VARGenerator
from arvis.pipeline import Pipeline
from arvis.posttrain.base import METHODS, PostTrainingMethod, TeacherAdapters, TrainingContext
from arvis.posttrain.distilled_decoding.model import DistilledGenerator
from arvis.posttrain.distilled_decoding.pairs import generate_pairs, load_pairs
from arvis.posttrain.distilled_decoding.raster import DistilledRaster
from arvis.posttrain.distilled_decoding.sampler import DistilledSettings
from arvis.posttrain.distilled_decoding.var import DistilledVAR

ADAPTERS = TeacherAdapters("distilled_decoding")
ADAPTERS.register(RasterGenerator, DistilledRaster)
ADAPTERS.register(VARGenerator, DistilledVAR)


@dataclasses.dataclass(frozen=True, kw_only=True)
class DistilledDecodingConfig(Config):
    """Settings of the ``distilled_decoding`` method.

    Attributes:
        split: timestep (raster: tokens, VAR: scales) of the switch from argmax codes to regression vectors
            (DD1's ``split_t``); None takes 5/16 of the tokens (DD1's 80 of 256 for LlamaGen) or half the scales
            (5 of 10 for VAR-d16).
        second_step: timestep of the second sampling step (DD1's ``t_list`` 0, t); None: ``split``. LlamaGen-L's
            published setting is split 130, second_step 80.
        timesteps: training timesteps; None is (0, second_step).
        regression_weight: weight of the regression head's squared error.
        pairs_dir: where the pairs go (None: ``run.output_dir/pairs``).
        num_pairs, shard_size, pair_seed, ode_steps, pair_batch_size: the pair generation (:mod:`.pairs`).
    """

    split: int | None = None
    second_step: int | None = None
    timesteps: tuple[int, ...] | None = None
    regression_weight: float = 1.0
    pairs_dir: str | None = None
    num_pairs: int = 20000
    shard_size: int = 1000
    pair_seed: int = 0
    ode_steps: int = 128
    pair_batch_size: int = 256

    def __post_init__(self) -> None:
        if self.regression_weight < 0:
            raise ValueError(f"regression_weight must be >= 0, got {self.regression_weight}")
        if self.timesteps is not None and (not self.timesteps or len(set(self.timesteps)) != len(self.timesteps)):
            raise ValueError(f"timesteps must name distinct timesteps (or be null for (0, split)), got {self.timesteps}")
        for name in ("num_pairs", "shard_size", "ode_steps", "pair_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


@METHODS.register
class DistilledDecoding(PostTrainingMethod):
    """DD1: distil a raster or VAR teacher into a generator that samples in one or two passes."""

    name = "distilled_decoding"
    config_class = DistilledDecodingConfig
    description = "Distilled Decoding (DD1): one- and two-step sampling of raster and VAR generators"

    def __init__(self, config: DistilledDecodingConfig, pipeline: Pipeline, **kwargs) -> None:
        super().__init__(config, pipeline, **kwargs)
        teacher = pipeline.generator
        self.model_class = ADAPTERS.for_teacher(teacher)
        if type(teacher).to_layout_order is not Generator.to_layout_order:
            raise ValueError(f"{type(teacher).__name__} emits its tokens in an order of its own, which the pairs' "
                             "noise (one row per emitted position) and the distilled model do not follow")
        pipeline.tokenizer.code_vectors()  # a codebook tokenizer, or a clear error now
        units = self.model_class.units_of(teacher)
        what = self.model_class.timestep_name
        if units < 2:
            raise ValueError(f"distilled_decoding needs a teacher with at least 2 {what}, got {units}")
        self.split = config.split if config.split is not None else self.model_class.default_split(units)
        self.second_step = config.second_step if config.second_step is not None else self.split
        for name, value in (("split", self.split), ("second_step", self.second_step)):
            if not 1 <= value < units:
                raise ValueError(f"{name} must lie in [1, {units - 1}] for this teacher ({units} {what}), got {value}")
        self.timesteps = config.timesteps if config.timesteps is not None else (0, self.second_step)
        bad = [t for t in self.timesteps if not 0 <= t < units]
        if bad:
            raise ValueError(f"timesteps must lie in [0, {units - 1}] for this teacher ({units} {what}), got {bad}")
        self.pairs_dir = config.pairs_dir or str(self.output_dir / "pairs")

    def prepare_data(self, accelerator: Accelerator):
        config = self.config
        generate_pairs(self.pipeline, self.pairs_dir, num_pairs=config.num_pairs, shard_size=config.shard_size,
                       seed=config.pair_seed, ode_steps=config.ode_steps, batch_size=config.pair_batch_size,
                       process_index=accelerator.process_index, num_processes=accelerator.num_processes,
                       pipeline_path=self.pipeline_path, barrier=accelerator.wait_for_everyone)
        accelerator.wait_for_everyone()
        return load_pairs(self.pairs_dir)[0]

    def build_model(self) -> DistilledGenerator:
        return self.model_class.from_teacher(self.pipeline.generator, self.pipeline.tokenizer, split=self.split,
                                             second_step=self.second_step)

    def loss(self, context: TrainingContext, batch: list[Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        """batch = (noise (b, l, e), labels (b,), tokens (b, l)) -> the loss averaged over the timesteps.

        The batch is repeated once per timestep and run in one forward pass (one pass per backward, as DDP needs).
        """
        noise, labels, tokens = batch
        model, distilled = context.model, context.unwrapped
        codes = distilled.code_vectors[tokens]
        inputs, is_data = zip(*(distilled.timestep_inputs(noise, codes, t) for t in self.timesteps), strict=True)
        count = len(self.timesteps)
        output = model(torch.cat(inputs), torch.cat(is_data), labels.repeat(count))
        predicted = ~torch.cat(is_data)  # the noise positions
        targets = tokens.repeat(count, 1)[predicted]
        cross_entropy = F.cross_entropy(output.logits[predicted], targets)
        squared_error = (output.regression[predicted] - codes.repeat(count, 1, 1)[predicted].float()).pow(2).sum(-1)
        squared_error = squared_error.mean()
        accuracy = (output.logits[predicted].argmax(-1) == targets).float().mean()
        loss = cross_entropy + self.config.regression_weight * squared_error
        return loss, {"cross_entropy": cross_entropy.detach(), "regression_error": squared_error.detach(),
                      "accuracy": accuracy.detach()}

    def export(self, model: DistilledGenerator) -> Pipeline:
        return Pipeline(self.pipeline.tokenizer, model.eval(), DistilledSettings(distilled_steps=1))
