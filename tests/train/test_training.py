"""Small end-to-end training runs on the built-in glyphs: losses must fall, outputs must load."""

import pytest
import torch
from accelerate.state import AcceleratorState

import arvis
from arvis.tokenizers.base import Tokenizer
from arvis.train.generator import GeneratorTrainConfig, train_generator
from arvis.train.loop import lr_multiplier
from arvis.train.options import OptimConfig
from arvis.train.recipe import load_recipe
from arvis.train.tokenizer import TokenizerTrainConfig, train_tokenizer

TINY_DATA = ["data.image_size=16", "data.num_samples=512"]


@pytest.fixture(autouse=True)
def fresh_accelerator_state():
    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


@pytest.fixture(scope="module")
def trained_tokenizer(tmp_path_factory):
    AcceleratorState._reset_state(reset_partial_state=True)
    output = tmp_path_factory.mktemp("tokenizer")
    config = load_recipe(TokenizerTrainConfig, None, TINY_DATA + [
        "tokenizer=vq-tiny", "run.batch_size=16", "run.max_steps=60", "run.log_every=10", "run.progress=false",
        f"run.output_dir={output}", "optim.learning_rate=2e-3", "loss.perceptual_weight=0", "loss.disc_start=50",
        "loss.disc_ndf=8", "loss.disc_layers=2",
    ])
    path, history = train_tokenizer(config)
    return path, history


def test_tokenizer_training_reduces_reconstruction_error_and_saves(trained_tokenizer):
    path, history = trained_tokenizer
    by_step = {record["step"]: record for record in history}
    assert by_step[50]["l2"] < 0.7 * by_step[1]["l2"]  # before the discriminator starts
    assert "discriminator" in by_step[60] and "discriminator" not in by_step[50]  # D starts at step 50
    tokenizer = Tokenizer.from_pretrained(path)
    assert tokenizer.config.image_size == 16 and not tokenizer.training


def test_generator_training_reduces_loss_and_saves_a_pipeline(trained_tokenizer, tmp_path):
    tokenizer_path, _ = trained_tokenizer
    config = load_recipe(GeneratorTrainConfig, None, TINY_DATA + [
        f"tokenizer_path={tokenizer_path}", "generator=raster-tiny", "run.batch_size=32", "run.max_steps=80",
        "run.log_every=10", "run.progress=false", f"run.output_dir={tmp_path / 'pipeline'}",
        "optim.learning_rate=3e-3", "sampling.cfg_scale=2.0",
    ])
    path, history = train_generator(config)
    assert history[-1]["loss"] < history[0]["loss"] - 0.3
    pipeline = arvis.load(path)
    assert pipeline.sampling.cfg_scale == 2.0 and pipeline.generator.vocab_size == pipeline.tokenizer.vocab_size
    images = arvis.generate(pipeline, class_labels=[0, 1], num_samples=2, output_type="pt")
    assert images.shape == (4, 3, 16, 16) and torch.isfinite(images).all()


def test_mismatched_image_size_is_reported(tmp_path):
    config = load_recipe(TokenizerTrainConfig, None, ["tokenizer=vq-tiny", "data.image_size=32",
                                                      f"run.output_dir={tmp_path}"])
    with pytest.raises(ValueError, match="image_size"):
        train_tokenizer(config)


def test_generator_training_needs_a_tokenizer(tmp_path):
    with pytest.raises(ValueError, match="tokenizer_path"):
        train_generator(GeneratorTrainConfig())
    config = load_recipe(GeneratorTrainConfig, None, [f"tokenizer_path={tmp_path / 'absent'}"])
    with pytest.raises(FileNotFoundError, match="absent"):
        train_generator(config)


def test_learning_rate_schedule_shapes():
    warm_cosine = OptimConfig(warmup_steps=10, schedule="cosine", min_lr_ratio=0.1)
    assert lr_multiplier(0, warm_cosine, 110) == pytest.approx(0.1)
    assert lr_multiplier(9, warm_cosine, 110) == pytest.approx(1.0)
    assert lr_multiplier(60, warm_cosine, 110) == pytest.approx(0.55)
    assert lr_multiplier(110, warm_cosine, 110) == pytest.approx(0.1)
    assert lr_multiplier(60, OptimConfig(schedule="linear"), 100) == pytest.approx(0.4)
    assert lr_multiplier(99, OptimConfig(), 100) == 1.0
