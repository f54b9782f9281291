"""Key/value caches for incremental decoding, dynamic or static.

Buffers are allocated on the first write of each layer with the dtype and device of the keys written, sized
``max_length`` so that decoding never reallocates. A decoding step writes its new keys and values for every
layer at slots ``[length, length + n)`` and then calls :meth:`KVCache.advance`.

* **Dynamic** (the default, fastest in eager mode): each pass attends to the filled slots only, a slice that
  grows by a step's positions; a pass with ``store=False`` attends to the cache and its own positions, its keys
  written after the filled slots without advancing (so the next pass overwrites them).
* **Static** (``static=True``, for ``torch.compile`` and CUDA graphs): every pass attends to all ``max_length``
  slots, the unfilled ones hidden by the mask :meth:`KVCache.static_mask` builds, and writes its keys with
  ``index_copy_`` at a slot tensor, so a step's shapes never change and one compiled graph serves every step.
  A pass with ``store=False`` writes its keys after the filled slots without advancing, so the next pass
  overwrites them (the same result as not writing). The buffers are marked as static addresses for CUDA graphs.

Shapes: b batch, h heads, n new positions, t cached positions, T ``max_length``, d head dim.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import Tensor


class KVCache:
    """Per-layer key/value buffers of shape (b, h, max_length, d) plus the filled length."""

    def __init__(self, num_layers: int, max_length: int, *, static: bool = False) -> None:
        self.num_layers = num_layers
        self.max_length = max_length
        self.static = static
        self.length = 0
        self.slots: Tensor | None = None  # static: the (n,) slots the current pass writes
        self._keys: list[Tensor | None] = [None] * num_layers
        self._values: list[Tensor | None] = [None] * num_layers

    def static_mask(self, mask: Tensor | None, num_positions: int, device: torch.device) -> Tensor:
        """Starts a pass of a static cache: sets the slots it writes and returns its mask over every slot.

        ``mask`` is the pass's (n, t) or (b, 1, n, t) boolean mask over the t = length + n filled and new
        positions (None: every query sees all t); -> the same mask over all T slots, (n, T) or (b, 1, n, T),
        the slots after t hidden.
        """
        end = self.length + num_positions
        if end > self.max_length:
            raise ValueError(f"KV cache overflow: {end} positions requested, capacity {self.max_length} (a static "
                             "cache also writes the keys of a store=False pass)")
        if mask is not None and (mask.dtype != torch.bool or mask.shape[-1] != end):
            raise ValueError(f"a static cache pads boolean masks over the {end} filled and new positions, got a "
                             f"{mask.dtype} mask of shape {tuple(mask.shape)}")
        self.slots = torch.arange(self.length, end, device=device)
        if mask is None:
            return (torch.arange(self.max_length, device=device) < end).expand(num_positions, -1)
        return torch.nn.functional.pad(mask, (0, self.max_length - end), value=False)

    def append(self, layer: int, keys: Tensor, values: Tensor, *, store: bool = True) -> tuple[Tensor, Tensor]:
        """Writes (b, h, n, d) keys/values after the filled length; returns the keys/values to attend to:
        (b, h, length + n, d), or all (b, h, max_length, d) slots of a static cache.

        With ``store=False`` (a pass that reads the cache without changing it, e.g. SDAR's denoising steps) the
        keys are written after the filled slots, as a static cache does, and the cache does not advance: the
        filled slots and length are unchanged and the next pass overwrites the scratch slots. Writing them there
        is cheaper than concatenating them to a copy of the cache.
        """
        if self.static:
            return self._write_static(layer, keys, values)
        start, end = self.length, self.length + keys.shape[2]
        if end > self.max_length:
            raise ValueError(f"KV cache overflow: {end} positions requested, capacity {self.max_length}"
                             + ("" if store else " (a store=False pass writes its keys after the filled slots)"))
        cached_keys, cached_values = self._buffers(layer, keys, values)
        cached_keys[:, :, start:end] = keys
        cached_values[:, :, start:end] = values
        return cached_keys[:, :, :end], cached_values[:, :, :end]

    def _write_static(self, layer: int, keys: Tensor, values: Tensor) -> tuple[Tensor, Tensor]:
        if self.slots is None or self.slots.shape[0] != keys.shape[2]:
            raise ValueError("a static KV cache is written by a trunk that called static_mask() for the pass")
        cached_keys, cached_values = self._buffers(layer, keys, values)
        cached_keys.index_copy_(2, self.slots, keys)
        cached_values.index_copy_(2, self.slots, values)
        return cached_keys, cached_values

    def _buffers(self, layer: int, keys: Tensor, values: Tensor) -> tuple[Tensor, Tensor]:
        """The layer's (b, h, max_length, d) buffers, allocated on its first write."""
        if self._keys[layer] is None:
            shape = (*keys.shape[:2], self.max_length, keys.shape[3])
            self._keys[layer] = torch.zeros(shape, dtype=keys.dtype, device=keys.device)
            self._values[layer] = torch.zeros(shape, dtype=values.dtype, device=values.device)
            if self.static:
                torch._dynamo.mark_static_address(self._keys[layer])
                torch._dynamo.mark_static_address(self._values[layer])
        cached_keys, cached_values = self._keys[layer], self._values[layer]
        if cached_keys.shape[0] != keys.shape[0]:
            raise ValueError(f"KV cache holds batch {cached_keys.shape[0]}, got keys for batch {keys.shape[0]}")
        return cached_keys, cached_values

    def advance(self, num_positions: int) -> None:
        """Commits ``num_positions`` newly written positions (call once per step, after all layers)."""
        self.length += num_positions

    def rewind(self, length: int) -> None:
        """Keeps only the first ``length`` committed positions; the later ones are overwritten by the next write
        (speculative decoding drops the keys of rejected draft tokens this way)."""
        if not 0 <= length <= self.length:
            raise ValueError(f"can only rewind to a length in [0, {self.length}], got {length}")
        self.length = length


class DecodingPasses:
    """A trunk's layer stack, run eagerly or, after :meth:`compile`, through ``torch.compile`` on decoding passes.

    ``compile`` makes the trunk's new caches static, so the decoding steps of one shape share one compiled graph
    (a raster sampler's one-token steps all do). With ``mode="reduce-overhead"`` on a GPU a step is a CUDA-graph
    replay; the graph is recorded again for each new cache, whose buffers are new (the buffers are marked static
    without a guard, so this re-records rather than recompiles), and outputs kept across steps must be cloned,
    since the next replay overwrites them. A pass without a cache (training, teacher forcing), a pass on a dynamic
    cache, and the first pass on a fresh static cache (which allocates its buffers) run eagerly.
    """

    def __init__(self, layer_stack: Callable[..., Tensor]) -> None:
        self.layer_stack = layer_stack
        self.compiled_stack: Callable[..., Tensor] | None = None
        self.options: dict | None = None

    @property
    def compiled(self) -> bool:
        return self.compiled_stack is not None

    def compile(self, **options) -> None:
        """``options`` go to ``torch.compile`` (e.g. ``mode="reduce-overhead"``, ``fullgraph=True``)."""
        self.options = options
        self.compiled_stack = torch.compile(self.layer_stack, **options)

    def __deepcopy__(self, memo: dict) -> DecodingPasses:
        """A copy for the copied trunk: its layer stack, compiled anew (the compiled function wraps the original)."""
        copied = DecodingPasses(copy.deepcopy(self.layer_stack, memo))
        if self.options is not None:
            copied.compile(**self.options)
        return copied

    def new_cache(self, num_layers: int, max_length: int, cache_class: type[KVCache] = KVCache) -> KVCache:
        """An empty ``cache_class`` (a :class:`KVCache` or a subclass taking its arguments) for ``max_length``
        positions: static once :meth:`compile` was called."""
        return cache_class(num_layers, max_length, static=self.compiled)

    def __call__(self, x: Tensor, conditioning: Tensor | None, *, mask: Tensor | None, cache: KVCache | None,
                 store: bool, additions) -> Tensor:
        """One pass of the layer stack ``layer_stack(x, conditioning, mask, cache, store, additions)``: a static
        cache's mask over every slot is built first, and the cache advances after a stored pass."""
        static = cache is not None and cache.static
        if static:
            mask = cache.static_mask(mask, x.shape[1], x.device)
        stack = self.compiled_stack if self.compiled_stack is not None and static and cache.length \
            else self.layer_stack
        x = stack(x, conditioning, mask, cache, store, additions)
        if cache is not None and store:
            cache.advance(x.shape[1])
        return x
