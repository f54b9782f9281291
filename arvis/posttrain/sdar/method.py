"""The ``sdar`` post-training method: continue training a raster pipeline as a blockwise masked-diffusion model.

``accelerate launch -m arvis.train.posttrain --method sdar --pipeline DIR [key=value ...]``

1. Data: the images ``data`` describes (centre-cropped, unflipped), each encoded once by the pipeline's tokenizer,
   with its condition (class id, or glyph caption for a text-conditional base).
2. Model: an :class:`~.model.SDARRaster` of blocks of ``block_size`` around a copy of the pipeline's generator,
   all of it trained (upstream: full-parameter training, lr 1e-5 constant with 3% warm-up, for its LLMs).
3. Loss: the block-diffusion objective of :meth:`SDARRaster.forward` (a mask rate per sample, CE / p over the
   masked tokens); the base's label dropout stays on, so guidance's null condition is kept.
4. Export: a pipeline of the same tokenizer and the SDAR generator, sampled by ``blockwise`` with the base
   pipeline's guidance and filtering and S = B denoising passes (static-equivalent unless the threshold commits
   more).
"""

from __future__ import annotations

import dataclasses

from accelerate import Accelerator
from torch import Tensor

from arvis.config import Config
from arvis.generators.raster import RasterGenerator
from arvis.pipeline import Pipeline
from arvis.posttrain.base import METHODS, PostTrainingMethod, TeacherAdapters, TrainingContext
from arvis.posttrain.sdar.model import SDARRaster
from arvis.samplers.blockwise import BlockwiseSettings
from arvis.samplers.settings import shared_values
from arvis.posttrain.tokens import encoded_training_data
from arvis.train.loop import check_image_size
from arvis.train.options import DataConfig
from arvis.train.tokens import ConditionedTokens

ADAPTERS = TeacherAdapters("sdar")
ADAPTERS.register(RasterGenerator, SDARRaster)


@dataclasses.dataclass(frozen=True, kw_only=True)
class SDARConfig(Config):
    """Settings of the ``sdar`` method.

    Attributes:
        block_size: B, tokens per block (upstream 4); the generator's token count must be a multiple of it.
        data: the training images (their size must be the tokenizer's).
        encode_batch_size: images encoded at once.
    """

    block_size: int = 4
    data: DataConfig = DataConfig()
    encode_batch_size: int = 256

    def __post_init__(self) -> None:
        if self.block_size < 1 or self.encode_batch_size < 1:
            raise ValueError(f"block_size and encode_batch_size must be >= 1, got {self.block_size}, "
                             f"{self.encode_batch_size}")
        if self.data.is_video:
            raise ValueError(f"SDAR trains on images; data.name {self.data.name!r} gives clips")


@METHODS.register
class SDAR(PostTrainingMethod):
    """SDAR: blockwise masked diffusion, several tokens per pass, from a trained raster generator."""

    name = "sdar"
    config_class = SDARConfig
    description = "SDAR: turn a raster generator into a blockwise masked-diffusion one (several tokens per pass)"

    def __init__(self, config: SDARConfig, pipeline: Pipeline, **kwargs) -> None:
        super().__init__(config, pipeline, **kwargs)
        self.model_class = ADAPTERS.for_teacher(pipeline.generator)
        check_image_size(pipeline.tokenizer, config.data)
        length = pipeline.generator.layout.length
        if length % config.block_size:
            raise ValueError(f"block_size {config.block_size} does not divide the generator's {length} tokens")

    def prepare_data(self, accelerator: Accelerator) -> ConditionedTokens:
        return encoded_training_data(self.pipeline, self.config.data, self.config.encode_batch_size,
                                     accelerator.device)

    def build_model(self) -> SDARRaster:
        return self.model_class.from_base(self.pipeline.generator, block_size=self.config.block_size)

    def loss(self, context: TrainingContext, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        tokens, condition = ConditionedTokens.split(batch)
        output = context.model(tokens, condition)
        return output.loss, {"block_diffusion": output.loss.detach(), **output.metrics}

    def export(self, model: SDARRaster) -> Pipeline:
        shared = shared_values(self.pipeline.sampling, BlockwiseSettings)
        return self.pipeline_around(model, BlockwiseSettings(**shared, denoising_steps=model.block_size))
