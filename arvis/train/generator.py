"""Train a generator on a trained tokenizer's tokens, then save the whole pipeline.

``python -m arvis.train.generator --config configs/<recipe>.yaml tokenizer_path=DIR key=value ...``
(also under ``accelerate launch -m``). The images are encoded once with the frozen
tokenizer (in memory), the generator is trained with teacher forcing, and
``run.output_dir`` receives a pipeline folder (tokenizer + generator + sampling).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, Sequence

import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

from arvis.config import Config
from arvis.generators.base import GENERATORS, Generator
from arvis.pipeline import Pipeline, check_compatible
from arvis.samplers.config import SamplingConfig
from arvis.tokenizers.base import Tokenizer
from arvis.train.loop import (ProgressLog, build_dataset, build_optimizer, build_scheduler, check_image_size,
                              dataset_num_classes, finish_run, infinite_batches, make_accelerator,
                              optimizer_step)
from arvis.train.options import DataConfig, OptimConfig, RunConfig
from arvis.train.recipe import run_entry_point

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, kw_only=True)
class GeneratorTrainConfig(Config):
    """A generator training recipe.

    The generator's token layout, vocabulary and number of classes are taken from the
    tokenizer and the data; ``generator_config`` overrides other fields of the preset.
    ``sampling`` is stored in the saved pipeline as its default decoding policy.
    """

    tokenizer_path: str | None = None
    generator: str = "raster-demo"
    generator_config: dict[str, Any] = dataclasses.field(default_factory=dict)
    data: DataConfig = DataConfig()
    optim: OptimConfig = OptimConfig(learning_rate=1e-4, weight_decay=0.05)
    sampling: SamplingConfig = SamplingConfig()
    run: RunConfig = RunConfig()
    encode_batch_size: int = 256


@torch.inference_mode()
def encode_dataset(tokenizer: Tokenizer, dataset: Dataset, batch_size: int, device: torch.device, *,
                   with_mirrors: bool = False) -> TensorDataset:
    """Encodes every image once -> TensorDataset(tokens (n, l) long, labels (n,) long) on the CPU.

    ``with_mirrors`` also encodes each image's horizontal mirror (LlamaGen's flip augmentation
    of extracted codes), doubling n.
    """
    tokens, labels = [], []
    for images, batch_labels in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        pixels = tokenizer.from_unit_range(images.to(device))
        variants = [pixels, pixels.flip(-1)] if with_mirrors else [pixels]
        for variant in variants:
            tokens.append(tokenizer.encode(variant).cpu())
            labels.append(torch.as_tensor(batch_labels, dtype=torch.long))
    return TensorDataset(torch.cat(tokens), torch.cat(labels))


def build_generator(config: GeneratorTrainConfig, tokenizer: Tokenizer, num_classes: int) -> Generator:
    preset = GENERATORS.preset(config.generator)
    generator_class = GENERATORS.class_for_config(preset)
    fitted = generator_class.fit_config(preset, layout=tokenizer.layout, vocab_size=tokenizer.vocab_size,
                                        num_classes=num_classes)
    if config.generator_config:
        fitted = fitted.replace(**config.generator_config)
    return generator_class(fitted)


def train_generator(config: GeneratorTrainConfig) -> tuple[Path, list[dict[str, float]]]:
    """Runs the recipe; returns the saved pipeline folder and the logged history."""
    if config.tokenizer_path is None:
        raise ValueError("tokenizer_path is required: pass tokenizer_path=DIR (a folder saved by the tokenizer trainer)")
    run = config.run
    accelerator = make_accelerator(run)
    tokenizer = Tokenizer.from_pretrained(config.tokenizer_path, device=accelerator.device)
    check_image_size(tokenizer, config.data)
    dataset = build_dataset(config.data.replace(random_flip=False))
    generator = build_generator(config, tokenizer, dataset_num_classes(dataset))
    check_compatible(tokenizer, generator)  # before any training time is spent
    logger.info("encoding %d images with the tokenizer%s", len(dataset),
                " (and their mirrors)" if config.data.random_flip else "")
    token_data = encode_dataset(tokenizer, dataset, config.encode_batch_size, accelerator.device,
                                with_mirrors=config.data.random_flip)
    logger.info("training %s (%.2fM parameters) on %d token sequences of length %d", config.generator,
                generator.num_parameters() / 1e6, len(token_data), generator.layout.length)
    loader = DataLoader(token_data, batch_size=run.batch_size, shuffle=True, drop_last=True)
    if len(loader) == 0:
        raise ValueError(f"the dataset has {len(token_data)} images, fewer than one batch of {run.batch_size}")
    optimizer = build_optimizer(generator, config.optim)
    scheduler = build_scheduler(optimizer, config.optim, run.max_steps)
    model, optimizer, loader = accelerator.prepare(generator, optimizer, loader)
    progress = ProgressLog(accelerator, run, "generator")
    batches = infinite_batches(loader)
    model.train()
    for step in range(run.max_steps):
        tokens, labels = next(batches)
        with accelerator.autocast():
            output = model(tokens, labels)
        optimizer_step(accelerator, output.loss, optimizer, model.parameters(), config.optim.grad_clip, scheduler)
        progress.update(step + 1, {"loss": output.loss.detach(), **output.metrics})
    unwrapped = accelerator.unwrap_model(model).eval()
    output_dir = finish_run(accelerator, progress, run.output_dir,
                            lambda path: Pipeline(tokenizer.eval(), unwrapped, config.sampling).save_pretrained(path))
    return output_dir, progress.history


def main(argv: Sequence[str] | None = None) -> None:
    run_entry_point(GeneratorTrainConfig, train_generator, "Train an arvis generator and save a pipeline.", argv)


if __name__ == "__main__":
    main()
