"""The post-training seams: setup, before_step and the training context (unwrapped model, device, eval mode)
reach a method through the shared loop; structural methods find their model class by the teacher's class."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
from torch.utils.data import TensorDataset

import arvis
from arvis.config import Config
from arvis.generators.raster import RasterGenerator
from arvis.pipeline import Pipeline
from arvis.posttrain import METHODS, PostTrainingMethod, TeacherAdapters, TrainingContext
from arvis.posttrain.distilled_decoding import DistilledRaster, DistilledVAR
from arvis.posttrain.distilled_decoding.method import ADAPTERS
from arvis.train.posttrain import PostTrainConfig, post_train


@dataclasses.dataclass(frozen=True, kw_only=True)
class RecordingConfig(Config):
    examples: int = 8


class RecordingMethod(PostTrainingMethod):
    """Teacher forcing on the pipeline's own samples, recording what the loop hands it (not registered)."""

    name = "recording"
    config_class = RecordingConfig
    events: list = []

    def setup(self, accelerator) -> None:
        self.events.append(("setup", accelerator.device.type))

    def prepare_data(self, accelerator):
        self.events.append(("prepare_data",))
        labels = torch.arange(self.config.examples) % self.pipeline.generator.num_classes
        tokens = self.pipeline.sampler()(self.pipeline.generator, labels.to(accelerator.device),
                                         rng=torch.Generator().manual_seed(0))
        return TensorDataset(tokens.cpu(), labels)

    def build_model(self):
        return copy.deepcopy(self.pipeline.generator)

    def before_step(self, step: int) -> None:
        self.events.append(("before_step", step))

    def loss(self, context: TrainingContext, batch):
        tokens, labels = batch
        assert context.unwrapped.training and tokens.device.type == context.device.type
        with context.eval_mode() as model:
            assert model is context.unwrapped and not model.training
            with torch.no_grad():
                reference = model(tokens, labels).loss
        assert context.unwrapped.training  # back in train mode
        output = context.model(tokens, labels)
        self.events.append(("loss", bool(torch.isfinite(reference))))
        return output.loss, output.metrics

    def export(self, model) -> Pipeline:
        return Pipeline(self.pipeline.tokenizer, model.eval(), self.pipeline.sampling)


def test_the_loop_calls_setup_before_step_and_loss_with_the_training_context(tiny_pipeline, tmp_path, monkeypatch):
    monkeypatch.setattr(METHODS, "get_class", lambda name: RecordingMethod)
    monkeypatch.setattr(RecordingMethod, "events", [])
    path = tiny_pipeline.save_pretrained(tmp_path / "teacher")
    output, _ = post_train(PostTrainConfig.from_dict({
        "method": "recording", "pipeline": str(path),
        "run": {"output_dir": str(tmp_path / "run"), "max_steps": 3, "batch_size": 4,
                "gradient_accumulation_steps": 2, "progress": False}}))
    events = RecordingMethod.events
    assert events[:2] == [("setup", "cpu"), ("prepare_data",)]
    assert [event for event in events if event[0] == "before_step"] == [("before_step", step) for step in range(3)]
    assert events[2:] == [event for step in range(3) for event in (("before_step", step), ("loss", True),
                                                                    ("loss", True))]
    assert isinstance(arvis.load(output).generator, RasterGenerator)


class WideRaster(RasterGenerator):
    """A generator built on the raster one (not registered)."""


def test_teacher_adapters_follow_the_class_hierarchy_and_name_the_supported_classes(tiny_pipeline):
    assert ADAPTERS.for_teacher(tiny_pipeline.generator) is DistilledRaster
    assert ADAPTERS.for_teacher(WideRaster(tiny_pipeline.generator.config)) is DistilledRaster
    from arvis.generators.base import GENERATORS

    with pytest.raises(ValueError, match=r"adapts generators of the classes RasterGenerator, VARGenerator \(and their "
                                         r"subclasses\), not HARGenerator"):
        ADAPTERS.for_teacher(GENERATORS.build("har-tiny"))
    adapters = TeacherAdapters("toy")
    adapters.register(RasterGenerator, DistilledRaster)
    adapters.register(WideRaster, DistilledVAR)  # a subclass's own adapter wins over its base's
    assert adapters.for_teacher(WideRaster(tiny_pipeline.generator.config)) is DistilledVAR
    with pytest.raises(ValueError, match="already has an adapter for RasterGenerator"):
        adapters.register(RasterGenerator, DistilledVAR)


class ReorderedRaster(RasterGenerator):
    """A raster generator emitting its tokens last first (not registered)."""

    def to_layout_order(self, tokens):
        return tokens.flip(1)

    def from_layout_order(self, tokens):
        return tokens.flip(1)


def test_distilled_decoding_refuses_a_teacher_with_its_own_token_order(tiny_pipeline, tmp_path):
    from arvis.posttrain.distilled_decoding import DistilledDecoding, DistilledDecodingConfig

    teacher = ReorderedRaster(tiny_pipeline.generator.config).eval()
    pipeline = Pipeline(tiny_pipeline.tokenizer, teacher, tiny_pipeline.sampling)
    with pytest.raises(ValueError, match="emits its tokens in an order of its own"):
        DistilledDecoding(DistilledDecodingConfig(), pipeline, pipeline_path="x", output_dir=tmp_path)
