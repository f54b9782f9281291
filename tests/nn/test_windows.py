"""Window order (Token-Shuffle's step order): exact against a hand-built permutation, invertible, refusing grids
the window does not tile."""

from __future__ import annotations

import pytest
import torch

from arvis.nn.windows import merge_windows, split_windows, to_raster_order, to_window_order


def _hand_window_order(rows: int, cols: int, window: int) -> list[int]:
    """The raster indices in window order, built by loops."""
    order = []
    for h in range(rows // window):
        for w in range(cols // window):
            for i in range(window):
                for j in range(window):
                    order.append((h * window + i) * cols + w * window + j)
    return order


@pytest.mark.parametrize(("rows", "cols", "window"), [(4, 4, 2), (6, 4, 2), (4, 8, 4), (3, 6, 3), (2, 2, 1)])
def test_window_order_is_the_hand_built_permutation_and_maps_back_to_raster_order(rows, cols, window):
    raster = torch.arange(rows * cols).repeat(2, 1)  # (b, l) index grids
    windowed = to_window_order(raster, rows, cols, window)
    assert windowed[0].tolist() == _hand_window_order(rows, cols, window)
    assert torch.equal(to_raster_order(windowed, rows, cols, window), raster)
    values = torch.randn(2, rows * cols, 5)  # trailing dims ride along
    assert torch.equal(to_raster_order(to_window_order(values, rows, cols, window), rows, cols, window), values)
    if window == 1:
        assert torch.equal(windowed, raster)


def test_merging_a_window_along_channels_is_undone_by_splitting_it():
    features = torch.randn(2, 16, 3)
    merged = merge_windows(features, 2)
    assert merged.shape == (2, 4, 12)
    assert torch.equal(merged[0, 1], features[0, 4:8].flatten())  # window 1's four vectors, in order
    assert torch.equal(split_windows(merged, 2), features)


@pytest.mark.parametrize(("rows", "cols", "window"), [(4, 6, 4), (5, 4, 2), (4, 4, 0)])
def test_a_window_that_does_not_tile_the_grid_is_refused(rows, cols, window):
    with pytest.raises(ValueError, match="window"):
        to_window_order(torch.zeros(1, rows * cols), rows, cols, window)
