"""Sample previews written during generator training (a grid per preview step)."""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image

from arvis.api import generate
from arvis.generators.base import Generator
from arvis.modeling import eval_mode
from arvis.pipeline import Pipeline
from arvis.samplers import SamplerSettings
from arvis.text import TextTokenizer
from arvis.tokenizers.base import Tokenizer
from arvis.visualize import image_grid

MAX_PREVIEW_CLASSES = 10


def save_preview(tokenizer: Tokenizer, generator: Generator, sampling: SamplerSettings, path: Path, *,
                 per_class: int = 4, seed: int = 0, text_tokenizer: TextTokenizer | None = None,
                 prompts: list[str] | None = None) -> Image.Image:
    """Samples ``per_class`` images for the first classes (or ``prompts``, for a text-conditional generator),
    one row each, and saves the grid as ``path``.

    Returns the grid. The generator is put back in the mode it was in.
    """
    with eval_mode(generator):
        pipeline = Pipeline(tokenizer, generator, sampling, text_tokenizer=text_tokenizer)
        classes = None if prompts is not None else list(range(min(generator.num_classes, MAX_PREVIEW_CLASSES)))
        with torch.no_grad():
            images = generate(pipeline, class_labels=classes, prompts=prompts, num_samples=per_class, seed=seed,
                              output_type="pt")
    path.parent.mkdir(parents=True, exist_ok=True)
    grid = image_grid(images, len(prompts if prompts is not None else classes), scale=2)
    grid.save(path)
    return grid
