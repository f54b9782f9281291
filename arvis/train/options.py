"""Config sections shared by every training recipe: data, optimisation, run settings."""

from __future__ import annotations

import dataclasses
from typing import Literal

from arvis.config import Config


@dataclasses.dataclass(frozen=True, kw_only=True)
class DataConfig(Config):
    """What to train on: built-in glyph images or clips, an ImageNet-style image folder or a video folder."""

    name: Literal["glyphs", "folder", "moving_glyphs", "video_folder"] = "glyphs"  # the last two give clips
    root: str | None = None  # folder datasets only
    image_size: int = 32
    num_frames: int = 16  # clips only (moving_glyphs, video_folder)
    num_samples: int = 20000  # glyphs only
    num_classes: int = 10  # glyphs only; folders count their class subfolders
    seed: int = 0  # glyphs only: the dataset's rendering seed
    random_flip: bool = False  # tokenizer training: flip image- and video-folder items at random (glyph data
    # ignores it: its classes are not mirror-symmetric); generator training and pretokenize encode each item and
    # its mirror once instead (LlamaGen's flip augmentation of codes)
    crop: Literal["center", "random"] = "center"  # image folders: "random" is LlamaGen's tokenizer augmentation
    # (shorter side resized to a random 1.0-1.25x of image_size, then a random crop); generator training and
    # pretokenize always centre-crop
    verify_images: Literal["none", "header", "decode"] = "header"  # folder datasets: check every file before
    # training ("header": opens, and is not cut short; "decode" also decodes every file once)

    def __post_init__(self) -> None:
        if self.name in ("folder", "video_folder") and not self.root:
            raise ValueError(f"data.root must name the folder when data.name is {self.name!r}")
        if self.crop == "random" and self.name != "folder":
            raise ValueError(f"data.crop=random applies to image folders (data.name=folder), not {self.name!r}")

    @property
    def is_video(self) -> bool:
        return self.name in ("moving_glyphs", "video_folder")


@dataclasses.dataclass(frozen=True, kw_only=True)
class OptimConfig(Config):
    """AdamW with linear warmup, then a constant, cosine or linear schedule."""

    learning_rate: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 0.0  # applied to weight matrices only, never to norms or biases
    decay_embeddings: bool = False  # LlamaGen also decays embedding tables; True reproduces that
    warmup_steps: int = 0
    schedule: Literal["constant", "cosine", "linear"] = "constant"
    min_lr_ratio: float = 0.0  # final learning rate as a fraction of the peak (cosine / linear)
    grad_clip: float = 1.0  # max global grad norm; 0 disables clipping


@dataclasses.dataclass(frozen=True, kw_only=True)
class RunConfig(Config):
    """Loop settings.

    ``output_dir`` is the run folder: the trained result is exported to a subfolder
    (``tokenizer/`` or ``pipeline/``) and checkpoints go to ``<that name>-checkpoints/``.
    """

    output_dir: str = "outputs/run"
    batch_size: int = 32  # per process and per micro-batch; the global batch is logged
    gradient_accumulation_steps: int = 1
    max_steps: int = 1000  # optimiser steps
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    seed: int = 0
    log_every: int = 50
    progress: bool = True  # progress bar on the main process
    overwrite: bool = False  # allow replacing an earlier export in output_dir
    checkpoint_every: int = 0  # optimiser steps between checkpoints; 0 saves none
    keep_last: int = 2  # complete checkpoints kept (older ones are deleted)
    resume: str = "auto"  # "auto": newest complete checkpoint if any; "never"; or a checkpoint folder
    ema_decay: float = 0.0  # > 0 keeps an EMA of the weights, used for the export
    num_workers: int = 0  # DataLoader worker processes
    trackers: tuple[str, ...] = ()  # accelerate trackers, e.g. ["tensorboard"]; logs go to output_dir/logs
    preview_every: int = 0  # generator training: optimiser steps between sample grids in output_dir/previews

    def __post_init__(self) -> None:
        for name in ("batch_size", "gradient_accumulation_steps", "max_steps", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"run.{name} must be >= 1, got {getattr(self, name)}")
        if self.checkpoint_every < 0 or self.preview_every < 0 or self.keep_last < 1:
            raise ValueError("run.checkpoint_every and run.preview_every must be >= 0, run.keep_last >= 1")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"run.ema_decay must be in [0, 1), got {self.ema_decay}")
