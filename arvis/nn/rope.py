"""Rotary position embeddings (Su et al. 2021, https://arxiv.org/abs/2104.09864), 1D and 2D.

A table has shape (t, d/2, 2): per position and channel pair, (cos, sin). Channel
pairs are *interleaved* (channels 2i and 2i+1 rotate together), as in LlamaGen and
Meta's Llama, so released checkpoints load without permuting weights.

2D RoPE (LlamaGen): the first half of the pairs rotates with the row index and the
second half with the column index, each with ``d/4`` frequencies ``base^(-2i/(d/2))``.
Prefix positions (class or text tokens) come first. Upstream LlamaGen gives them
(cos, sin) = (0, 0), which zeroes q and k of the prefix (issue #54 upstream);
``zero_prefix=True`` reproduces that for checkpoint compatibility, ``False`` gives
them the identity rotation instead.
"""

from __future__ import annotations

from typing import Callable

import torch
from einops import rearrange
from torch import Tensor


def _frequencies(num_pairs: int, base: float) -> Tensor:
    """(num_pairs,) inverse frequencies base^(-2i / (2 num_pairs))."""
    return 1.0 / (base ** (torch.arange(0, 2 * num_pairs, 2, dtype=torch.float64) / (2 * num_pairs)))


def _prefix_rows(prefix_length: int, num_pairs: int, zero_prefix: bool) -> Tensor:
    rows = torch.zeros(prefix_length, num_pairs, 2, dtype=torch.float64)
    if not zero_prefix:
        rows[..., 0] = 1.0
    return rows


def rope_table_1d(length: int, head_dim: int, base: float = 10000.0, *, prefix_length: int = 0,
                  zero_prefix: bool = False) -> Tensor:
    """(prefix_length + length, head_dim/2, 2) table for positions 0..length-1 after a prefix."""
    if head_dim % 2:
        raise ValueError(f"1D RoPE needs an even head dim, got {head_dim}")
    angles = torch.outer(torch.arange(length, dtype=torch.float64), _frequencies(head_dim // 2, base))
    table = torch.stack([angles.cos(), angles.sin()], dim=-1)
    return torch.cat([_prefix_rows(prefix_length, head_dim // 2, zero_prefix), table]).float()


def rope_table_2d(rows: int, cols: int, head_dim: int, base: float = 10000.0, *, prefix_length: int = 0,
                  zero_prefix: bool = False) -> Tensor:
    """(prefix_length + rows*cols, head_dim/2, 2) table for a row-major token grid after a prefix."""
    if head_dim % 4:
        raise ValueError(f"2D RoPE needs a head dim divisible by 4, got {head_dim}")
    freqs = _frequencies(head_dim // 4, base)
    row_angles = torch.outer(torch.arange(rows, dtype=torch.float64), freqs)  # (rows, d/4)
    col_angles = torch.outer(torch.arange(cols, dtype=torch.float64), freqs)  # (cols, d/4)
    grid = torch.cat(
        [row_angles[:, None, :].expand(rows, cols, -1), col_angles[None, :, :].expand(rows, cols, -1)], dim=-1
    )
    grid = rearrange(grid, "r c p -> (r c) p")
    table = torch.stack([grid.cos(), grid.sin()], dim=-1)
    return torch.cat([_prefix_rows(prefix_length, head_dim // 2, zero_prefix), table]).float()


def apply_rope(x: Tensor, table: Tensor) -> Tensor:
    """Rotates x (b, s, n, d) by table (n, d/2, 2), any number s of heads; computed in float32, returned in x's
    dtype. Eagerly, each channel pair is one complex number multiplied by cos + i·sin (one kernel instead of
    the six of the pair arithmetic); under ``torch.compile``, which generates no code for complex numbers, the
    pair arithmetic, which it fuses into one kernel. Both give the same float32 result."""
    pairs = rearrange(x.float(), "... (p two) -> ... p two", two=2)
    if torch.compiler.is_compiling():
        first, second = pairs.unbind(-1)
        cos, sin = table.unbind(-1)
        rotated = torch.stack([first * cos - second * sin, second * cos + first * sin], dim=-1)
    else:
        rotation = torch.view_as_complex(table.contiguous())  # (n, d/2) cos + i·sin
        rotated = torch.view_as_real(torch.view_as_complex(pairs.contiguous()) * rotation)
    return rearrange(rotated, "... p two -> ... (p two)").type_as(x)


class RotaryTable:
    """A RoPE table (t, d/2, 2) float32, built by ``build`` on first use per device and read by position id.

    Never a buffer: ``module.to(dtype)`` must not round the angles (upstream keeps them in fp32), and a model
    built on the meta device must still get real tables. ``build`` returns the table of every position the
    model uses (prefix included).
    """

    def __init__(self, build: Callable[[], Tensor]) -> None:
        self.build = build
        self._by_device: dict[torch.device, Tensor] = {}

    def rows(self, positions: Tensor) -> Tensor:
        """positions (n,) long -> (n, d/2, 2) rows of the table (ids may repeat or come in any order; they are not
        checked against the table's length here, which would synchronise with the device at every step)."""
        device = positions.device
        if device not in self._by_device:
            with torch.inference_mode(False):  # a table first built while sampling must serve training too
                self._by_device[device] = self.build().to(device)
        return self._by_device[device][positions]
