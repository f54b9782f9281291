"""What the glyph toy scripts share: drawing the tokens of many samples with per-sample seeds, and decoding them.

Imported by the scripts beside it (``python docs/scripts/NAME.py`` puts this folder on the path).
"""

from __future__ import annotations

import torch

from arvis.eval.images import to_uint8_chw
from arvis.samplers.logits import per_sample_generators

BATCH = 100


def draw(pipeline, sampler, labels: torch.Tensor) -> torch.Tensor:
    """-> tokens (n, l) long (a full sample comes back in layout order), sample i seeded by i, in batches of 100."""
    return torch.cat([sampler(pipeline.generator, labels[start:start + BATCH],
                              rng=per_sample_generators(0, start, len(labels[start:start + BATCH])))
                      for start in range(0, len(labels), BATCH)])


def to_images(pipeline, tokens: torch.Tensor) -> torch.Tensor:
    """tokens (n, l) -> uint8 images (n, c, h, w)."""
    images = pipeline.tokenizer.to_unit_range(pipeline.tokenizer.decode(tokens)).clamp(0, 1)
    return to_uint8_chw(images, value_range=(0, 1))
