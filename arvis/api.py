"""The two calls most users need: ``arvis.load`` and ``arvis.generate``."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np
import torch
from einops import rearrange
from PIL import Image
from tqdm.auto import tqdm

from arvis.checks import check_counts
from arvis.conditions import Condition
from arvis.pipeline import Pipeline
from arvis.samplers.logits import per_sample_generators

OutputType = Literal["pil", "pt", "np"]


def load(path: str | Path, *, device: str | torch.device = "cpu", dtype: torch.dtype | None = None,
         quantize: str | None = None, revision: str | None = None, cache_dir: str | Path | None = None) -> Pipeline:
    """Loads a pipeline folder written by ``Pipeline.save_pretrained`` (or ``arvis quickstart``), or a Hugging
    Face Hub repo id ``"org/name"`` (an existing local folder of that spelling wins) at ``revision`` through the
    Hub cache ``cache_dir`` (:mod:`arvis.hub`); ``dtype`` casts both components, ``quantize="int8"`` (with bf16
    or fp16) gives the generator int8 weights."""
    return Pipeline.from_pretrained(path, device=device, dtype=dtype, quantize=quantize, revision=revision,
                                    cache_dir=cache_dir)


def generate(
    pipeline: Pipeline | str | Path,
    class_labels: Sequence[int] | None = None,
    *,
    prompts: Sequence[str] | None = None,
    control: torch.Tensor | None = None,
    num_samples: int = 1,
    seed: int = 0,
    sampler: str | None = None,
    batch_size: int = 64,
    output_type: OutputType = "pil",
    device: str | torch.device | None = None,
    progress: bool = False,
    **sampling: Any,
):
    """Samples images conditioned on class ids or text prompts (whichever the pipeline's generator takes).

    Args:
        pipeline: a :class:`Pipeline`, the path of a saved one or a Hub repo id (see :func:`load`).
        class_labels: class ids; ``num_samples`` images are drawn for each, in order
            (labels ``[0, 1]`` with ``num_samples=2`` give classes 0, 0, 1, 1).
        prompts: prompt strings of a text-conditional pipeline, used like ``class_labels`` (each is padded to the
            generator's prompt length; a longer one, or a word outside the text vocabulary, is an error).
        control: control maps of a ControlAR pipeline, (n, c, H, W) float in [0, 1] (a mask or an edge map at
            the tokenizer's image size; :mod:`arvis.data.control` computes them from images), one per class label
            or prompt, or one (c, H, W) map for all of them.
        num_samples: images per class label or prompt.
        seed: image i of the call draws from its own ``torch.Generator`` seeded by
            (seed, i), so the same seed, conditions and settings give identical images
            whatever the ``batch_size``.
        sampler: another of the generator's samplers (``pipeline.generator.samplers``) than the stored one; it
            takes the stored values of the settings it shares with the stored sampler (guidance, filtering) and
            its own defaults for the rest.
        **sampling: override the sampler's settings by field name (``cfg_scale=4.0``, ``top_k=100``,
            ``more_smooth=True`` for VAR's next-scale sampler, ``distilled_steps=2`` for a Distilled Decoding
            pipeline, ...); ``None`` keeps the stored value. A name the sampler does not have is an error
            listing the ones it has (:mod:`arvis.samplers.settings`).
        batch_size: images sampled per forward batch.
        device: where to load ``pipeline`` when it is a path (default CPU); a loaded
            :class:`Pipeline` is used where it is.
        output_type: ``"pil"`` (list of RGB images), ``"pt"`` (float tensor (n, 3, h, w)
            in [0, 1] on the CPU) or ``"np"`` (uint8 array (n, h, w, 3)). Video pipelines give
            clips: a list of frame lists, (n, 3, t, h, w) and (n, t, h, w, 3).
        progress: show a progress bar over batches.
    """
    if output_type not in ("pil", "pt", "np"):
        raise ValueError(f"output_type must be 'pil', 'pt' or 'np', got {output_type!r}")
    check_counts(num_samples=num_samples, batch_size=batch_size, seed=seed)
    if not isinstance(pipeline, Pipeline):
        pipeline = load(pipeline, device=device or "cpu")
    elif device is not None and torch.device(device) != pipeline.device:
        raise ValueError(f"the pipeline is on {pipeline.device}, not {device}; move it with pipeline.to({str(device)!r})")
    condition = pipeline.condition(class_labels, prompts, control)
    condition = condition.select(torch.arange(condition.batch_size, device=condition.device)
                                 .repeat_interleave(num_samples))
    sampler = pipeline.sampler(sampler, **sampling)
    device = pipeline.device
    batches = []
    total = condition.batch_size
    for start in tqdm(range(0, total, batch_size), total=math.ceil(total / batch_size),
                      disable=not progress, desc="sampling"):
        batch = condition.select(slice(start, start + batch_size))
        rngs = per_sample_generators(seed, start, batch.batch_size, device)
        batches.append(draw_images(pipeline, sampler, batch, rngs))
    images = torch.cat(batches)
    if output_type == "pt":
        return images
    array = to_uint8(images)
    if output_type == "np":
        return array
    if array.ndim == 5:  # clips: one list of frames per sample
        return [[Image.fromarray(np.ascontiguousarray(frame)) for frame in clip] for clip in array]
    return [Image.fromarray(np.ascontiguousarray(image)) for image in array]


def draw_images(pipeline: Pipeline, sampler, condition: Condition | torch.Tensor, rngs) -> torch.Tensor:
    """Samples tokens for a condition of b samples (or class ids (b,)) and decodes them -> (b, 3, h, w) images or
    (b, 3, t, h, w) clips, float in [0, 1] on the CPU."""
    tokens = sampler(pipeline.generator, condition, rng=rngs)  # (b, l) ids or (b, l, e) vectors
    with torch.inference_mode():
        # One sample at a time: CPU convolution kernels may round differently for another batch size (seen:
        # 5e-6, enough to flip a uint8 pixel), and image i must not depend on the batch it was drawn in.
        pixels = torch.cat([pipeline.tokenizer.decode(tokens[index:index + 1]) for index in range(len(tokens))])
    return pipeline.tokenizer.to_unit_range(pixels.float()).cpu()


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """Images (n, 3, h, w) or clips (n, 3, t, h, w) in [0, 1] -> (n, h, w, 3) or (n, t, h, w, 3) uint8 (rounded)."""
    return rearrange((images * 255).round().to(torch.uint8), "n c ... -> n ... c").numpy()
