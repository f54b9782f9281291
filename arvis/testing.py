"""Helpers for testing arvis components (used by the test suite; handy for users' own components)."""

from __future__ import annotations

import torch


def randomize_parameters_(module: torch.nn.Module, std: float = 0.1, seed: int = 0) -> torch.nn.Module:
    """Overwrites every parameter with N(0, std) from a seeded generator, in place.

    Zero-initialised heads (LlamaGen's output layer, AdaLN gates) block gradients and
    make every logit equal; tests randomise them so that each path is exercised.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in module.parameters():
            param.copy_(torch.randn(param.shape, generator=generator).to(param.dtype) * std)
    return module


def example_condition(model, batch_size: int = 3, seed: int = 0):
    """A :class:`arvis.conditions.Condition` with every field ``model`` takes, rows differing: class ids (the
    null class last), prompts of different lengths (the last one empty, the null prompt): token ids, or random
    features for a generator that takes prompt features, control maps of uniform noise in [0, 1]."""
    from arvis.conditions import Condition

    rng = torch.Generator().manual_seed(seed)
    fields = {}
    if "labels" in model.condition_fields:
        labels = torch.arange(batch_size) % model.num_classes
        labels[-1] = model.null_class
        fields["labels"] = labels
    if "prompt" in model.condition_fields:
        length = model.prompt_length
        mask = torch.zeros(batch_size, length, dtype=torch.bool)
        for row in range(batch_size - 1):
            mask[row, length - 1 - (row * 2) % length:] = True
        config = getattr(model, "base", model).config  # a wrapper (ControlAR) takes its base's prompts
        if config.text_vocab_size is None:
            features = torch.randn(batch_size, length, config.text_feature_dim, generator=rng)
            fields["prompt"] = features * mask[..., None]
        else:
            fields["prompt"] = torch.randint(1, config.text_vocab_size, (batch_size, length), generator=rng) * mask
        fields["prompt_mask"] = mask
    if "control" in model.condition_fields:
        fields["control"] = torch.rand(batch_size, *model.control_shape, generator=rng)
    return Condition(**fields)
