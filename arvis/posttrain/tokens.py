"""The token rows a post-training method trains on: a pipeline's training images encoded once by its tokenizer."""

from __future__ import annotations

import torch

from arvis.pipeline import Pipeline
from arvis.train.loop import build_dataset, check_dataset_classes, check_image_size
from arvis.train.options import DataConfig
from arvis.train.tokens import ConditionedTokens, encode_dataset, with_conditions


def encoded_training_data(pipeline: Pipeline, data: DataConfig, batch_size: int,
                          device: torch.device) -> ConditionedTokens:
    """The images ``data`` describes (centre-cropped, unflipped), each encoded once by the pipeline's tokenizer
    ``batch_size`` at a time, with its condition (class id, or caption for a text-conditional generator).
    ``ValueError`` if their size is not the tokenizer's or a class-conditional generator models another number of
    classes than the data has."""
    generator = pipeline.generator
    check_image_size(pipeline.tokenizer, data)
    dataset = build_dataset(data.replace(random_flip=False, crop="center"))
    check_dataset_classes(dataset, generator)
    tokens = encode_dataset(pipeline.tokenizer, dataset, batch_size, device)
    return with_conditions(tokens, generator, pipeline.text_tokenizer or pipeline.text_encoder, dataset)
