"""A static key/value cache for incremental decoding.

Buffers are allocated on the first write of each layer with the dtype and device of
the keys written, sized ``max_length`` so that decoding never reallocates. A decoding
step writes its new keys and values for every layer at positions
``[length, length + n)`` and then calls :meth:`KVCache.advance`; a pass with ``store=False``
attends to the cache and its own positions without writing anything.

Shapes: b batch, h heads, n new positions, t cached positions, d head dim.
"""

from __future__ import annotations

import torch
from torch import Tensor


class KVCache:
    """Per-layer key/value buffers of shape (b, h, max_length, d) plus the filled length."""

    def __init__(self, num_layers: int, max_length: int) -> None:
        self.num_layers = num_layers
        self.max_length = max_length
        self.length = 0
        self._keys: list[Tensor | None] = [None] * num_layers
        self._values: list[Tensor | None] = [None] * num_layers

    def append(self, layer: int, keys: Tensor, values: Tensor, *, store: bool = True) -> tuple[Tensor, Tensor]:
        """Writes (b, h, n, d) keys/values after the filled length; returns all (b, h, length + n, d).

        With ``store=False`` nothing is written: the cached keys/values are returned with the new ones
        appended (a pass that reads the cache without changing it, e.g. SDAR's denoising steps).
        """
        if not store:
            if self._keys[layer] is None:
                return keys, values
            cached_keys, cached_values = self._keys[layer], self._values[layer]
            return (torch.cat([cached_keys[:, :, :self.length], keys], dim=2),
                    torch.cat([cached_values[:, :, :self.length], values], dim=2))
        start, end = self.length, self.length + keys.shape[2]
        if end > self.max_length:
            raise ValueError(f"KV cache overflow: {end} positions requested, capacity {self.max_length}")
        if self._keys[layer] is None:
            shape = (*keys.shape[:2], self.max_length, keys.shape[3])
            self._keys[layer] = torch.zeros(shape, dtype=keys.dtype, device=keys.device)
            self._values[layer] = torch.zeros(shape, dtype=values.dtype, device=values.device)
        cached_keys, cached_values = self._keys[layer], self._values[layer]
        if cached_keys.shape[0] != keys.shape[0]:
            raise ValueError(f"KV cache holds batch {cached_keys.shape[0]}, got keys for batch {keys.shape[0]}")
        cached_keys[:, :, start:end] = keys
        cached_values[:, :, start:end] = values
        return cached_keys[:, :, :end], cached_values[:, :, :end]

    def advance(self, num_positions: int) -> None:
        """Commits ``num_positions`` newly written positions (call once per step, after all layers)."""
        self.length += num_positions

    def rewind(self, length: int) -> None:
        """Keeps only the first ``length`` committed positions; the later ones are overwritten by the next write
        (speculative decoding drops the keys of rejected draft tokens this way)."""
        if not 0 <= length <= self.length:
            raise ValueError(f"can only rewind to a length in [0, {self.length}], got {length}")
        self.length = length
