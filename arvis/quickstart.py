"""``arvis quickstart``: train the demo tokenizer and generator on the built-in glyphs, then sample.

The two recipes below are the defaults; ``configs/quickstart_tokenizer.yaml`` and
``configs/quickstart_generator.yaml`` spell them out (a test keeps them equal), so
``python -m arvis.train.tokenizer --config configs/quickstart_tokenizer.yaml`` runs
the same first stage by hand.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch

from arvis.api import generate, load
from arvis.data import GLYPH_CLASSES, GlyphDataset
from arvis.pipeline_metadata import TrainingStage
from arvis.tokenizers.losses import TokenizerLossConfig
from arvis.train.generator import GeneratorTrainConfig, train_generator
from arvis.train.options import DataConfig, OptimConfig, RunConfig
from arvis.train.tokenizer import TokenizerTrainConfig, train_tokenizer
from arvis.visualize import image_grid

logger = logging.getLogger(__name__)

QUICKSTART_DATA = DataConfig(name="glyphs", image_size=32, num_samples=20000, num_classes=10, seed=0)

QUICKSTART_TOKENIZER = TokenizerTrainConfig(
    tokenizer="vq-demo",
    loss=TokenizerLossConfig(perceptual_weight=0.0, disc_start=100000),
    data=QUICKSTART_DATA,
    optim=OptimConfig(learning_rate=1e-3, betas=(0.9, 0.95), warmup_steps=20, schedule="cosine",
                      min_lr_ratio=0.05),
    run=RunConfig(output_dir=".", batch_size=32, max_steps=500, log_every=100),
)

QUICKSTART_GENERATOR = GeneratorTrainConfig(
    generator="raster-demo",
    data=QUICKSTART_DATA,
    optim=OptimConfig(learning_rate=2e-3, weight_decay=0.05, warmup_steps=50, schedule="cosine",
                      min_lr_ratio=0.05),
    sampling={"temperature": 1.0, "top_k": 0, "top_p": 0.9, "cfg_scale": 2.0, "cfg_schedule": "constant"},
    run=RunConfig(output_dir=".", batch_size=64, max_steps=1200, log_every=100),
)

SAMPLES_PER_CLASS = 10


def run_quickstart(output_dir: str | Path = "arvis-quickstart", *, tokenizer_steps: int | None = None,
                   generator_steps: int | None = None, progress: bool = True, overwrite: bool = False) -> dict:
    """Trains both stages into ``output_dir``, writes ``samples.png`` and stores the report (training times, final
    losses, glyph metrics) and both recipes in the pipeline folder (``metrics.json``, ``recipe.json``); returns
    the report.

    An ``output_dir`` that already holds files is refused unless ``overwrite``.
    """
    output_dir = Path(output_dir)
    if not overwrite and output_dir.is_dir() and any(output_dir.iterdir()):
        raise ValueError(f"{output_dir} already holds files; choose another --output-dir or pass --overwrite")
    tokenizer_recipe = _in_folder(QUICKSTART_TOKENIZER, output_dir, tokenizer_steps, progress, overwrite)
    start = time.perf_counter()
    tokenizer_path, tokenizer_history = train_tokenizer(tokenizer_recipe)
    tokenizer_seconds = time.perf_counter() - start
    generator_recipe = _in_folder(QUICKSTART_GENERATOR, output_dir, generator_steps, progress, overwrite)
    generator_recipe = generator_recipe.replace(tokenizer_path=str(tokenizer_path))
    start = time.perf_counter()
    pipeline_path, generator_history = train_generator(generator_recipe)
    generator_seconds = time.perf_counter() - start

    pipeline = load(pipeline_path)
    num_classes = pipeline.generator.num_classes
    images = generate(pipeline, class_labels=list(range(num_classes)), num_samples=SAMPLES_PER_CLASS, seed=0,
                      output_type="pt")
    grid_path = output_dir / "samples.png"
    image_grid(images, num_classes, scale=3, row_labels=GLYPH_CLASSES[:num_classes]).save(grid_path)
    report = {
        "pipeline": str(pipeline_path),
        "samples": str(grid_path),
        "tokenizer_seconds": round(tokenizer_seconds, 1),
        "generator_seconds": round(generator_seconds, 1),
        "tokenizer_final": tokenizer_history[-1] if tokenizer_history else {},
        "generator_final": generator_history[-1] if generator_history else {},
        "sampler": pipeline.sampler_name,
        "sampling": pipeline.sampling.to_dict(),
        "reconstruction_mse": _reconstruction_error(pipeline),
        "glyph_metrics": _glyph_metrics(images, num_classes),
    }
    training = (TrainingStage("arvis train tokenizer", tokenizer_recipe.to_dict()),
                *pipeline.metadata.training)
    pipeline.with_metadata(training=training, metrics=report).save_pretrained(pipeline_path)
    return report


def _in_folder(recipe, output_dir: Path, max_steps: int | None, progress: bool, overwrite: bool):
    """The recipe with its run folder inside ``output_dir`` (exports land in ``tokenizer/`` and ``pipeline/``)."""
    run = recipe.run.replace(output_dir=str(output_dir / recipe.run.output_dir), progress=progress,
                             overwrite=overwrite)
    if max_steps is not None:
        run = run.replace(max_steps=max_steps, log_every=min(run.log_every, max_steps))
    return recipe.replace(run=run)


def _glyph_metrics(images: torch.Tensor, num_classes: int, num_real: int = 1000) -> dict:
    """fd-glyphs and glyph accuracy of the grid's samples (the built-in classifier; not FID).

    ``fd_glyphs_real_floor`` is the same distance for as many rendered glyphs as samples: what a
    perfect generator would score with this sample count.
    """
    from arvis.eval.glyph_classifier import load_glyph_classifier
    from arvis.eval.glyph_metrics import glyph_metrics
    from arvis.eval.images import to_uint8_chw

    classifier = load_glyph_classifier()
    size = images.shape[-1]
    labels = torch.arange(num_classes).repeat_interleave(SAMPLES_PER_CLASS)
    real, _ = GlyphDataset(num_real, image_size=size, seed=777).tensors()
    floor, _ = GlyphDataset(len(images), image_size=size, seed=778).tensors()
    real = to_uint8_chw(real, value_range=(0, 1))
    result = glyph_metrics(to_uint8_chw(images, value_range=(0, 1)), labels, real, classifier)
    floor_result = glyph_metrics(to_uint8_chw(floor, value_range=(0, 1)), None, real, classifier)
    return {"fd_glyphs": round(result["fd_glyphs"], 4), "glyph_accuracy": result["glyph_accuracy"],
            "fd_glyphs_real_floor": round(floor_result["fd_glyphs"], 4), "protocol": result["protocol"]}


@torch.inference_mode()
def _reconstruction_error(pipeline, num_images: int = 256) -> float:
    """Mean squared error in [0, 1] pixels of the tokenizer on held-out glyphs (another seed)."""
    tokenizer = pipeline.tokenizer
    images, _ = GlyphDataset(num_images, image_size=tokenizer.image_size[0], seed=12345).tensors()
    reconstruction = tokenizer.to_unit_range(tokenizer.decode(tokenizer.encode(tokenizer.from_unit_range(images))))
    return round(float((reconstruction - images).pow(2).mean()), 5)
