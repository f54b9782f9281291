"""The ``orthus`` post-training method: Orthus's recipe after the discrete stage.

``accelerate launch -m arvis.train.posttrain --method orthus --pipeline DIR method_config.stage=base|unified``

* ``stage=base`` (Orthus-base) takes a pipeline of a discrete
  :class:`~arvis.generators.interleaved.InterleavedGenerator` and builds an
  :class:`~arvis.generators.orthus.OrthusGenerator` from it (:meth:`~arvis.generators.orthus.OrthusGenerator.from_discrete`:
  trunk, embeddings and LM head copied, the input codebook from the tokenizer's code vectors, the fields of the
  ``preset`` with ``generator`` overrides, ``latent_scale`` 1 / std of the training latents unless given). Only
  :meth:`~arvis.generators.orthus.OrthusGenerator.added_modules` are trained (the rest is frozen), on the diffusion
  loss alone: "tunes only the added modules to reconstruct images" (the paper; its data were 10k LAION-COCO images).
* ``stage=unified`` takes an Orthus pipeline and trains all of it on the text cross-entropy + ``diffusion_weight``
  × the diffusion loss (the paper's unified objective; λ was not released).

Data: the glyph images ``data`` describes, each encoded once to latents by the pipeline's tokenizer, with its
caption (the pipeline's text tokenizer); the documents' kinds are drawn by the generator (``document_mix``).
Export: the tokenizer, the trained generator and the text tokenizer, sampled by ``diffusion-head`` with the input
pipeline's shared settings (guidance, filtering, the longest text segment).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

from accelerate import Accelerator
from torch import Tensor

from arvis.config import Config
from arvis.generators.base import GENERATORS
from arvis.generators.interleaved import InterleavedGenerator
from arvis.generators.orthus import OrthusConfig, OrthusGenerator
from arvis.pipeline import Pipeline
from arvis.posttrain.base import METHODS, PostTrainingMethod, TrainingContext
from arvis.samplers.diffusion_head import DiffusionHeadSettings
from arvis.samplers.settings import shared_values
from arvis.train.loop import build_dataset, check_image_size
from arvis.train.options import DataConfig
from arvis.train.tokens import ConditionedTokens, encode_dataset, with_conditions


@dataclasses.dataclass(frozen=True, kw_only=True)
class OrthusMethodConfig(Config):
    """Settings of the ``orthus`` method.

    Attributes:
        stage: ``"base"`` (from a discrete pipeline: only the added modules, diffusion loss) or ``"unified"``
            (from an Orthus pipeline: everything, both losses).
        preset: the Orthus preset whose head, schedule and soft-input fields a ``base`` stage takes (the
            trunk's and the stream's come from the discrete generator).
        generator: overrides of those Orthus fields (``head_width``, ``diffusion_repeats``, ``soft_temperature``,
            ``latent_scale``, ...); ``base`` only.
        diffusion_weight: λ of the unified loss CE + λ · diffusion (written into the generator's config).
        data: the training images (glyphs with captions; their size must be the tokenizer's).
        encode_batch_size: images encoded at once.
    """

    stage: Literal["base", "unified"] = "base"
    preset: str = "orthus-demo"
    generator: dict[str, Any] = dataclasses.field(default_factory=dict)
    diffusion_weight: float = 1.0
    data: DataConfig = DataConfig()
    encode_batch_size: int = 256

    def __post_init__(self) -> None:
        if self.stage == "unified" and self.generator:
            raise ValueError("method_config.generator overrides build Orthus-base; a unified stage trains the "
                             "pipeline's Orthus generator as it is")
        if self.diffusion_weight < 0:
            raise ValueError(f"diffusion_weight must be >= 0, got {self.diffusion_weight}")
        if self.encode_batch_size < 1:
            raise ValueError(f"encode_batch_size must be >= 1, got {self.encode_batch_size}")
        if self.data.name != "glyphs" or self.data.random_flip:
            raise ValueError("Orthus trains on the glyph images with their captions: use data.name=glyphs and "
                             "data.random_flip=false (a mirror would swap the caption's left and right)")


@METHODS.register
class Orthus(PostTrainingMethod):
    """Orthus-base from a discrete interleaved pipeline, or the unified fine-tune of an Orthus one."""

    name = "orthus"
    config_class = OrthusMethodConfig
    description = "Orthus: continuous image tokens with a diffusion head on a discrete interleaved AR (stages 2, 3)"

    def __init__(self, config: OrthusMethodConfig, pipeline: Pipeline, **kwargs) -> None:
        super().__init__(config, pipeline, **kwargs)
        expected = InterleavedGenerator if config.stage == "base" else OrthusGenerator
        if type(pipeline.generator) is not expected:
            raise ValueError(f"the {config.stage} stage starts from a pipeline of a {expected.__name__}, got "
                             f"{type(pipeline.generator).__name__}"
                             + ("; run stage=base on the discrete pipeline first" if config.stage == "unified" else ""))
        if pipeline.tokenizer.latent_dim is None:
            raise ValueError(f"{type(pipeline.tokenizer).__name__} exposes no latents for Orthus's continuous tokens")
        check_image_size(pipeline.tokenizer, config.data)
        self.latent_std: float | None = None

    def prepare_data(self, accelerator: Accelerator) -> ConditionedTokens:
        """Every image encoded once to latents (b, l, e) on the CPU, with its caption."""
        pipeline = self.pipeline
        dataset = build_dataset(self.config.data.replace(crop="center"))
        encoded = encode_dataset(pipeline.tokenizer, dataset, self.config.encode_batch_size, accelerator.device,
                                 store="latents")
        data = with_conditions(encoded, pipeline.generator, pipeline.text_tokenizer, dataset)
        self.latent_std = float(data.tokens.float().std())
        return ConditionedTokens(data.tokens.float(), **data.fields)

    def orthus_config(self) -> OrthusConfig:
        """The Orthus-base config: the preset's added fields, the overrides, the discrete generator's own fields."""
        discrete = self.pipeline.generator.config
        preset = GENERATORS.preset(self.config.preset)
        if not isinstance(preset, OrthusConfig):
            raise ValueError(f"preset {self.config.preset!r} is not an Orthus preset")
        config = dataclasses.replace(preset, **{field.name: getattr(discrete, field.name)
                                                for field in dataclasses.fields(discrete)})
        config = config.replace(latent_dim=self.pipeline.tokenizer.latent_dim, diffusion_weight=self.config.diffusion_weight,
                                **self.config.generator)
        if config.latent_scale is None:
            if self.latent_std is None:
                raise ValueError("the latent scale is set from the training latents: call prepare_data first")
            config = config.replace(latent_scale=1.0 / self.latent_std)
        return config

    def build_model(self) -> OrthusGenerator:
        generator = self.pipeline.generator
        if self.config.stage == "unified":  # the trained lambda is the one the exported config records
            model = OrthusGenerator(generator.config.replace(diffusion_weight=self.config.diffusion_weight))
            model.load_state_dict(generator.state_dict())
            return model.to(next(generator.parameters()).device).train()
        model = OrthusGenerator.from_discrete(generator, self.pipeline.tokenizer, self.orthus_config())
        model.requires_grad_(False)
        for module in model.added_modules().values():
            module.requires_grad_(True)
        return model.train()

    def loss(self, context: TrainingContext, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        latents, condition = ConditionedTokens.split(batch)
        output = context.model(latents, condition)
        if self.config.stage == "base":  # the frozen trunk's text loss has no gradient to give
            return output.diffusion_loss, output.metrics
        return output.loss, output.metrics  # text CE + diffusion_weight x diffusion

    def export(self, model: OrthusGenerator) -> Pipeline:
        model.requires_grad_(True)
        shared = shared_values(self.pipeline.sampling, DiffusionHeadSettings)
        return self.pipeline_around(model, DiffusionHeadSettings(**shared))
