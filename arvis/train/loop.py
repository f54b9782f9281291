"""Pieces every training entry point shares: accelerator, data, optimiser, schedule, logging.

Library code stays free of distributed state; only these helpers and the entry
points talk to ``accelerate``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import json
import logging
import math
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from PIL import Image
from accelerate import Accelerator
from accelerate.optimizer import AcceleratedOptimizer
from accelerate.state import AcceleratorState
from accelerate.utils import DistributedType, send_to_device, set_seed
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from arvis.config import Config
from arvis.train.batches import StepBatchSampler
from arvis.folders import check_replaceable
from arvis.modeling import legacy_component_rule
from arvis.pipeline import legacy_pipeline_files
from arvis.train.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from arvis.train.ema import EMA
from arvis.train.state import TrainingState
from arvis.train.options import DataConfig, OptimConfig, RunConfig

logger = logging.getLogger(__name__)


class RunFolders:
    """Where a run writes: the export (``output_dir/<name>``) and its checkpoints (``<name>-checkpoints``).

    ``legacy`` recognises exports saved before arvis wrote manifests (:mod:`arvis.folders`): a component folder
    for ``tokenizer``, a pipeline folder for ``pipeline``.
    """

    def __init__(self, run: RunConfig, export_name: str) -> None:
        self.root = Path(run.output_dir)
        self.export = self.root / export_name
        self.checkpoints = self.root / f"{export_name}-checkpoints"
        self.kind = export_name  # "tokenizer" or "pipeline", what the export folder holds
        self.legacy = legacy_pipeline_files if export_name == "pipeline" else legacy_component_rule(export_name)

    def check_writable(self, overwrite: bool) -> None:
        """Raises ``ValueError`` before any training if the run could not save its result or checkpoints: the run
        folder or the checkpoint folder is a file, or the export exists (without ``overwrite``) or cannot be
        replaced (it is not an arvis save, or holds files arvis did not write)."""
        for folder in (self.root, self.checkpoints):
            if folder.exists() and not folder.is_dir():
                raise ValueError(f"run.output_dir: {folder} is a file, not a folder; choose another run.output_dir")
        if self.export.exists() or self.export.is_symlink():
            if not overwrite:
                raise ValueError(f"{self.export} already holds a trained result; set run.overwrite=true or choose "
                                 "another run.output_dir")
            check_replaceable(self.export, self.kind, self.legacy)


def make_accelerator(run: RunConfig, folders: RunFolders) -> Accelerator:
    """An ``Accelerator`` for the run, after checking that the run may write where it is told to.

    accelerate keeps its settings in process-wide state; each run sets them afresh so that runs
    with different precision can follow each other in one process (the quickstart chains two).
    The distributed part of that state is kept.
    Gradient accumulation is done by the loop itself (see :func:`sync_unless_last`).
    """
    folders.check_writable(run.overwrite)
    for tracker in run.trackers:
        if tracker == "tensorboard" and importlib.util.find_spec("tensorboard") is None:
            raise ValueError("run.trackers names tensorboard, which is not installed: pip install tensorboard")
    AcceleratorState._reset_state()
    accelerator = Accelerator(mixed_precision=run.mixed_precision, cpu=not torch.cuda.is_available(),
                              log_with=list(run.trackers) or None, project_dir=str(folders.root / "logs"))
    if accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED):
        raise ValueError(
            f"this launch uses {accelerator.distributed_type.value}, which shards parameters; arvis's export and "
            "EMA read whole parameters on each process and are only tested with data parallelism (DDP). "
            "Launch with a multi-GPU (DDP) accelerate config instead"
        )
    set_seed(run.seed, device_specific=True)
    return accelerator


def resume_step(accelerator: Accelerator, run: RunConfig, folders: RunFolders, state: TrainingState) -> int:
    """Restores the checkpoint that ``run.resume`` selects (models, optimisers, RNG, and ``state``: schedules,
    EMA, ...), reading only files that cannot run code (:mod:`arvis.train.checkpoint`).

    Returns the optimiser step to continue from (0 for a fresh run).
    """
    if run.resume == "never":
        return 0
    checkpoint = latest_checkpoint(folders.checkpoints) if run.resume == "auto" else Path(run.resume)
    if checkpoint is None:
        return 0
    step = load_checkpoint(accelerator, checkpoint, state)
    logger.info("resumed from %s at step %d", checkpoint, step)
    return step


def step_batches(dataset: Dataset, run: RunConfig, accelerator: Accelerator, start_micro_step: int) -> Iterator:
    """This process's micro-batches from ``start_micro_step`` on, in the run's deterministic order."""
    sampler = StepBatchSampler(len(dataset), run.batch_size, seed=run.seed, start=start_micro_step,
                               num_processes=accelerator.num_processes, process_index=accelerator.process_index)
    # Its own generator: creating the iterator must not draw from the global RNG, whose state a resume restores.
    worker_seeds = torch.Generator().manual_seed(run.seed + start_micro_step)
    return iter(DataLoader(dataset, batch_sampler=sampler, num_workers=run.num_workers, generator=worker_seeds))


def global_batch_size(run: RunConfig, accelerator: Accelerator) -> int:
    return run.batch_size * run.gradient_accumulation_steps * accelerator.num_processes


def build_dataset(config: DataConfig) -> Dataset:
    """The training data described by ``config``: items are (image (3, h, w) or clip (3, t, h, w) in [0, 1], label)."""
    from arvis.data import GlyphDataset, ImageFolderDataset, MovingGlyphDataset, VideoFolderDataset

    if config.name == "glyphs":
        return GlyphDataset(config.num_samples, image_size=config.image_size, seed=config.seed,
                            num_classes=config.num_classes)
    if config.name == "moving_glyphs":
        return MovingGlyphDataset(config.num_samples, image_size=config.image_size, num_frames=config.num_frames,
                                  seed=config.seed, num_classes=config.num_classes)
    if config.name == "video_folder":
        return VideoFolderDataset(config.root, num_frames=config.num_frames, image_size=config.image_size,
                                  random_flip=config.random_flip)
    return ImageFolderDataset(config.root, config.image_size, random_flip=config.random_flip, crop=config.crop,
                              verify=config.verify_images)


def check_image_size(tokenizer, data: DataConfig) -> None:
    """Raises ``ValueError`` if the data's image size (or clip length, or images versus clips) is not the tokenizer's."""
    if tokenizer.image_size != (data.image_size, data.image_size):
        raise ValueError(
            f"the tokenizer takes {tokenizer.image_size} images but data.image_size is {data.image_size}; "
            "set data.image_size (or the tokenizer's image_size) to match"
        )
    takes_clips = len(tokenizer.pixel_shape) == 4
    if takes_clips != data.is_video:
        raise ValueError(
            f"the tokenizer takes {'clips' if takes_clips else 'images'} but data.name={data.name!r} gives "
            f"{'clips' if data.is_video else 'images'}; use "
            f"{'data.name=moving_glyphs or video_folder' if takes_clips else 'data.name=glyphs or folder'}"
        )
    if takes_clips and tokenizer.pixel_shape[1] != data.num_frames:
        raise ValueError(f"the tokenizer takes clips of {tokenizer.pixel_shape[1]} frames but data.num_frames is "
                         f"{data.num_frames}; set data.num_frames to match")


def dataset_num_classes(dataset: Dataset) -> int:
    return len(dataset.class_names)


def check_dataset_classes(dataset: Dataset, generator) -> None:
    """``ValueError`` unless a class-conditional ``generator`` models as many classes as ``dataset`` has (a
    text-conditional one is not checked)."""
    if "labels" in generator.condition_fields and dataset_num_classes(dataset) != generator.num_classes:
        raise ValueError(f"the data has {dataset_num_classes(dataset)} classes but the generator models "
                         f"{generator.num_classes}; train on the classes it was trained on")


def build_optimizer(model: nn.Module, config: OptimConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on weight matrices only: never norms or biases, embeddings only if configured.

    A model may name more parameters to exempt with ``no_weight_decay()`` (e.g. VAR's position tables), and
    give parts of itself their own learning rate with ``learning_rate_multipliers()``: parameter-name
    prefixes to factors of ``learning_rate`` (e.g. LARP's ``{"prior.": 50.0}``).
    """
    no_decay_ids = set() if config.decay_embeddings else {
        id(param) for module in model.modules() if isinstance(module, nn.Embedding) for param in module.parameters()
    }
    exempt = model.no_weight_decay() if hasattr(model, "no_weight_decay") else set()
    no_decay_ids |= {id(param) for name, param in model.named_parameters() if name in exempt}
    multipliers = model.learning_rate_multipliers() if hasattr(model, "learning_rate_multipliers") else {}
    groups: dict[tuple[bool, float], list[nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        decays = param.ndim >= 2 and id(param) not in no_decay_ids
        factor = next((value for prefix, value in multipliers.items() if name.startswith(prefix)), 1.0)
        groups.setdefault((decays, factor), []).append(param)
    param_groups = [{"params": params, "weight_decay": config.weight_decay if decays else 0.0,
                     "lr": config.learning_rate * factor}
                    for (decays, factor), params in sorted(groups.items(), key=lambda item: (not item[0][0], item[0][1]))]
    return torch.optim.AdamW(param_groups, lr=config.learning_rate, betas=config.betas)


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


@dataclasses.dataclass
class OptimizerUpdate:
    """One optimiser's part of an iteration: its (prepared) optimiser, the parameters to clip, the clipping
    norm (0: none) and its learning-rate schedule (None: none)."""

    optimizer: torch.optim.Optimizer
    parameters: list[nn.Parameter]
    grad_clip: float = 0.0
    scheduler: Any = None


def apply_gradients(accelerator: Accelerator, updates: Sequence[OptimizerUpdate]) -> None:
    """After every backward pass of an iteration: unscale, clip, step, schedule and zero grad each optimiser.

    With fp16 accelerate has one GradScaler for all optimisers, and every loss of the iteration was scaled by
    the same factor. Following torch's recipe for several optimisers, each optimiser's gradients are unscaled
    exactly once, each optimiser steps (skipped where its own gradients overflowed), and the scale is updated
    once, after all of them. (``accelerator.clip_grad_norm_`` would unscale every prepared optimiser at each
    call, and an ``update()`` between two optimisers' steps would reset their unscaled state, so a
    discriminator clipped after the generator's step was divided by the scale twice.) Clipping is
    ``torch.nn.utils.clip_grad_norm_`` on the unscaled gradients, which is what accelerate does for the
    data-parallel launches arvis supports.
    """
    scaler = accelerator.scaler
    for update in updates:
        if scaler is not None:
            scaler.unscale_(_bare_optimizer(update.optimizer))
        if update.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(update.parameters, update.grad_clip)
    for update in updates:
        if scaler is not None:
            scaler.step(_bare_optimizer(update.optimizer))  # accelerate's wrapper would update() after each
        else:
            update.optimizer.step()
        if update.scheduler is not None:
            update.scheduler.step()
        update.optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.update()


def _bare_optimizer(optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """The torch optimiser inside accelerate's wrapper(s)."""
    while isinstance(optimizer, AcceleratedOptimizer):
        optimizer = optimizer.optimizer
    return optimizer


def sync_unless_last(accelerator: Accelerator, model: nn.Module, micro: int, num_micro: int):
    """Gradient all-reduce only on the last micro-batch of an accumulation (a no-op on one process)."""
    return accelerator.no_sync(model) if micro < num_micro - 1 else contextlib.nullcontext()


@dataclasses.dataclass
class Training:
    """What :func:`prepare_training` returns: the prepared model and optimiser, the schedule, the EMA (or None),
    the state saved with checkpoints and the optimiser step to start from."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    ema: EMA | None
    state: TrainingState
    start: int


def prepare_training(accelerator: Accelerator, module: nn.Module, optim: OptimConfig, run: RunConfig,
                     folders: RunFolders) -> Training:
    """Optimiser, schedule, accelerate wrapping, optional EMA and resume for one trained module."""
    optimizer = build_optimizer(module, optim)
    scheduler = build_scheduler(optimizer, optim, run.max_steps)
    model, optimizer = accelerator.prepare(module, optimizer)
    state = TrainingState()
    state.register("scheduler", scheduler)
    ema = attach_ema(accelerator, model, run, state)
    return Training(model, optimizer, scheduler, ema, state, resume_step(accelerator, run, folders, state))


def attach_ema(accelerator: Accelerator, model: nn.Module, run: RunConfig, state: TrainingState) -> EMA | None:
    """An EMA of the prepared ``model`` (after accelerate's broadcast), saved with checkpoints as part of
    ``state``; None when ``run.ema_decay`` is 0."""
    if run.ema_decay <= 0:
        return None
    ema = EMA(accelerator.unwrap_model(model), run.ema_decay)
    state.register("ema", ema)
    return ema


def final_model(accelerator: Accelerator, model: nn.Module, ema: EMA | None) -> nn.Module:
    """The trained model to export: unwrapped, in eval mode, checked equal on every process, with the EMA
    weights copied in when there is an EMA."""
    trained = accelerator.unwrap_model(model).eval()
    check_processes_agree(accelerator, trained)
    if ema is not None:
        ema.copy_to(trained)
    return trained


def fit(accelerator: Accelerator, training: Training, batches: Iterator,
        compute_loss: Callable[[nn.Module, list[torch.Tensor]], tuple[torch.Tensor, dict[str, Any]]], *,
        run: RunConfig, grad_clip: float, folders: RunFolders, progress: ProgressLog, kind: str,
        before_step: Callable[[int], None] | None = None, after_step: Callable[[int], None] | None = None) -> None:
    """The optimisation loop of generator training and post-training, from optimiser step ``training.start``.

    Each step calls ``before_step(step)`` (0-based), runs ``run.gradient_accumulation_steps`` micro-batches from
    ``batches`` (tuples or dicts of tensors, moved to the device) through ``compute_loss(model, batch) -> (loss,
    metrics)`` under autocast, then clips, steps the optimiser and the schedule, updates the EMA, logs,
    checkpoints every ``run.checkpoint_every`` steps (metadata ``{"kind": kind}``) and calls
    ``after_step(step + 1)`` (the number of steps done).
    """
    accumulation = run.gradient_accumulation_steps
    model, ema = training.model, training.ema
    update = OptimizerUpdate(training.optimizer, list(model.parameters()), grad_clip, training.scheduler)
    model.train()
    for step in range(training.start, run.max_steps):
        if before_step is not None:
            before_step(step)
        for micro in range(accumulation):
            batch = send_to_device(next(batches), accelerator.device)
            with sync_unless_last(accelerator, model, micro, accumulation):
                with accelerator.autocast():
                    loss, metrics = compute_loss(model, batch)
                accelerator.backward(loss / accumulation)
        apply_gradients(accelerator, [update])
        if ema is not None:
            ema.update(accelerator.unwrap_model(model))
        progress.update(step + 1, {"loss": loss.detach(), **metrics})
        if run.checkpoint_every and (step + 1) % run.checkpoint_every == 0:
            save_checkpoint(accelerator, folders.checkpoints, step + 1, {"kind": kind}, run.keep_last, training.state)
        if after_step is not None:
            after_step(step + 1)


class ProgressLog:
    """Main-process progress bar, periodic log lines with loss values and throughput, and the trackers.

    With ``run.trackers`` set, the trackers are started here (project ``description``) with the
    recipe's flattened fields as hyper-parameters; values and images go to them from then on.
    """

    def __init__(self, accelerator: Accelerator, run: RunConfig, description: str, start_step: int = 0, *,
                 recipe: Config | None = None) -> None:
        if run.trackers:
            accelerator.init_trackers(description, config=flatten_recipe(recipe) if recipe is not None else None)
        self.accelerator = accelerator
        self.run = run
        self.start_step = start_step
        self.global_batch = global_batch_size(run, accelerator)
        self.bar = tqdm(total=run.max_steps, initial=start_step, desc=description,
                        disable=not (run.progress and accelerator.is_main_process))
        self.start = time.perf_counter()
        self.history: list[dict[str, float]] = []
        if accelerator.is_main_process:
            logger.info("%s: global batch %d (%d per process x %d accumulation x %d processes), steps %d..%d",
                        description, self.global_batch, run.batch_size, run.gradient_accumulation_steps,
                        accelerator.num_processes, start_step, run.max_steps)

    def update(self, step: int, values: dict[str, torch.Tensor | float]) -> None:
        """Records ``values`` after optimiser step ``step`` (1-based).

        Tensors are read (a device sync) only on logging steps.
        """
        self.bar.update(1)
        if step % self.run.log_every and step not in (1, self.run.max_steps):
            return
        values = {name: self._mean_over_processes(value) for name, value in values.items()}
        elapsed = time.perf_counter() - self.start
        record = {"step": step, **values,
                  "images_per_second": (step - self.start_step) * self.global_batch / elapsed}
        self.history.append(record)
        if self.run.trackers:
            self.accelerator.log(values, step=step)
        self.bar.set_postfix({k: f"{v:.4g}" for k, v in values.items()})
        if self.accelerator.is_main_process:
            logger.info(" ".join(f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()))

    def log_image(self, name: str, image: Image.Image, step: int) -> None:
        """Sends ``image`` to the trackers that take images (main process only)."""
        if not self.accelerator.is_main_process:
            return
        for tracker in self.accelerator.trackers:
            if tracker.name == "tensorboard":
                tracker.log_images({name: np.asarray(image)[None]}, step=step, dataformats="NHWC")
            elif hasattr(tracker, "log_images"):
                tracker.log_images({name: [image]}, step=step)

    def _mean_over_processes(self, value: torch.Tensor | float) -> float:
        """The value averaged over processes (a collective: every process logs on the same steps)."""
        if self.accelerator.num_processes == 1:
            return float(value)
        tensor = torch.as_tensor(value, dtype=torch.float32, device=self.accelerator.device).reshape(1)
        return float(self.accelerator.reduce(tensor, reduction="mean"))

    def close(self) -> None:
        self.bar.close()


def flatten_recipe(recipe: Config) -> dict[str, bool | int | float | str | None]:
    """The recipe as ``{"section.field": scalar}`` (lists and dicts as their JSON text), for trackers."""
    flat: dict[str, bool | int | float | str | None] = {}

    def visit(prefix: str, value) -> None:
        if isinstance(value, dict) and value and all(isinstance(key, str) for key in value):
            for key, item in value.items():
                visit(f"{prefix}.{key}" if prefix else key, item)
        elif value is None or isinstance(value, (bool, int, float, str)):
            flat[prefix] = value
        else:
            flat[prefix] = json.dumps(value)

    visit("", recipe.to_dict())
    return flat


def check_processes_agree(accelerator: Accelerator, model: nn.Module) -> None:
    """Raises ``RuntimeError`` if the processes of a data-parallel run ended with different weights."""
    if accelerator.num_processes == 1:
        return
    checksum = torch.stack([p.detach().double().sum() for p in model.parameters()]).sum()
    gathered = accelerator.gather(checksum.reshape(1).to(accelerator.device))
    if not torch.all(gathered == gathered[0]):
        raise RuntimeError(f"processes ended with different weights (parameter checksums {gathered.tolist()})")
    if accelerator.is_main_process:
        logger.info("weights identical on %d processes (checksum %.12g)", accelerator.num_processes, gathered[0])


def finish_run(accelerator: Accelerator, progress: ProgressLog, export: Path, save: Callable[[Path], None]) -> Path:
    """Closes the progress bar, lets the main process ``save`` the export, ends training."""
    progress.close()
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        save(export)
        logger.info("saved to %s", export)
    accelerator.end_training()
    return export
