"""Multi-head self-attention on ``F.scaled_dot_product_attention`` with an explicit mask.

Shapes: b batch, n query positions, t key positions (cache + new), h heads, d head dim.
``mask`` is boolean, True where a query may attend, broadcastable to (b, h, n, t);
``None`` means every query sees every key. Models build their own masks (causal,
block-causal) with the helpers below, so the rule each method uses is explicit.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from arvis.nn.kv_cache import KVCache
from arvis.nn.linear import Linear, linear
from arvis.nn.norms import HeadLayerNorm
from arvis.nn.rope import apply_rope


def causal_mask(num_queries: int, num_keys: int | None = None, *, device: torch.device | str | None = None) -> Tensor:
    """(n, t) boolean mask: query i (the last n of t positions) sees keys up to its own position."""
    num_keys = num_queries if num_keys is None else num_keys
    offset = num_keys - num_queries
    query_positions = torch.arange(num_queries, device=device)[:, None] + offset
    return torch.arange(num_keys, device=device)[None, :] <= query_positions


def block_causal_mask(unit_lengths: Sequence[int], *, device: torch.device | str | None = None) -> Tensor:
    """(l, l) boolean mask over units of the given lengths (l = their sum): a position sees every
    position of its own unit and of earlier units (bidirectional within a unit, causal across;
    VAR's scales, ResTok's levels)."""
    units = torch.repeat_interleave(torch.arange(len(unit_lengths), device=device),
                                    torch.tensor(list(unit_lengths), device=device))
    return units[None, :] <= units[:, None]


def block_diffusion_mask(prefix_length: int, length: int, block_size: int, *,
                         device: torch.device | str | None = None) -> Tensor:
    """(P + 2l, P + 2l) boolean mask of block diffusion's training sequence [prefix (P); noisy x_t (l); clean x_0 (l)]
    (BD3-LM's, as SDAR trains): the prefix is causal among itself and seen by every position; a noisy position of
    block b sees the noisy positions of block b (bidirectionally) and the clean positions of blocks < b; a clean
    position of block b sees the clean positions of blocks <= b. ``length`` must be a multiple of ``block_size``."""
    if block_size < 1 or length % block_size:
        raise ValueError(f"the sequence length {length} must be a positive multiple of the block size {block_size}")
    total = prefix_length + 2 * length
    index = torch.arange(total, device=device)
    is_prefix = index < prefix_length
    is_noisy = (index >= prefix_length) & (index < prefix_length + length)
    block = torch.where(is_prefix, -1, ((index - prefix_length) % length) // block_size)
    query_block, key_block = block[:, None], block[None, :]
    prefix_keys = is_prefix[None, :] & (~is_prefix[:, None] | (index[None, :] <= index[:, None]))
    noisy_query, noisy_key = is_noisy[:, None], is_noisy[None, :]
    clean_query = ~is_prefix[:, None] & ~noisy_query
    clean_key = ~is_prefix[None, :] & ~noisy_key
    noisy_sees = noisy_query & ((noisy_key & (key_block == query_block)) | (clean_key & (key_block < query_block)))
    clean_sees = clean_query & clean_key & (key_block <= query_block)
    return prefix_keys | noisy_sees | clean_sees


def with_key_padding(mask: Tensor | None, attendable: Tensor, num_queries: int, num_keys: int) -> Tensor:
    """Hides padding keys: mask (n, t) bool (None: every query sees every key) and ``attendable`` (b, k) bool over
    the first k keys (a prompt's positions; later keys are all kept) -> (b, 1, n, t). Every query still sees its
    own position (the last n of the t keys), so a padding query never has an empty softmax (LlamaGen t2i adds
    the identity to its mask the same way)."""
    batch, given = attendable.shape
    keys = torch.cat([attendable, attendable.new_ones(batch, num_keys - given)], dim=1)
    allowed = keys[:, None, :] if mask is None else mask[None] & keys[:, None, :]
    own = torch.arange(num_keys, device=attendable.device)[None, :] == \
        torch.arange(num_queries, device=attendable.device)[:, None] + (num_keys - num_queries)
    return (allowed | own)[:, None]


class SelfAttention(nn.Module):
    """Fused-qkv attention with optional grouped KV heads, RoPE and a KV cache (LlamaGen layout)."""

    def __init__(self, dim: int, num_heads: int, num_kv_heads: int | None = None, *, bias: bool = False,
                 attn_dropout: float = 0.0, resid_dropout: float = 0.0, qk_norm: bool = False) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} must be divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.num_kv_heads = num_kv_heads or num_heads
        if num_heads % self.num_kv_heads:
            raise ValueError(f"num_heads {num_heads} must be a multiple of num_kv_heads {self.num_kv_heads}")
        self.head_dim = dim // num_heads
        kv_dim = self.num_kv_heads * self.head_dim
        self.wqkv = Linear(dim, dim + 2 * kv_dim, bias=bias)
        self.wo = Linear(dim, dim, bias=bias)
        self.attn_dropout = attn_dropout
        self.resid_dropout = nn.Dropout(resid_dropout)
        # Chameleon's qk-norm: each head's queries and keys layer-normed before RoPE
        self.q_norm = HeadLayerNorm(num_heads, self.head_dim) if qk_norm else None
        self.k_norm = HeadLayerNorm(self.num_kv_heads, self.head_dim) if qk_norm else None

    def forward(self, x: Tensor, *, rope: Tensor | None = None, mask: Tensor | None = None,
                cache: KVCache | None = None, layer: int = 0, store: bool = True) -> Tensor:
        """x (b, n, dim), rope (n, d/2, 2) for the new positions -> (b, n, dim); with ``cache`` the keys and
        values of the n positions are appended to it (``store``) or only attended to (``store=False``: the
        cache's filled slots and length stay as they were)."""
        heads = rearrange(self.wqkv(x), "b n (s d) -> b s n d", d=self.head_dim)  # s = q, k and v heads
        query_and_key, v = heads.split([self.num_heads + self.num_kv_heads, self.num_kv_heads], dim=1)
        if self.q_norm is not None:
            q, k = query_and_key.split([self.num_heads, self.num_kv_heads], dim=1)
            query_and_key = torch.cat([self.q_norm(q), self.k_norm(k)], dim=1)
        if rope is not None:
            query_and_key = apply_rope(query_and_key, rope)  # one rotation for q's and k's heads together
        q, k = query_and_key.split([self.num_heads, self.num_kv_heads], dim=1)
        if cache is not None:
            k, v = cache.append(layer, k, v, store=store)
        if self.num_kv_heads != self.num_heads:
            repeats = self.num_heads // self.num_kv_heads
            k, v = k.repeat_interleave(repeats, dim=1), v.repeat_interleave(repeats, dim=1)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.attn_dropout if self.training else 0.0
        )
        return self.resid_dropout(self.wo(rearrange(out, "b h n d -> b n (h d)")))


class NormalizedSelfAttention(nn.Module):
    """VAR's attention: L2-normalised q and k with a learnable per-head temperature.

    ``mat_qkv`` has no bias; q and v have their own biases, k has none (names as upstream).
    With ``l2_norm`` the query is scaled by ``exp(min(log_scale, log 100))`` (initialised to 4)
    and the softmax scale is 1; without it the softmax scale is ``0.25 / sqrt(head_dim)``.
    """

    def __init__(self, dim: int, num_heads: int, *, l2_norm: bool = True, attn_dropout: float = 0.0,
                 resid_dropout: float = 0.0) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} must be divisible by num_heads {num_heads}")
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.l2_norm = l2_norm
        self.mat_qkv = Linear(dim, 3 * dim, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(dim))
        self.v_bias = nn.Parameter(torch.zeros(dim))
        self.scale_mul_1H11 = nn.Parameter(torch.full((1, num_heads, 1, 1), math.log(4.0))) if l2_norm else None
        self.max_log_scale = math.log(100.0)
        self.proj = Linear(dim, dim)
        self.attn_dropout = attn_dropout
        self.resid_dropout = nn.Dropout(resid_dropout)

    def forward(self, x: Tensor, *, mask: Tensor | None = None, cache: KVCache | None = None,
                layer: int = 0, store: bool = True) -> Tensor:
        """x (b, n, dim) -> (b, n, dim); keys and values of the n positions are appended to ``cache`` (or, with
        ``store=False``, only attended to: the cache's filled slots and length stay as they were)."""
        bias = torch.cat([self.q_bias, torch.zeros_like(self.q_bias), self.v_bias])
        qkv = linear(x, self.mat_qkv.weight, bias)
        q, k, v = rearrange(qkv, "b n (three h d) -> three b h n d", three=3, d=self.head_dim)
        scale = 0.25 / math.sqrt(self.head_dim)
        if self.l2_norm:
            q = F.normalize(q, dim=-1) * self.scale_mul_1H11.clamp(max=self.max_log_scale).exp()
            k = F.normalize(k, dim=-1)
            scale = 1.0
        if cache is not None:
            k, v = cache.append(layer, k, v, store=store)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale,
                                             dropout_p=self.attn_dropout if self.training else 0.0)
        return self.resid_dropout(self.proj(rearrange(out, "b h n d -> b n (h d)")))
