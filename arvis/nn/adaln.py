"""Adaptive-LayerNorm transformer pieces conditioned on a vector (VAR's ``basic_var.py`` blocks).

Shapes: b batch, n positions, c width, d condition width.

A block normalises with a LayerNorm without affine parameters and modulates it with a
scale and shift computed from the condition, and gates both residual branches:

    gamma1, gamma2, scale1, scale2, shift1, shift2 = ada_lin(cond)      (6 vectors of width c)
    x = x + gamma1 * attn(LN(x) * (1 + scale1) + shift1)
    x = x + gamma2 * mlp(LN(x) * (1 + scale2) + shift2)

With ``shared_adaln`` (VAR-d36) one :class:`SharedAdaLN` computes the six vectors once per
forward pass and every block adds its own learnable ``ada_gss`` (1, 1, 6, c) to them.
Submodule names follow upstream so that released checkpoints map one to one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import torch
from einops import rearrange
from torch import Tensor, nn

from arvis.config import Config
from arvis.nn.attention import NormalizedSelfAttention
from arvis.nn.kv_cache import DecodingPasses, KVCache
from arvis.nn.linear import Linear
from arvis.nn.llama_trunk import check_additions
from arvis.nn.mlp import GeluMLP


class DropPath(nn.Module):
    """Stochastic depth: zeroes a whole residual branch per sample with probability ``p`` (training only)."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"drop path probability must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = torch.rand((x.shape[0],) + (1,) * (x.ndim - 1), device=x.device) >= self.p
        return x * keep.to(x.dtype) / (1.0 - self.p)


class SharedAdaLN(nn.Module):
    """SiLU then one linear map of the condition to the six modulation vectors, (b, d) -> (b, 1, 6, c)."""

    def __init__(self, cond_dim: int, dim: int) -> None:
        super().__init__()
        self.linear = Linear(cond_dim, 6 * dim)

    def forward(self, condition: Tensor) -> Tensor:
        return rearrange(self.linear(torch.nn.functional.silu(condition)), "b (six c) -> b 1 six c", six=6)


class AdaLNBlock(nn.Module):
    """Pre-norm transformer block with AdaLN modulation and gates (VAR's ``AdaLNSelfAttn``)."""

    def __init__(self, dim: int, num_heads: int, cond_dim: int, *, mlp_ratio: float = 4.0,
                 shared_adaln: bool = False, norm_eps: float = 1e-6, attn_l2_norm: bool = True,
                 dropout: float = 0.0, attn_dropout: float = 0.0, drop_path: float = 0.0) -> None:
        super().__init__()
        self.dim = dim
        self.attn = NormalizedSelfAttention(dim, num_heads, l2_norm=attn_l2_norm, attn_dropout=attn_dropout,
                                            resid_dropout=dropout)
        self.ffn = GeluMLP(dim, round(dim * mlp_ratio), dropout)
        self.ln_wo_grad = nn.LayerNorm(dim, eps=norm_eps, elementwise_affine=False)
        self.drop_path = DropPath(drop_path)
        self.shared_adaln = shared_adaln
        if shared_adaln:
            self.ada_gss = nn.Parameter(torch.randn(1, 1, 6, dim) / dim ** 0.5)
        else:
            self.ada_lin = nn.Sequential(nn.SiLU(), Linear(cond_dim, 6 * dim))

    def modulation(self, condition: Tensor) -> tuple[Tensor, ...]:
        """The six (b, 1, c) vectors gamma1, gamma2, scale1, scale2, shift1, shift2.

        ``condition`` is (b, d), or (b, 1, 6, c) from :class:`SharedAdaLN` with ``shared_adaln``.
        """
        if self.shared_adaln:
            return (self.ada_gss + condition).unbind(2)
        return rearrange(self.ada_lin(condition), "b (six c) -> b 1 six c", six=6).unbind(2)

    def forward(self, x: Tensor, condition: Tensor, *, mask: Tensor | None = None, cache: KVCache | None = None,
                layer: int = 0, store: bool = True) -> Tensor:
        """x (b, n, c) -> (b, n, c)."""
        gamma1, gamma2, scale1, scale2, shift1, shift2 = self.modulation(condition)
        attended = self.attn(self.ln_wo_grad(x) * (1 + scale1) + shift1, mask=mask, cache=cache, layer=layer,
                             store=store)
        x = x + self.drop_path(attended * gamma1)
        return x + self.drop_path(self.ffn(self.ln_wo_grad(x) * (1 + scale2) + shift2) * gamma2)


@dataclasses.dataclass(frozen=True, kw_only=True)
class AdaLNTrunkConfig(Config):
    """The fields of VAR's AdaLN trunk; :class:`arvis.generators.var.VARConfig` derives from it.

    Attributes:
        depth, dim, num_heads, mlp_ratio: blocks, width c, heads and MLP width / c.
        norm_eps: eps of the affine-free LayerNorms.
        shared_adaln: one :class:`SharedAdaLN` for all blocks (VAR-d36-s) instead of one per block.
        attn_l2_norm: VAR's L2-normalised attention with a learned temperature.
        dropout, attn_dropout: dropout after attention / the MLP, and on the attention weights.
        drop_path_rate: stochastic depth of the last block (linear from 0 over the blocks).
    """

    depth: int = 16
    dim: int = 1024
    num_heads: int = 16
    mlp_ratio: float = 4.0
    norm_eps: float = 1e-6
    shared_adaln: bool = False
    attn_l2_norm: bool = True
    dropout: float = 0.0
    attn_dropout: float = 0.0
    drop_path_rate: float = 0.1 * 16 / 24  # build_vae_var: 0.1 * depth / 24

    def __post_init__(self) -> None:
        if self.depth < 1 or self.dim % self.num_heads:
            raise ValueError(f"depth must be >= 1 and dim ({self.dim}) divisible by num_heads ({self.num_heads})")
        if not 0.0 <= self.drop_path_rate < 1.0:
            raise ValueError(f"drop_path_rate must be in [0, 1), got {self.drop_path_rate}")


class AdaLNTrunk(nn.Module):
    """VAR's trunk: AdaLN blocks conditioned on a vector -> hidden states (b, n, c) before the head's norm.

    ``forward(x, condition, ...)`` takes the embedded inputs (positions already added by the generator), the
    condition (b, d) (VAR: the class embedding), and ``mask``, ``cache``, ``store`` and ``additions`` as
    :class:`arvis.nn.llama_trunk.LlamaTrunk` does.
    """

    def __init__(self, config: AdaLNTrunkConfig) -> None:
        super().__init__()
        c = config.dim
        self.shared_ada_lin = SharedAdaLN(c, c) if config.shared_adaln else None
        # stochastic depth rises linearly over the blocks, from 0 to drop_path_rate (upstream's linspace)
        rates = [config.drop_path_rate * index / max(1, config.depth - 1) for index in range(config.depth)]
        self.blocks = nn.ModuleList(
            AdaLNBlock(c, config.num_heads, c, mlp_ratio=config.mlp_ratio, shared_adaln=config.shared_adaln,
                       norm_eps=config.norm_eps, attn_l2_norm=config.attn_l2_norm, dropout=config.dropout,
                       attn_dropout=config.attn_dropout, drop_path=rate)
            for rate in rates
        )

        self.decoding = DecodingPasses(self._block_stack)

    def new_cache(self, max_length: int, cache_class: type[KVCache] = KVCache) -> KVCache:
        """An empty KV cache (``cache_class``: VAR's keeps its sampling state too) for ``max_length`` positions,
        static once :meth:`compile_decoding` was called."""
        return self.decoding.new_cache(len(self.blocks), max_length, cache_class)

    def compile_decoding(self, **options) -> None:
        """Decodes with static KV caches through ``torch.compile(**options)`` (see :class:`DecodingPasses`)."""
        self.decoding.compile(**options)

    def forward(self, x: Tensor, condition: Tensor, *, mask: Tensor | None = None, cache: KVCache | None = None,
                store: bool = True, additions: Mapping[int, Tensor] | None = None) -> Tensor:
        """x (b, n, c), condition (b, d) -> (b, n, c)."""
        check_additions(additions, len(self.blocks))
        block_condition = self.shared_ada_lin(condition) if self.shared_ada_lin is not None else condition
        return self.decoding(x, block_condition, mask=mask, cache=cache, store=store, additions=additions)

    def _block_stack(self, x: Tensor, block_condition: Tensor, mask: Tensor | None, cache: KVCache | None,
                     store: bool, additions: Mapping[int, Tensor] | None) -> Tensor:
        for index, block in enumerate(self.blocks):
            if additions is not None and index in additions:
                x = x + additions[index]
            x = block(x, block_condition, mask=mask, cache=cache, layer=index, store=store)
        return x


class AdaLNHead(nn.Module):
    """The LayerNorm before the output head, modulated by the condition (VAR's ``AdaLNBeforeHead``)."""

    def __init__(self, dim: int, cond_dim: int, *, norm_eps: float = 1e-6) -> None:
        super().__init__()
        self.ln_wo_grad = nn.LayerNorm(dim, eps=norm_eps, elementwise_affine=False)
        self.ada_lin = nn.Sequential(nn.SiLU(), Linear(cond_dim, 2 * dim))

    def forward(self, x: Tensor, condition: Tensor) -> Tensor:
        """x (b, n, c), condition (b, d) -> (b, n, c)."""
        scale, shift = rearrange(self.ada_lin(condition), "b (two c) -> b 1 two c", two=2).unbind(2)
        return self.ln_wo_grad(x) * (1 + scale) + shift


class TableModulatedHead(nn.Module):
    """PixArt's final layer (DD1's LlamaGen regression head, ``FinalLayer``): a LayerNorm without affine
    parameters, shift and scale from a learned (2, c) table plus the condition, then a linear map.

    x (b, n, c), condition (b, c) -> (b, n, out):  linear(LN(x) * (1 + table[1] + cond) + table[0] + cond).
    """

    def __init__(self, dim: int, out_dim: int, *, norm_eps: float = 1e-6) -> None:
        super().__init__()
        self.norm_final = nn.LayerNorm(dim, eps=norm_eps, elementwise_affine=False)
        self.linear = Linear(dim, out_dim)
        self.scale_shift_table = nn.Parameter(torch.randn(2, dim) / dim ** 0.5)

    def forward(self, x: Tensor, condition: Tensor) -> Tensor:
        shift, scale = (self.scale_shift_table + rearrange(condition, "b c -> b 1 c")).unbind(1)  # (b, c) each
        return self.linear(self.norm_final(x) * (1 + scale[:, None]) + shift[:, None])
