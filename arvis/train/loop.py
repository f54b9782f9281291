"""Pieces every training entry point shares: accelerator, data, optimiser, schedule, logging.

Library code stays free of distributed state; only these helpers and the entry
points talk to ``accelerate``.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Callable, Iterator

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import set_seed
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from arvis.train.options import DataConfig, OptimConfig, RunConfig

logger = logging.getLogger(__name__)


def check_output_dir(run: RunConfig) -> None:
    """Refuses to start a run whose ``output_dir`` already holds files, unless ``run.overwrite``."""
    output_dir = Path(run.output_dir)
    if not run.overwrite and output_dir.is_dir() and any(output_dir.iterdir()):
        raise ValueError(
            f"run.output_dir {output_dir} already holds files; choose another folder or set run.overwrite=true"
        )


def make_accelerator(run: RunConfig) -> Accelerator:
    """An ``Accelerator`` for the run's mixed precision, with the global seed set (device-specific).

    accelerate keeps its settings in process-wide state; each run sets them afresh so that runs
    with different precision can follow each other in one process (the quickstart chains two).
    The distributed part of that state is kept. Multi-process runs are refused for now: the
    tokenizer's discriminator is not synchronised and no multi-process run is tested yet.
    """
    check_output_dir(run)
    AcceleratorState._reset_state()
    accelerator = Accelerator(mixed_precision=run.mixed_precision, cpu=not torch.cuda.is_available())
    if accelerator.num_processes > 1:
        raise ValueError(
            f"multi-process training ({accelerator.num_processes} processes) is not supported yet; launch one process"
        )
    set_seed(run.seed, device_specific=True)
    return accelerator


def build_dataset(config: DataConfig) -> Dataset:
    """The training images described by ``config``: items are (image (3, h, w) in [0, 1], label)."""
    from arvis.data import GlyphDataset, ImageFolderDataset

    if config.name == "glyphs":
        return GlyphDataset(config.num_samples, image_size=config.image_size, seed=config.seed,
                            num_classes=config.num_classes)
    return ImageFolderDataset(config.root, config.image_size, random_flip=config.random_flip)


def check_image_size(tokenizer, data: DataConfig) -> None:
    """Raises ``ValueError`` if the data's image size is not the tokenizer's."""
    if tokenizer.image_size != (data.image_size, data.image_size):
        raise ValueError(
            f"the tokenizer takes {tokenizer.image_size} images but data.image_size is {data.image_size}; "
            "set data.image_size (or the tokenizer's image_size) to match"
        )


def dataset_num_classes(dataset: Dataset) -> int:
    return len(dataset.class_names)


def infinite_batches(loader: DataLoader) -> Iterator:
    """Cycles over ``loader`` forever (a new shuffle each epoch)."""
    while True:
        yield from loader


def build_optimizer(model: nn.Module, config: OptimConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on weight matrices only: never norms or biases, embeddings only if configured."""
    no_decay_ids = set() if config.decay_embeddings else {
        id(param) for module in model.modules() if isinstance(module, nn.Embedding) for param in module.parameters()
    }
    decay, no_decay = [], []
    for param in model.parameters():
        if not param.requires_grad:
            continue
        (decay if param.ndim >= 2 and id(param) not in no_decay_ids else no_decay).append(param)
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=config.learning_rate, betas=config.betas)


def lr_multiplier(step: int, config: OptimConfig, max_steps: int) -> float:
    """Learning-rate factor at ``step``: linear warmup, then constant / cosine / linear decay to min_lr_ratio."""
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    if config.schedule == "constant":
        return 1.0
    progress = min(1.0, (step - config.warmup_steps) / max(1, max_steps - config.warmup_steps))
    shape = 0.5 * (1 + math.cos(math.pi * progress)) if config.schedule == "cosine" else 1.0 - progress
    return config.min_lr_ratio + (1.0 - config.min_lr_ratio) * shape


def build_scheduler(optimizer: torch.optim.Optimizer, config: OptimConfig, max_steps: int):
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_multiplier(step, config, max_steps))


def optimizer_step(accelerator: Accelerator, loss: torch.Tensor, optimizer: torch.optim.Optimizer,
                   parameters, grad_clip: float, scheduler=None) -> float | None:
    """Backward, optional clipping, step, zero grad; returns the gradient norm when clipping."""
    accelerator.backward(loss)
    grad_norm = None
    if grad_clip > 0:
        grad_norm = float(accelerator.clip_grad_norm_(parameters, grad_clip))
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return grad_norm


class ProgressLog:
    """Main-process progress bar and periodic log lines with loss values and throughput."""

    def __init__(self, accelerator: Accelerator, run: RunConfig, description: str) -> None:
        self.accelerator = accelerator
        self.run = run
        self.bar = tqdm(total=run.max_steps, desc=description,
                        disable=not (run.progress and accelerator.is_main_process))
        self.start = time.perf_counter()
        self.history: list[dict[str, float]] = []

    def update(self, step: int, values: dict[str, torch.Tensor | float]) -> None:
        """Records ``values`` after optimiser step ``step`` (1-based).

        Tensors are read (a device sync) only on logging steps.
        """
        self.bar.update(1)
        if step % self.run.log_every and step not in (1, self.run.max_steps):
            return
        values = {name: float(value) for name, value in values.items()}
        elapsed = time.perf_counter() - self.start
        record = {"step": step, **values, "images_per_second": step * self.run.batch_size / elapsed}
        self.history.append(record)
        self.bar.set_postfix({k: f"{v:.4g}" for k, v in values.items()})
        if self.accelerator.is_main_process:
            logger.info(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()))

    def close(self) -> None:
        self.bar.close()


def finish_run(accelerator: Accelerator, progress: ProgressLog, output_dir: str | Path,
               save: Callable[[Path], None]) -> Path:
    """Closes the progress bar, lets the main process ``save`` into ``output_dir`` and ends training."""
    progress.close()
    output_dir = Path(output_dir)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        save(output_dir)
        logger.info("saved to %s", output_dir)
    accelerator.end_training()
    return output_dir
