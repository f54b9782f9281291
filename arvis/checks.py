"""Input checks shared by components: each raises ``ValueError`` naming what is wrong and how to fix it."""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor


def check_token_ids(tokens: Tensor, length: int, vocab_size: int) -> None:
    """Checks ``tokens`` is a (b, length) long tensor with ids in [0, vocab_size)."""
    if not isinstance(tokens, Tensor) or tokens.dtype != torch.long:
        raise ValueError(f"expected a torch.long tensor of token ids, got {getattr(tokens, 'dtype', type(tokens))}")
    if tokens.ndim != 2 or tokens.shape[1] != length:
        raise ValueError(f"expected tokens of shape (batch, {length}), got {tuple(tokens.shape)}")
    if tokens.numel() and (tokens.min() < 0 or tokens.max() >= vocab_size):
        raise ValueError(
            f"token ids span [{tokens.min().item()}, {tokens.max().item()}] outside the vocabulary [0, {vocab_size})"
        )


def check_counts(**values: object) -> None:
    """Raises ``ValueError`` unless every value is an integer, >= 0 for ``seed`` and >= 1 for the others
    (``num_samples``, ``batch_size``, ``num_processes``, ...)."""
    for name, value in values.items():
        minimum = 0 if name == "seed" else 1
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
            raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def check_class_ids(values: Sequence[int] | Tensor, num_classes: int, name: str = "class_labels") -> list[int]:
    """Class ids as a non-empty list of ints in [0, num_classes); ``ValueError`` naming ``name`` otherwise."""
    if isinstance(values, (Tensor, np.ndarray)) and values.ndim != 1 \
            or not isinstance(values, (Tensor, np.ndarray, Sequence)) or isinstance(values, str):
        raise ValueError(f"{name} must be a list (or 1-D tensor) of class ids, got {values!r:.80}")
    values = values.tolist() if isinstance(values, Tensor) else list(values)
    if not values:
        raise ValueError(f"{name} is empty; pass at least one class id")
    bad = [v for v in values if isinstance(v, bool) or not isinstance(v, numbers.Integral) or not 0 <= v < num_classes]
    if bad:
        raise ValueError(f"{name} must hold class ids in [0, {num_classes - 1}] (integers) for this pipeline, got "
                         f"{bad[:5]}")
    return [int(v) for v in values]
