"""Train a tokenizer: ``python -m arvis.train.tokenizer --config configs/<recipe>.yaml key=value ...``.

Also runs under ``accelerate launch -m arvis.train.tokenizer``. Each iteration does
the tokenizer (generator) update, then, once the discriminator has started, the
discriminator update with its own optimiser (VQGAN / LlamaGen schedule). The
trained tokenizer is saved as a component folder in ``run.output_dir``.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, Sequence

from torch.utils.data import DataLoader

from arvis.config import Config
from arvis.tokenizers.base import TOKENIZERS, Tokenizer
from arvis.tokenizers.losses import TokenizerLossConfig, VQGANLoss
from arvis.train.loop import (ProgressLog, build_dataset, build_optimizer, build_scheduler, check_image_size,
                              finish_run, infinite_batches, make_accelerator, optimizer_step)
from arvis.train.options import DataConfig, OptimConfig, RunConfig
from arvis.train.recipe import run_entry_point

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, kw_only=True)
class TokenizerTrainConfig(Config):
    """A tokenizer training recipe. ``tokenizer_config`` overrides fields of the ``tokenizer`` preset."""

    tokenizer: str = "vq-demo"
    tokenizer_config: dict[str, Any] = dataclasses.field(default_factory=dict)
    loss: TokenizerLossConfig = TokenizerLossConfig()
    data: DataConfig = DataConfig()
    optim: OptimConfig = OptimConfig()
    disc_optim: OptimConfig = OptimConfig()
    run: RunConfig = RunConfig()


def build_tokenizer(config: TokenizerTrainConfig) -> Tokenizer:
    tokenizer = TOKENIZERS.build(config.tokenizer, **config.tokenizer_config)
    check_image_size(tokenizer, config.data)
    return tokenizer


def train_tokenizer(config: TokenizerTrainConfig) -> tuple[Path, list[dict[str, float]]]:
    """Runs the recipe; returns the saved tokenizer folder and the logged history."""
    run = config.run
    accelerator = make_accelerator(run)
    tokenizer = build_tokenizer(config)
    loss_fn = VQGANLoss(config.loss, in_channels=tokenizer.in_channels)
    dataset = build_dataset(config.data)
    loader = DataLoader(dataset, batch_size=run.batch_size, shuffle=True, drop_last=True)
    if len(loader) == 0:
        raise ValueError(f"the dataset has {len(dataset)} images, fewer than one batch of {run.batch_size}")
    generator_params = list(tokenizer.parameters()) + loss_fn.generator_parameters()
    optimizer = build_optimizer(tokenizer, config.optim)
    if loss_fn.generator_parameters():
        optimizer.add_param_group({"params": loss_fn.generator_parameters(), "weight_decay": 0.0})
    disc_optimizer = build_optimizer(loss_fn.discriminator, config.disc_optim)
    scheduler = build_scheduler(optimizer, config.optim, run.max_steps)
    disc_scheduler = build_scheduler(disc_optimizer, config.disc_optim, max(1, run.max_steps - config.loss.disc_start))
    tokenizer, loss_fn, optimizer, disc_optimizer, loader = accelerator.prepare(
        tokenizer, loss_fn, optimizer, disc_optimizer, loader
    )
    logger.info("training %s (%.2fM parameters) on %d images", config.tokenizer,
                sum(p.numel() for p in generator_params) / 1e6, len(dataset))
    progress = ProgressLog(accelerator, run, "tokenizer")
    batches = infinite_batches(loader)
    model = accelerator.unwrap_model(tokenizer)
    tokenizer.train()
    for step in range(run.max_steps):
        images, _ = next(batches)
        pixels = model.from_unit_range(images)
        with accelerator.autocast():
            output = tokenizer(pixels)
            loss, logs = loss_fn.generator_loss(pixels, output.reconstruction, output.losses, step)
        optimizer_step(accelerator, loss, optimizer, generator_params, config.optim.grad_clip, scheduler)
        with accelerator.autocast():
            disc_loss, disc_logs = loss_fn.discriminator_loss(pixels, output.reconstruction, step)
        if disc_loss is not None:
            disc_optimizer.zero_grad(set_to_none=True)  # drop the grads the generator loss left on D
            optimizer_step(accelerator, disc_loss, disc_optimizer, loss_fn.discriminator_parameters(),
                           config.disc_optim.grad_clip, disc_scheduler)
        progress.update(step + 1, {**logs, **disc_logs, **output.metrics})
    output_dir = finish_run(accelerator, progress, run.output_dir, model.eval().save_pretrained)
    return output_dir, progress.history


def main(argv: Sequence[str] | None = None) -> None:
    run_entry_point(TokenizerTrainConfig, train_tokenizer, "Train an arvis tokenizer.", argv)


if __name__ == "__main__":
    main()
