"""The ``controlar`` post-training method: fine-tune a raster pipeline into one that follows control maps.

``accelerate launch -m arvis.train.posttrain --method controlar --pipeline DIR [key=value ...]``

1. Data: the images ``data`` describes (centre-cropped, unflipped), each encoded once by the pipeline's tokenizer,
   with its condition (class
   id, or glyph caption for a text-conditional base) and its control map, computed from the image by the public
   operator of ``control`` (:data:`arvis.data.control.CONTROL_KINDS`: ``mask`` or ``edges``), the same one
   ``arvis generate --control-from`` applies to a user's image. Maps are kept in memory, c·H·W float32 per image:
   fine for the glyphs and small folders, not for ImageNet at 256 px (about 0.26 MB per image).
2. Model: a :class:`~.model.ControlARRaster` around a copy of the pipeline's generator, all of it trained (upstream
   fine-tunes everything: c2i lr 1e-4, batch 256, 20 epochs; t2i lr 5e-5, weight decay 0.05). The encoder starts
   from a local transformers ViT / DINOv2 folder (``encoder_path``) or from transformers' initialisation.
3. Loss: the teacher-forced cross-entropy of the tokens; the base's label dropout also zeroes the dropped rows'
   control, so guidance's null condition (null class, zero control) is learned jointly.
4. Export: a pipeline of the same tokenizer and the ControlAR generator, sampled by ``controlled-next-token`` with
   the base pipeline's guidance and filtering and ``control_strength`` 1.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import torch
from accelerate import Accelerator
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset

from arvis.config import Config
from arvis.data.control import control_map
from arvis.generators.raster import RasterGenerator
from arvis.pipeline import Pipeline
from arvis.posttrain.base import METHODS, PostTrainingMethod, TeacherAdapters, TrainingContext
from arvis.posttrain.controlar.encoder import (ControlEncoderConfig, load_backbone_weights,
                                              read_encoder_folder)
from arvis.posttrain.controlar.model import ControlARRaster
from arvis.posttrain.controlar.sampler import ControlledNextTokenSettings
from arvis.samplers.settings import shared_values
from arvis.train.loop import build_dataset, check_dataset_classes, check_image_size
from arvis.train.options import DataConfig
from arvis.train.tokens import ConditionedTokens, with_conditions

ADAPTERS = TeacherAdapters("controlar")
ADAPTERS.register(RasterGenerator, ControlARRaster)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ControlARConfig(Config):
    """Settings of the ``controlar`` method.

    Attributes:
        mode: ``"decoding"`` (ControlAR) or ``"prefill"`` (the conditional-prefilling baseline).
        control: the control map computed from each image: ``"mask"`` or ``"edges"``.
        encoder: the control encoder's backbone (default upstream c2i's ViT-small); with ``encoder_path`` only its
            ``resize`` is read (the rest comes from the folder's config).
        encoder_path: a local transformers ViT or DINOv2 folder (``config.json`` and ``model.safetensors``) whose
            weights start the encoder; None starts it from transformers' initialisation.
        injection_init: ``"zero"`` (a decoding-mode model starts as the base) or ``"normal"`` (upstream's effective init).
        initializer_range: the std of the new MLPs' weights (upstream 0.02).
        data: the training images (their size must be the tokenizer's).
        encode_batch_size: images encoded (and their maps computed) at once.
    """

    mode: Literal["decoding", "prefill"] = "decoding"
    control: Literal["mask", "edges"] = "mask"
    encoder: ControlEncoderConfig = ControlEncoderConfig()
    encoder_path: str | None = None
    injection_init: Literal["zero", "normal"] = "zero"
    initializer_range: float = 0.02
    data: DataConfig = DataConfig()
    encode_batch_size: int = 256

    def __post_init__(self) -> None:
        if self.encode_batch_size < 1:
            raise ValueError(f"encode_batch_size must be >= 1, got {self.encode_batch_size}")
        if self.data.is_video:
            raise ValueError(f"ControlAR trains on images; data.name {self.data.name!r} gives clips")


@METHODS.register
class ControlAR(PostTrainingMethod):
    """ControlAR: a control encoder and conditional decoding (or prefilling) on a raster generator."""

    name = "controlar"
    config_class = ControlARConfig
    description = "ControlAR: follow masks or edge maps by conditional decoding (or the prefilling baseline)"

    def __init__(self, config: ControlARConfig, pipeline: Pipeline, **kwargs) -> None:
        super().__init__(config, pipeline, **kwargs)
        self.model_class = ADAPTERS.for_teacher(pipeline.generator)
        check_image_size(pipeline.tokenizer, config.data)
        self.encoder_config, self.encoder_weights = config.encoder, None
        if config.encoder_path is not None:
            header, self.encoder_weights = read_encoder_folder(config.encoder_path)
            self.encoder_config = ControlEncoderConfig.from_transformers(
                header, f"{config.encoder_path}/config.json", resize=config.encoder.resize)

    def prepare_data(self, accelerator: Accelerator) -> ConditionedTokens:
        """Every image encoded once, with its condition and its control map (on the CPU). The data is read once,
        centre-cropped and unflipped, so each map is computed from the very pixels its tokens were."""
        pipeline, config = self.pipeline, self.config
        generator, tokenizer = pipeline.generator, pipeline.tokenizer
        dataset = build_dataset(config.data.replace(random_flip=False, crop="center"))
        check_dataset_classes(dataset, generator)
        tokens, labels, maps = [], [], []
        with torch.inference_mode():
            for images, batch_labels in DataLoader(dataset, batch_size=config.encode_batch_size, shuffle=False):
                images = images.to(accelerator.device)
                tokens.append(tokenizer.encode(tokenizer.from_unit_range(images)).cpu())
                maps.append(control_map(images, config.control).cpu())
                labels.append(torch.as_tensor(batch_labels, dtype=torch.long))
        encoded = TensorDataset(torch.cat(tokens), torch.cat(labels))
        conditioned = with_conditions(encoded, generator, pipeline.text_tokenizer or pipeline.text_encoder, dataset)
        return ConditionedTokens(conditioned.tokens, **conditioned.fields, control=torch.cat(maps))

    def build_model(self) -> ControlARRaster:
        tokenizer = self.pipeline.tokenizer
        height, width = tokenizer.image_size
        if height != width:
            raise ValueError(f"ControlAR takes square control maps; the tokenizer's images are {height}x{width}")
        model = self.model_class.from_base(self.pipeline.generator, image_size=height, mode=self.config.mode,
                                           encoder=self.encoder_config, injection_init=self.config.injection_init,
                                           initializer_range=self.config.initializer_range,
                                           control_kind=self.config.control)
        model.check_tokenizer(tokenizer)
        if self.encoder_weights is not None:
            load_backbone_weights(model.encoder, self.encoder_weights, f"{self.config.encoder_path}/model.safetensors")
        return model

    def loss(self, context: TrainingContext, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        tokens, condition = ConditionedTokens.split(batch)
        output = context.model(tokens, condition)
        return output.loss, {"cross_entropy": output.loss.detach(), **output.metrics}

    def export(self, model: ControlARRaster) -> Pipeline:
        shared = shared_values(self.pipeline.sampling, ControlledNextTokenSettings)
        return self.pipeline_around(model, ControlledNextTokenSettings(**shared))

