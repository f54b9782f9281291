"""The Llama trunk: LlamaGen's stack of pre-norm Llama blocks, as a public seam for every Llama-style generator.

Shapes: b batch, n positions of the pass, t positions in the cache after it, d width.

A generator is embedding + trunk + head. The trunk takes input embeddings and returns the hidden states
**before** any final norm (each head owns its norm: LlamaGen's logits head is RMSNorm + linear, Distilled
Decoding's regression head reads the un-normed state). A pass gives:

* ``positions`` (n,) long, explicit position ids whose RoPE rows are gathered by id (SDAR's [noisy; clean]
  halves repeat them); by default the next n positions after the cache (0.. without one);
* ``mask`` (n, t) boolean, True where a query may attend (None: every query sees every key);
* ``cache`` and ``store``: the pass's keys and values are appended to the cache and the cache advances
  (``store=True``), or the pass only attends to it and leaves it unchanged (``store=False``);
* ``additions`` {layer index: (b, n, d)}: added to the hidden state before that layer (ControlAR's features
  before layers 0, L/3 and 2L/3).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import torch
from torch import Tensor, nn

from arvis.config import Config
from arvis.nn.kv_cache import DecodingPasses, KVCache
from arvis.nn.mlp import llama_hidden_dim
from arvis.nn.rope import RotaryTable
from arvis.nn.transformer import LlamaBlock


@dataclasses.dataclass(frozen=True, kw_only=True)
class LlamaTrunkConfig(Config):
    """The trunk's fields; every Llama generator's config derives from it (so saved keys stay flat).

    Attributes:
        dim: width d.
        num_layers, num_heads: blocks and attention heads.
        num_kv_heads: grouped-query attention when smaller than ``num_heads`` (None: as many as heads).
        ffn_multiple_of: the SwiGLU width is 2/3·4·dim rounded up to this.
        norm_eps: RMSNorm epsilon.
        resid_dropout, ffn_dropout, attn_dropout: LlamaGen's dropouts after attention, after the MLP, on the
            attention weights.
        qk_norm: Chameleon's per-head LayerNorm of queries and keys before RoPE (Orthus's trunk).
    """

    dim: int = 768
    num_layers: int = 12
    num_heads: int = 12
    num_kv_heads: int | None = None
    ffn_multiple_of: int = 256
    norm_eps: float = 1e-5
    resid_dropout: float = 0.1
    ffn_dropout: float = 0.1
    attn_dropout: float = 0.0
    qk_norm: bool = False

    def __post_init__(self) -> None:
        if self.dim < 1 or self.num_layers < 1 or self.num_heads < 1:
            raise ValueError(f"dim, num_layers and num_heads must be positive, got {self.dim}, {self.num_layers}, "
                             f"{self.num_heads}")
        if self.dim % self.num_heads:
            raise ValueError(f"dim ({self.dim}) must be divisible by num_heads ({self.num_heads})")

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads


class LlamaTrunk(nn.Module):
    """Llama blocks over input embeddings (b, n, d) -> hidden states (b, n, d), before any final norm.

    Args:
        config: the trunk's fields (a generator's config, which derives from :class:`LlamaTrunkConfig`).
        rope: the RoPE table of the generator's positions, or None for a trunk without RoPE (absolute
            positions are then the generator's, added to the input embeddings).
    """

    def __init__(self, config: LlamaTrunkConfig, rope: RotaryTable | None = None) -> None:
        super().__init__()
        hidden_dim = llama_hidden_dim(config.dim, config.ffn_multiple_of)
        self.layers = nn.ModuleList(
            LlamaBlock(config.dim, config.num_heads, hidden_dim, num_kv_heads=config.num_kv_heads,
                       norm_eps=config.norm_eps, attn_dropout=config.attn_dropout,
                       resid_dropout=config.resid_dropout, ffn_dropout=config.ffn_dropout, qk_norm=config.qk_norm)
            for _ in range(config.num_layers)
        )
        self.rope = rope
        self.decoding = DecodingPasses(self._layer_stack)

    def new_cache(self, max_length: int) -> KVCache:
        """An empty KV cache for ``max_length`` positions (static once :meth:`compile_decoding` was called)."""
        return self.decoding.new_cache(len(self.layers), max_length)

    def compile_decoding(self, **options) -> None:
        """Decodes with static KV caches through ``torch.compile(**options)`` (see :class:`DecodingPasses`)."""
        self.decoding.compile(**options)

    def forward(self, x: Tensor, *, positions: Tensor | None = None, mask: Tensor | None = None,
                cache: KVCache | None = None, store: bool = True,
                additions: Mapping[int, Tensor] | None = None) -> Tensor:
        """x (b, n, d) -> (b, n, d); see the module docstring for the arguments."""
        if positions is None:
            start = cache.length if cache is not None else 0
            positions = torch.arange(start, start + x.shape[1], device=x.device)
        elif positions.ndim != 1 or positions.shape[0] != x.shape[1]:
            raise ValueError(f"positions must be (n,) = ({x.shape[1]},) position ids, got {tuple(positions.shape)}")
        check_additions(additions, len(self.layers))
        rope = self.rope.rows(positions) if self.rope is not None else None
        return self.decoding(x, rope, mask=mask, cache=cache, store=store, additions=additions)

    def _layer_stack(self, x: Tensor, rope: Tensor | None, mask: Tensor | None, cache: KVCache | None,
                     store: bool, additions: Mapping[int, Tensor] | None) -> Tensor:
        for index, layer in enumerate(self.layers):
            if additions is not None and index in additions:
                x = x + additions[index]
            x = layer(x, rope=rope, mask=mask, cache=cache, layer=index, store=store)
        return x


def check_additions(additions: Mapping[int, Tensor] | None, num_layers: int) -> None:
    """Raises ``ValueError`` if ``additions`` names a layer the trunk does not have."""
    if additions is not None and not set(additions) <= set(range(num_layers)):
        raise ValueError(f"additions name layers {sorted(set(additions) - set(range(num_layers)))}, but the trunk "
                         f"has layers 0..{num_layers - 1}")
