"""VA-π's data: real images with their ground-truth token ids x* = encode(I) and their condition.

Shapes: r rows, l tokens, c channels, (t frames,) h w pixels.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.utils.data import Dataset, Subset

from arvis.conditions import Condition
from arvis.pipeline import Pipeline
from arvis.train.loop import build_dataset, check_dataset_classes, check_image_size
from arvis.train.options import DataConfig
from arvis.train.tokens import ConditionedTokens, encode_dataset, with_conditions


class ImagesWithTokens(Dataset):
    """Items ``{"pixels": (c, h, w) or (c, t, h, w) float in [0, 1], "tokens": (l,) long, <condition fields>}``:
    row i of ``tokens`` is the encoding of ``images[i]`` (read lazily from it; its labels are not used)."""

    def __init__(self, images: Dataset, tokens: ConditionedTokens) -> None:
        if len(images) != len(tokens):
            raise ValueError(f"{len(images)} images but {len(tokens)} token rows")
        self.images, self.tokens = images, tokens

    def __len__(self) -> int:
        return len(self.tokens)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        return {"pixels": self.images[index][0], **self.tokens[index]}

    @staticmethod
    def split(batch: dict[str, Tensor]) -> tuple[Tensor, Tensor, Condition]:
        """A collated batch -> (pixels (b, c, ...) in [0, 1], tokens (b, l) long, the condition)."""
        fields = dict(batch)
        pixels = fields.pop("pixels")
        tokens, condition = ConditionedTokens.split(fields)
        return pixels, tokens, condition


def evenly_spaced(dataset: Dataset, count: int | None) -> Dataset:
    """``count`` items spread evenly over ``dataset`` (so every class of a class-sorted image folder), or all of
    them for None; ``ValueError`` if it holds fewer."""
    if count is None:
        return dataset
    if count > len(dataset):
        raise ValueError(f"num_images is {count}, but the data holds {len(dataset)} items")
    return Subset(dataset, torch.linspace(0, len(dataset) - 1, count, dtype=torch.float64).round().long().tolist())


def real_images_with_tokens(pipeline: Pipeline, data: DataConfig, num_images: int | None, *, batch_size: int,
                            device: torch.device) -> ImagesWithTokens:
    """The data ``data`` describes (``num_images`` of it, evenly spaced), each item encoded once by the pipeline's
    tokenizer (in memory) and given the condition its generator takes (class ids, or glyph captions encoded by
    the pipeline's text tokenizer or frozen text encoder). ``ValueError`` if the images do not fit the tokenizer
    or the classes the generator."""
    tokenizer, generator = pipeline.tokenizer, pipeline.generator
    check_image_size(tokenizer, data)
    text = "prompt" in generator.condition_fields
    if text and (data.name != "glyphs" or num_images is not None):
        raise ValueError("a text-conditional generator is post-trained on the glyph data with their captions: use "
                         "data.name=glyphs and set data.num_samples instead of num_images")
    if data.random_flip or data.crop != "center":
        raise ValueError("VA-π scores each draw against the real image its ids were encoded from: leave "
                         "data.random_flip false and data.crop center")
    dataset = build_dataset(data)
    check_dataset_classes(dataset, generator)
    images = evenly_spaced(dataset, num_images)
    token_data = encode_dataset(tokenizer, images, batch_size, device)
    prompt_encoder = pipeline.text_tokenizer or pipeline.text_encoder  # the one the pipeline has, if any
    return ImagesWithTokens(images, with_conditions(token_data, generator, prompt_encoder, images))
