"""Input checks shared by components: each raises ``ValueError`` naming what is wrong and how to fix it."""

from __future__ import annotations

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
