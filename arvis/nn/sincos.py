"""Fixed sine-cosine position embeddings (Vaswani et al., 2017), in MAE's layout (sin half, then cos half).

Shapes: n positions, d embedding width.
"""

from __future__ import annotations

import torch
from einops import repeat
from torch import Tensor


def sincos_1d(dim: int, positions: Tensor, base: float = 10000.0, dtype: torch.dtype = torch.float32) -> Tensor:
    """positions (n,) -> (n, dim) = [sin(p * w_i), cos(p * w_i)] with w_i = base^(-i / (dim/2)), i < dim/2
    (computed in float64, returned as ``dtype``)."""
    if dim % 2:
        raise ValueError(f"a sine-cosine embedding needs an even width, got {dim}")
    frequencies = base ** (-torch.arange(dim // 2, dtype=torch.float64) / (dim // 2))
    angles = positions.double()[:, None] * frequencies[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=1).to(dtype)


def sincos_2d(dim: int, height: int, width: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """(height * width, dim) in raster order: the first half embeds the column, the second the row (MAE)."""
    if dim % 4:
        raise ValueError(f"a 2D sine-cosine embedding needs a width divisible by 4, got {dim}")
    columns = sincos_1d(dim // 2, torch.arange(width), dtype=dtype)
    rows = sincos_1d(dim // 2, torch.arange(height), dtype=dtype)
    return torch.cat([repeat(columns, "w d -> (h w) d", h=height), repeat(rows, "h d -> (h w) d", w=width)], dim=1)


SINCOS_3D_LAYOUTS = ("additive", "concat")


def sincos_3d(dim: int, frames: int, height: int, width: int, layout: str = "additive") -> Tensor:
    """(frames * height * width, dim) in (t h w) order.

    ``layout``:
        ``"additive"``: LARP's ``get_3d_sincos_pos_embed``: the full-width 2D table of the position plus the
            full-width 1D table of the frame (dim divisible by 4).
        ``"concat"``: dim/4 embeds the frame, 3·dim/4 the 2D position, side by side (the MVD/Latte layout of
            other video ViTs; arvis 0.1's LARP; dim divisible by 16).
    """
    if layout == "additive":  # summed in float64, as upstream's numpy code does
        temporal = sincos_1d(dim, torch.arange(frames), dtype=torch.float64)
        spatial = sincos_2d(dim, height, width, dtype=torch.float64)
        return (repeat(temporal, "t d -> (t n) d", n=height * width)
                + repeat(spatial, "n d -> (t n) d", t=frames)).float()
    if layout != "concat":
        raise ValueError(f"3D sine-cosine layout must be one of {SINCOS_3D_LAYOUTS}, got {layout!r}")
    if dim % 4 or (3 * dim // 4) % 4:
        raise ValueError(f"a concatenated 3D sine-cosine embedding needs a width divisible by 16, got {dim}")
    temporal = sincos_1d(dim // 4, torch.arange(frames))
    spatial = sincos_2d(3 * dim // 4, height, width)
    return torch.cat([repeat(temporal, "t d -> (t n) d", n=height * width),
                      repeat(spatial, "n d -> (t n) d", t=frames)], dim=1)
