"""Train a tokenizer: ``python -m arvis.train.tokenizer --config configs/<recipe>.yaml key=value ...``.

Also runs under ``accelerate launch -m arvis.train.tokenizer`` on several processes. Each
iteration does the tokenizer (generator) update, then, once the discriminator has started and
every ``loss.disc_every`` steps (LARP: 5), the discriminator update with its own optimiser (VQGAN /
LlamaGen schedule; its learning-rate schedule counts discriminator updates). The tokenizer
and the discriminator are prepared as two data-parallel models: the tokenizer's adversarial
term calls the discriminator unwrapped with its parameters frozen (no gradient, nothing to
all-reduce), the discriminator's update calls it through its wrapper, so only that backward
all-reduces its gradients. As in LlamaGen, the discriminator's batch norms use each process's
own batch statistics. Video tokenizers (clips (b, c, t, h, w)) get their pixel and perceptual losses per
frame, and their adversarial loss per frame (PatchGAN) or per clip (LARP's video transformer
discriminator); they are told the training progress before each step (LARP's scheduled sampling). The trained tokenizer, without
training-only parts (``Tokenizer.for_inference``, e.g. LARP's prior), is saved as a component folder in
``run.output_dir``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from pathlib import Path
from typing import Any, Sequence

import torch

from arvis.config import Config
from arvis.tokenizers.base import TOKENIZERS, Tokenizer
from arvis.tokenizers.losses import TokenizerLossConfig, VQGANLoss
from arvis.train.checkpoint import save_checkpoint
from arvis.train.loop import (OptimizerUpdate, ProgressLog, RunFolders, apply_gradients, attach_ema, build_dataset,
                              build_optimizer, build_scheduler, check_image_size, final_model, finish_run,
                              make_accelerator, resume_step, step_batches, sync_unless_last)
from arvis.train.options import DataConfig, OptimConfig, RunConfig
from arvis.train.state import TrainingState
from arvis.train.recipe import run_as_script, run_entry_point

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


def micro_batch_generator(purpose: str, seed: int, step: int, micro: int, process: int) -> torch.Generator:
    """The randomness of one micro-batch's ``purpose`` (the tokenizer's own draws, LARP's noisy labels): a
    function of the run's seed, the step, the micro-batch and the process only (a SHA-256 of them, the same in
    every Python version), so a resumed run draws what an uninterrupted one would without saving any state."""
    digest = hashlib.sha256(f"{purpose}:{seed}:{step}:{micro}:{process}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))


def build_tokenizer(config: TokenizerTrainConfig) -> Tokenizer:
    tokenizer = TOKENIZERS.build(config.tokenizer, **config.tokenizer_config)
    check_image_size(tokenizer, config.data)
    return tokenizer


def train_tokenizer(config: TokenizerTrainConfig) -> tuple[Path, list[dict[str, float]]]:
    """Runs the recipe; returns the exported tokenizer folder (``run.output_dir/tokenizer``) and the log."""
    run = config.run
    folders = RunFolders(run, "tokenizer")
    accelerator = make_accelerator(run, folders)
    tokenizer = build_tokenizer(config)
    loss_fn = VQGANLoss(config.loss, in_channels=tokenizer.in_channels, pixel_range=tokenizer.pixel_range,
                        pixel_shape=tokenizer.pixel_shape)
    dataset = build_dataset(config.data)
    optimizer = build_optimizer(tokenizer, config.optim)
    if loss_fn.generator_parameters():
        optimizer.add_param_group({"params": loss_fn.generator_parameters(), "weight_decay": 0.0})
    disc_optimizer = build_optimizer(loss_fn.discriminator, config.disc_optim)
    scheduler = build_scheduler(optimizer, config.optim, run.max_steps)
    disc_scheduler = build_scheduler(disc_optimizer, config.disc_optim, loss_fn.num_discriminator_updates(run.max_steps))
    loss_fn.to(accelerator.device)  # the frozen LPIPS network; the discriminator is prepared below
    model, discriminator, optimizer, disc_optimizer = accelerator.prepare(
        tokenizer, loss_fn.discriminator, optimizer, disc_optimizer)
    state = TrainingState()
    state.register("scheduler", scheduler)
    state.register("disc_scheduler", disc_scheduler)
    state.register("lecam", loss_fn.lecam)
    ema = attach_ema(accelerator, model, run, state)
    start = resume_step(accelerator, run, folders, state)
    accumulation = run.gradient_accumulation_steps
    batches = step_batches(dataset, run, accelerator, start * accumulation)
    logger.info("training %s (%.2fM parameters) on %d images", config.tokenizer,
                tokenizer.num_parameters() / 1e6, len(dataset))
    progress = ProgressLog(accelerator, run, "tokenizer", start, recipe=config)
    generator_params = list(model.parameters()) + loss_fn.generator_parameters()
    model.train()
    loss_fn.train()  # the discriminator; LPIPS only with loss.lpips_dropout (LlamaGen), else it stays in eval
    for step in range(start, run.max_steps):
        train_discriminator = loss_fn.discriminator_update(step)
        tokenizer.set_training_progress(step / run.max_steps)
        disc_logs = {}
        for micro in range(accumulation):
            images, _ = next(batches)
            pixels = tokenizer.from_unit_range(images.to(accelerator.device))
            loss_fn.discriminator.requires_grad_(False)  # the tokenizer's update must not touch D's gradients
            with sync_unless_last(accelerator, model, micro, accumulation):
                with accelerator.autocast():
                    output = model(pixels, generator=micro_batch_generator(
                        "tokenizer", run.seed, step, micro, accelerator.process_index))
                    loss, logs = loss_fn.generator_loss(pixels, output.reconstruction, output.losses, step)
                accelerator.backward(loss / accumulation)
            loss_fn.discriminator.requires_grad_(True)
            if train_discriminator:
                with sync_unless_last(accelerator, discriminator, micro, accumulation):
                    with accelerator.autocast():
                        disc_loss, disc_logs = loss_fn.discriminator_loss(
                            pixels, output.reconstruction, step, discriminator=discriminator,
                            generator=micro_batch_generator("labels", run.seed, step, micro,
                                                            accelerator.process_index))
                    accelerator.backward(disc_loss / accumulation)
        updates = [OptimizerUpdate(optimizer, generator_params, config.optim.grad_clip, scheduler)]
        if train_discriminator:
            updates.append(OptimizerUpdate(disc_optimizer, loss_fn.discriminator_parameters(),
                                           config.disc_optim.grad_clip, disc_scheduler))
        apply_gradients(accelerator, updates)  # both unscaled once, one loss-scale update (fp16)
        if ema is not None:
            ema.update(accelerator.unwrap_model(model))
        progress.update(step + 1, {**logs, **disc_logs, **output.metrics})
        if run.checkpoint_every and (step + 1) % run.checkpoint_every == 0:
            save_checkpoint(accelerator, folders.checkpoints, step + 1, {"kind": "tokenizer"}, run.keep_last, state)
    trained = final_model(accelerator, model, ema)
    output_dir = finish_run(accelerator, progress, folders.export, trained.for_inference().save_pretrained)
    return output_dir, progress.history


def main(argv: Sequence[str] | None = None) -> None:
    run_entry_point(TokenizerTrainConfig, train_tokenizer, "Train an arvis tokenizer.", argv)


if __name__ == "__main__":
    run_as_script(main)
