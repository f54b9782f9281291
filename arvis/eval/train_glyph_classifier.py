"""Trains the shipped glyph classifier (the fd-glyphs / glyph-accuracy feature extractor).

Run from the repository root::

    python -m arvis.eval.train_glyph_classifier --out arvis/eval/weights/glyph_classifier.safetensors

Recorded run (the shipped file; 2-core CPU, torch 2.15, ``torch.set_num_threads(2)``):
600 steps of 128 images; training took 180 s, 281 s and 392 s in three runs, depending on
how busy the shared 2 cores were (plus about 3 s of rendering and 20 s of evaluation);
the runs wrote byte-identical files (94,762 parameters, float32, 380,256 bytes), sha256
``6440682e61324a072f6ffd941741e958df662fc904d6c9e204ac91c2efc4553b``.
Held-out accuracy of the saved file on 2,000 renders per condition (dataset seed 9000):
clean 32 px 100.0%, clean 16 px 100.0%, Gaussian blur sigma 1 px 100.0%, degraded
(16 px and back, blur, noise, JPEG q60) 100.0%. Spot checks on 1,000 other renders:
blur sigma 2 px 99.9%, 10 px and back 99.9%, pixel noise sigma 0.1 98.2%, 8 px renders
98.5%, 64 and 128 px renders 100%.

The classifier must recognise *generated* samples, which are blurrier and noisier than
the renders, so every training image passes through :func:`degrade`: random horizontal
flip, colour jitter, down-and-up resizing, Gaussian blur, low-frequency (token-like)
noise, pixel noise, uint8 quantisation and sometimes a real JPEG round trip. Training
images are rendered at 16, 24, 32 and 64 px and resized to the classifier's 32 px like
any input. All randomness comes from explicit ``torch.Generator`` s (initialisation runs
under ``torch.random.fork_rng``), so a run is reproducible and leaves the global RNG alone.
The test sets use a different dataset seed than any training set.

Shapes: b batch, h w image size.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import time
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.io import decode_jpeg, encode_jpeg

from arvis.config import Config
from arvis.data.glyphs import GlyphDataset
from arvis.eval.glyph_classifier import GlyphClassifier, GlyphClassifierConfig

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, kw_only=True)
class GlyphClassifierTrainConfig(Config):
    """Recipe of the shipped glyph classifier.

    Attributes:
        classifier: the architecture.
        seed: seeds initialisation, batch sampling and augmentation.
        train_seed: dataset seed of the training renders (the size index is added per size).
        test_seed: dataset seed of the held-out test renders; must differ from every training seed.
        train_sizes: render sizes of the training pools, in pixels.
        train_samples: images per training pool (same length as ``train_sizes``).
        num_test: held-out images per test condition.
        steps: optimiser steps.
        batch_size: images per step, split over the pools in proportion to their sizes.
        learning_rate: AdamW peak learning rate (linear warmup, cosine decay to zero).
        warmup_steps: linear warmup steps.
        weight_decay: AdamW weight decay.
        label_smoothing: cross-entropy label smoothing.
    """

    classifier: GlyphClassifierConfig = GlyphClassifierConfig()
    seed: int = 0
    train_seed: int = 1000
    test_seed: int = 9000
    train_sizes: tuple[int, ...] = (16, 24, 32, 64)
    train_samples: tuple[int, ...] = (8000, 3000, 12000, 3000)
    num_test: int = 2000
    steps: int = 600
    batch_size: int = 128
    learning_rate: float = 3e-3
    warmup_steps: int = 50
    weight_decay: float = 0.05
    label_smoothing: float = 0.05

    def __post_init__(self) -> None:
        if len(self.train_sizes) != len(self.train_samples) or not self.train_sizes:
            raise ValueError(
                f"train_sizes {self.train_sizes} and train_samples {self.train_samples} must be non-empty "
                "and of the same length"
            )
        if self.train_seed <= self.test_seed < self.train_seed + len(self.train_sizes):
            raise ValueError(f"test_seed {self.test_seed} overlaps the training seeds starting at {self.train_seed}")
        for name in ("num_test", "steps", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"GlyphClassifierTrainConfig.{name} must be positive, got {getattr(self, name)}")


def to_uint8(images: Tensor) -> Tensor:
    """float (b, 3, h, w) in [0, 1] -> uint8, rounded."""
    return (images.clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)


def gaussian_blur(images: Tensor, sigma: Tensor, radius: int = 3) -> Tensor:
    """Separable Gaussian blur with one ``sigma`` (b,) in pixels per image; float (b, 3, h, w)."""
    batch, channels, height, width = images.shape
    offsets = torch.arange(-radius, radius + 1, dtype=images.dtype)
    kernel = torch.exp(-offsets.square() / (2.0 * sigma.clamp_min(1e-3)[:, None].square()))
    kernel = (kernel / kernel.sum(dim=1, keepdim=True)).repeat_interleave(channels, dim=0)  # (b * 3, k)
    x = images.reshape(1, batch * channels, height, width)
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="reflect"), kernel[:, None, None, :], groups=batch * channels)
    x = F.conv2d(F.pad(x, (0, 0, radius, radius), mode="reflect"), kernel[:, None, :, None], groups=batch * channels)
    return x.reshape(batch, channels, height, width)


def resize(images: Tensor, size: int) -> Tensor:
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


def jpeg_round_trip(images: Tensor, quality: int) -> Tensor:
    """uint8 (b, 3, h, w) -> the same after JPEG encoding at ``quality`` and decoding."""
    if len(images) == 0:
        return images
    return torch.stack(decode_jpeg(encode_jpeg(list(images), quality=quality)))


def degrade(images: Tensor, generator: torch.Generator) -> Tensor:
    """The training augmentation: float (b, 3, h, w) in [0, 1] -> uint8 (b, 3, h, w).

    Each step is applied to a random subset of the batch with its own random strength.
    """
    batch, _, height, width = images.shape

    def uniform(low: float, high: float, *shape: int) -> Tensor:
        return low + (high - low) * torch.rand(shape or (batch,), generator=generator)

    def chosen(probability: float) -> Tensor:
        return torch.rand(batch, generator=generator) < probability

    flip = chosen(0.5)
    images = torch.where(flip[:, None, None, None], images.flip(-1), images)
    gain = uniform(0.85, 1.15)[:, None, None, None] * uniform(0.92, 1.08, batch, 3)[:, :, None, None]
    images = (images * gain + uniform(-0.04, 0.04, batch, 3)[:, :, None, None]).clamp(0.0, 1.0)
    rescaled = chosen(0.3)
    if rescaled.any():
        small = int(torch.randint(max(8, height // 3), height, (1,), generator=generator))
        images[rescaled] = resize(resize(images[rescaled], small), height)
    blurred = chosen(0.5)
    if blurred.any():
        images[blurred] = gaussian_blur(images[blurred], uniform(0.2, 1.3 * height / 32)[blurred])
    token_noise = chosen(0.3)
    if token_noise.any():
        grid = max(2, height // 8)
        noise = torch.randn(batch, 3, grid, grid, generator=generator) * uniform(0.0, 0.08)[:, None, None, None]
        images = images + token_noise[:, None, None, None] * resize(noise, height)
    images = images + torch.randn(images.shape, generator=generator) * (chosen(0.5) * uniform(0.0, 0.05))[:, None,
                                                                                                           None, None]
    quantised = to_uint8(images)
    jpeg = chosen(0.25)
    if jpeg.any():
        quality = int(torch.randint(30, 95, (1,), generator=generator))
        quantised[jpeg] = jpeg_round_trip(quantised[jpeg], quality)
    return quantised


@torch.inference_mode()
def accuracy(classifier: GlyphClassifier, images: Tensor, labels: Tensor, batch_size: int = 500) -> float:
    """Fraction of uint8 images (n, 3, h, w) classified as their labels (n,)."""
    correct = 0
    for start in range(0, len(images), batch_size):
        logits = classifier.logits(images[start:start + batch_size])
        correct += int((logits.argmax(dim=1).cpu() == labels[start:start + batch_size]).sum())
    return correct / len(images)


def held_out_sets(config: GlyphClassifierTrainConfig) -> dict[str, tuple[Tensor, Tensor]]:
    """Named uint8 test sets rendered with ``test_seed``: clean at 32 and 16 px, and degraded at 32 px.

    ``blur_32px``: Gaussian blur sigma 1 px. ``degraded_32px``: down to 16 px and back up, blur sigma
    0.7 px, pixel noise sigma 0.03 and a JPEG round trip at quality 60 (a rough VQ-decoder look).
    """
    num_classes = config.classifier.num_classes
    clean_32, labels = GlyphDataset(config.num_test, image_size=32, seed=config.test_seed,
                                    num_classes=num_classes).tensors()
    clean_16, labels_16 = GlyphDataset(config.num_test, image_size=16, seed=config.test_seed,
                                       num_classes=num_classes).tensors()
    noise = torch.randn(clean_32.shape, generator=torch.Generator().manual_seed(config.test_seed))
    blurred = gaussian_blur(clean_32, torch.full((len(clean_32),), 1.0))
    degraded = gaussian_blur(resize(resize(clean_32, 16), 32), torch.full((len(clean_32),), 0.7)) + 0.03 * noise
    return {
        "clean_32px": (to_uint8(clean_32), labels),
        "clean_16px": (to_uint8(clean_16), labels_16),
        "blur_32px": (to_uint8(blurred), labels),
        "degraded_32px": (jpeg_round_trip(to_uint8(degraded), 60), labels),
    }


def train_glyph_classifier(config: GlyphClassifierTrainConfig) -> tuple[GlyphClassifier, dict]:
    """Trains a classifier from scratch; returns it (eval mode) and a report with held-out accuracies."""
    started = time.perf_counter()
    num_classes = config.classifier.num_classes
    pools = []
    for index, (size, count) in enumerate(zip(config.train_sizes, config.train_samples, strict=True)):
        pools.append(GlyphDataset(count, image_size=size, seed=config.train_seed + index,
                                  num_classes=num_classes).tensors())
    total = sum(config.train_samples)
    per_pool = [max(1, round(config.batch_size * count / total)) for count in config.train_samples]
    render_seconds = time.perf_counter() - started

    generator = torch.Generator().manual_seed(config.seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        classifier = GlyphClassifier(config.classifier)
    optimizer = torch.optim.AdamW(classifier.parameters(), lr=config.learning_rate,
                                  weight_decay=config.weight_decay)

    def learning_rate(step: int) -> float:
        if step < config.warmup_steps:
            return (step + 1) / config.warmup_steps
        progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, learning_rate)
    classifier.train()
    for step in range(config.steps):
        pixels, labels = [], []
        for (images, pool_labels), count in zip(pools, per_pool, strict=True):
            rows = torch.randint(len(images), (count,), generator=generator)
            pixels.append(classifier.preprocess(degrade(images[rows], generator)))
            labels.append(pool_labels[rows])
        _, logits = classifier(torch.cat(pixels))
        loss = F.cross_entropy(logits, torch.cat(labels), label_smoothing=config.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % 100 == 0 or step == config.steps - 1:
            logger.info("step %d/%d loss %.4f", step, config.steps, loss.item())
    classifier.eval()
    train_seconds = time.perf_counter() - started

    report = {
        "render_seconds": round(render_seconds, 1),
        "train_seconds": round(train_seconds, 1),
        "num_parameters": sum(p.numel() for p in classifier.parameters()),
        "held_out_accuracy": {name: accuracy(classifier, images, labels)
                              for name, (images, labels) in held_out_sets(config).items()},
    }
    return classifier, report


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Train the built-in glyph classifier (fd-glyphs extractor).")
    parser.add_argument("--out", type=Path, required=True, help="safetensors file to write")
    parser.add_argument("--steps", type=int, default=None, help="override the recipe's optimiser steps")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (the recorded run used 2)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    config = GlyphClassifierTrainConfig()
    if args.steps is not None:
        config = config.replace(steps=args.steps)
    classifier, report = train_glyph_classifier(config)
    # Accuracy of the file as written (a round trip through safetensors), not of the in-memory model.
    path = classifier.save(args.out)
    reloaded = GlyphClassifier.load(path)
    report["held_out_accuracy"] = {name: accuracy(reloaded, images, labels)
                                   for name, (images, labels) in held_out_sets(config).items()}
    report.update(out=str(path), bytes=path.stat().st_size, sha256=reloaded.weights_sha256())
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
