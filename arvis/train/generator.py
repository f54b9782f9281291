"""Train a generator on a trained tokenizer's tokens, then save the whole pipeline.

``python -m arvis.train.generator --config configs/<recipe>.yaml tokenizer_path=DIR key=value ...``
(also under ``accelerate launch -m``). The images are encoded once with the frozen
tokenizer (in memory), the generator is trained with teacher forcing, and
``run.output_dir`` receives a pipeline folder (tokenizer + generator + sampling).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from pathlib import Path
from typing import Any, Sequence

from arvis.config import Config
from arvis.generators.base import GENERATORS, Generator
from arvis.pipeline import Pipeline, check_compatible
from arvis.samplers.config import SamplingConfig
from arvis.tokenizers.base import Tokenizer
from arvis.train.loop import (ProgressLog, RunFolders, build_dataset, check_image_size, dataset_num_classes,
                              final_model, finish_run, fit, make_accelerator, prepare_training, step_batches)
from arvis.train.options import DataConfig, OptimConfig, RunConfig
from arvis.train.preview import save_preview
from arvis.train.recipe import run_as_script, run_entry_point
from arvis.train.tokens import encode_dataset, read_tokens

__all__ = ["GeneratorTrainConfig", "build_generator", "encode_dataset", "main", "train_generator"]

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, kw_only=True)
class GeneratorTrainConfig(Config):
    """A generator training recipe.

    The generator's token layout, vocabulary and number of classes are taken from the
    tokenizer and the data; ``generator_config`` overrides other fields of the preset.
    ``sampling`` is stored in the saved pipeline as its default decoding policy.
    """

    tokenizer_path: str | None = None
    tokens_path: str | None = None  # a file from arvis.train.pretokenize; replaces encoding the data here
    generator: str = "raster-demo"
    generator_config: dict[str, Any] = dataclasses.field(default_factory=dict)
    data: DataConfig = DataConfig()
    optim: OptimConfig = OptimConfig(learning_rate=1e-4, weight_decay=0.05)
    sampling: SamplingConfig = SamplingConfig()
    run: RunConfig = RunConfig()
    encode_batch_size: int = 256


def build_generator(config: GeneratorTrainConfig, tokenizer: Tokenizer, num_classes: int) -> Generator:
    preset = GENERATORS.preset(config.generator)
    generator_class = GENERATORS.class_for_config(preset)
    fitted = generator_class.fit_config(preset, tokenizer=tokenizer, num_classes=num_classes)
    if config.generator_config:
        fitted = fitted.replace(**config.generator_config)
    generator = generator_class(fitted)
    generator.bind_tokenizer(tokenizer)
    return generator


def train_generator(config: GeneratorTrainConfig) -> tuple[Path, list[dict[str, float]]]:
    """Runs the recipe; returns the exported pipeline folder (``run.output_dir/pipeline``) and the log."""
    if config.tokenizer_path is None:
        raise ValueError("tokenizer_path is required: pass tokenizer_path=DIR (a folder saved by the tokenizer trainer)")
    run = config.run
    folders = RunFolders(run, "pipeline")
    accelerator = make_accelerator(run, folders)
    tokenizer = Tokenizer.from_pretrained(config.tokenizer_path, device=accelerator.device)
    if config.tokens_path is not None:
        token_data, num_classes = read_tokens(config.tokens_path, tokenizer)
    else:
        check_image_size(tokenizer, config.data)
        dataset = build_dataset(config.data.replace(random_flip=False, crop="center"))
        num_classes = dataset_num_classes(dataset)
    generator = build_generator(config, tokenizer, num_classes)
    check_compatible(tokenizer, generator)  # before any training time is spent
    if config.tokens_path is None:
        logger.info("encoding %d images with the tokenizer%s", len(dataset),
                    " (and their mirrors)" if config.data.random_flip else "")
        token_data = encode_dataset(tokenizer, dataset, config.encode_batch_size, accelerator.device,
                                    with_mirrors=config.data.random_flip)
    logger.info("training %s (%.2fM parameters) on %d token sequences of length %d", config.generator,
                generator.num_parameters() / 1e6, len(token_data), generator.layout.length)
    training = prepare_training(accelerator, generator, config.optim, run, folders)
    model, ema = training.model, training.ema
    batches = step_batches(token_data, run, accelerator, training.start * run.gradient_accumulation_steps)
    progress = ProgressLog(accelerator, run, "generator", training.start, recipe=config)

    def teacher_forcing_loss(model, batch):
        output = model(*batch)
        return output.loss, output.metrics

    def preview(step: int) -> None:
        if run.preview_every and step % run.preview_every == 0 and accelerator.is_main_process:
            unwrapped = accelerator.unwrap_model(model)
            with ema.applied(unwrapped) if ema is not None else contextlib.nullcontext():
                grid = save_preview(tokenizer, unwrapped, config.sampling, folders.root / "previews" / f"step-{step}.png")
            progress.log_image("preview", grid, step)

    fit(accelerator, training, batches, teacher_forcing_loss, run=run, grad_clip=config.optim.grad_clip,
        folders=folders, progress=progress, kind="generator", after_step=preview)
    trained = final_model(accelerator, model, ema)
    output_dir = finish_run(accelerator, progress, folders.export,
                            lambda path: Pipeline(tokenizer.eval(), trained, config.sampling).save_pretrained(path))
    return output_dir, progress.history


def main(argv: Sequence[str] | None = None) -> None:
    run_entry_point(GeneratorTrainConfig, train_generator, "Train an arvis generator and save a pipeline.", argv)


if __name__ == "__main__":
    run_as_script(main)
