"""Captioning and interleaved documents: the calls of pipelines whose generator writes text as well as images.

A pipeline of an :class:`~arvis.generators.interleaved.InterleavedGenerator` (discrete image codes) or an
:class:`~arvis.generators.orthus.OrthusGenerator` (continuous latents) draws images from prompts through
:func:`arvis.generate`, captions images through :func:`caption` and writes documents of text and images through
:func:`interleave`; both run the generator's mixed-modal sampler (``interleaved`` or ``diffusion-head``), with the
pipeline's stored settings where it stores that sampler's, and the same per-sample seeding as ``generate``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from arvis.api import load, to_uint8
from arvis.checks import check_counts
from arvis.data.transforms import to_unit_tensor
from arvis.pipeline import Pipeline
from arvis.samplers.base import SAMPLERS
from arvis.samplers.interleaved import InterleavedSampler
from arvis.samplers.logits import per_sample_generators

Document = list  # of str and PIL images, in order


def document_sampler(pipeline: Pipeline, name: str | None, sampling: dict[str, Any]) -> InterleavedSampler:
    """The mixed-modal sampler ``name`` (None: the generator's first) with the pipeline's settings and
    ``sampling`` overrides; ``ValueError`` if the generator has none."""
    generator = pipeline.generator
    names = [candidate for candidate in generator.samplers
             if issubclass(SAMPLERS.get_class(candidate), InterleavedSampler)]
    if not names:
        raise ValueError(f"{type(generator).__name__} writes no text: captioning and interleaved documents need an "
                         "interleaved or Orthus pipeline")
    if name is not None and name not in names:
        raise ValueError(f"the {name} sampler cannot caption or interleave; this generator's ones are {names}")
    return pipeline.sampler(name or names[0], **sampling)


def image_tensor(images: Tensor | Sequence[Image.Image], size: tuple[int, int]) -> Tensor:
    """Images as (n, 3, H, W) float in [0, 1] (a tensor, or a list of PIL images of the tokenizer's size)."""
    if isinstance(images, (list, tuple)):
        if not images or not all(isinstance(image, Image.Image) for image in images):
            raise ValueError("images must be a (n, 3, H, W) float tensor in [0, 1] or a non-empty list of PIL images")
        images = torch.stack([to_unit_tensor(image) for image in images])
    if not isinstance(images, Tensor) or not images.is_floating_point() or images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be a (n, 3, H, W) float tensor in [0, 1], got "
                         f"{getattr(images, 'dtype', type(images).__name__)} {tuple(getattr(images, 'shape', ()))}")
    if tuple(images.shape[2:]) != tuple(size):
        raise ValueError(f"images must be {size[0]}x{size[1]} (the tokenizer's size), got "
                         f"{images.shape[2]}x{images.shape[3]}")
    if not torch.isfinite(images).all() or images.min() < 0 or images.max() > 1:
        raise ValueError("image values must be finite and lie in [0, 1]")
    return images


def image_tokens(pipeline: Pipeline, images: Tensor) -> Tensor:
    """Images (n, 3, H, W) in [0, 1] -> what the generator reads: codes (n, l) or latents (n, l, e)."""
    tokenizer = pipeline.tokenizer
    pixels = tokenizer.from_unit_range(images.to(pipeline.device, next(tokenizer.parameters()).dtype))
    with torch.inference_mode():
        if pipeline.generator.token_spec.vocab_size is None:
            return tokenizer.encode_latents(pixels).float()
        return tokenizer.encode(pixels)


def caption(pipeline: Pipeline | str, images: Tensor | Sequence[Image.Image], *, seed: int = 0, batch_size: int = 64,
            sampler: str | None = None, progress: bool = False, **sampling: Any) -> list[str]:
    """One caption per image: images (n, 3, H, W) float in [0, 1] at the tokenizer's size (or PIL images) ->
    n strings. Image i draws from its own generator seeded by (seed, i), as in :func:`arvis.generate`."""
    check_counts(num_samples=1, batch_size=batch_size, seed=seed)
    pipeline = pipeline if isinstance(pipeline, Pipeline) else load(pipeline)
    draw = document_sampler(pipeline, sampler, sampling)
    images = image_tensor(images, pipeline.tokenizer.image_size)
    captions = []
    for start in range(0, images.shape[0], batch_size):
        tokens = image_tokens(pipeline, images[start:start + batch_size])
        rngs = per_sample_generators(seed, start, tokens.shape[0], pipeline.device)
        captions += pipeline.text_tokenizer.decode(draw.caption(pipeline.generator, tokens, rng=rngs).cpu())
    return captions


def interleave(pipeline: Pipeline | str, prompts: Sequence[str], *, images: int = 2, num_samples: int = 1,
               seed: int = 0, batch_size: int = 64, sampler: str | None = None, **sampling: Any) -> list[Document]:
    """Documents of text and ``images`` images following each prompt (``num_samples`` per prompt, in order):
    lists of strings (text segments) and PIL images, in the order the generator wrote them."""
    check_counts(num_samples=num_samples, batch_size=batch_size, seed=seed)
    pipeline = pipeline if isinstance(pipeline, Pipeline) else load(pipeline)
    draw = document_sampler(pipeline, sampler, sampling)
    condition = pipeline.condition(prompts=prompts)
    condition = condition.select(torch.arange(condition.batch_size, device=condition.device)
                                 .repeat_interleave(num_samples))
    documents = []
    for start in range(0, condition.batch_size, batch_size):
        batch = condition.select(slice(start, start + batch_size))
        rngs = per_sample_generators(seed, start, batch.batch_size, pipeline.device)
        decoded = draw.interleave(pipeline.generator, batch, rng=rngs, images=images)
        documents += split_documents(pipeline, decoded.ids, decoded.latents)
    return documents


def split_documents(pipeline: Pipeline, ids: Tensor, latents: Tensor | None) -> list[Document]:
    """Generated streams (b, n) (and latents (b, n, e)) -> per row, its text segments (strings) and images (PIL),
    each image decoded by the tokenizer."""
    generator, length = pipeline.generator, pipeline.generator.layout.length
    stream = generator.stream
    documents, pending = [], []  # pending: (document, slot, image tokens (l,) or (l, e))

    def close_text(document: list, words: list[int]) -> None:
        if words:
            document.append(pipeline.text_tokenizer.decode(torch.tensor([words]))[0])
            words.clear()

    for row in range(ids.shape[0]):
        document, words, position = [], [], 0
        values = ids[row].tolist()
        while position < len(values) and values[position] != stream.eos:
            token = values[position]
            if token == stream.boi:
                close_text(document, words)
                span = slice(position + 1, position + 1 + length)
                tokens = latents[row, span] if latents is not None else ids[row, span] - stream.image_offset
                pending.append((document, len(document), tokens))
                document.append(None)
                position += length + 2  # the image and <eoi>
                continue
            if token < stream.text_size:
                words.append(token)
            position += 1
        close_text(document, words)
        documents.append(document)
    if pending:
        with torch.inference_mode():
            pixels = pipeline.tokenizer.decode(torch.stack([tokens for _, _, tokens in pending]))
        images = to_uint8(pipeline.tokenizer.to_unit_range(pixels.float()).cpu())
        for (document, slot, _), image in zip(pending, images, strict=True):
            document[slot] = Image.fromarray(np.ascontiguousarray(image))
    return documents
