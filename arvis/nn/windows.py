"""Window order of a token grid: s×s windows in raster order over the windows, raster order inside each window.

Token-Shuffle (arXiv 2504.17789) merges the s² tokens of each window into one step, so its generator emits a grid
window by window. Shapes: b batch, r×c token grid (l = r·c), s window side, m = l / s² windows.

Raster index i = row·c + col with row = h·s + i, col = w·s + j; window order lists window (h, w) in raster order
over the (r/s)×(c/s) window grid, and inside it (i, j) in raster order.
"""

from __future__ import annotations

from einops import rearrange
from torch import Tensor


def check_window(rows: int, cols: int, window: int) -> None:
    """``ValueError`` unless the window side divides both sides of the r×c grid."""
    if window < 1:
        raise ValueError(f"the window side must be >= 1, got {window}")
    if rows % window or cols % window:
        raise ValueError(f"a window of {window}×{window} tokens does not tile the {rows}×{cols} token grid; choose a "
                         f"window side that divides both {rows} and {cols}")


def to_window_order(tokens: Tensor, rows: int, cols: int, window: int) -> Tensor:
    """(b, l, ...) per-token values in raster order -> the same in window order."""
    check_window(rows, cols, window)
    return rearrange(tokens, "b (h i w j) ... -> b (h w i j) ...", h=rows // window, i=window, j=window)


def to_raster_order(tokens: Tensor, rows: int, cols: int, window: int) -> Tensor:
    """(b, l, ...) per-token values in window order -> the same in raster order (the inverse of
    :func:`to_window_order`)."""
    check_window(rows, cols, window)
    return rearrange(tokens, "b (h w i j) ... -> b (h i w j) ...", h=rows // window, i=window, j=window)


def merge_windows(features: Tensor, window: int) -> Tensor:
    """(b, l, e) features in window order -> (b, m, s²·e): each window's s² vectors concatenated along channels,
    in the window's raster order (token-shuffle's merge)."""
    return rearrange(features, "b (m k) e -> b m (k e)", k=window * window)


def split_windows(features: Tensor, window: int) -> Tensor:
    """(b, m, s²·e) -> (b, l, e) in window order: the inverse of :func:`merge_windows` (token-unshuffle's split)."""
    return rearrange(features, "b m (k e) -> b (m k) e", k=window * window)
