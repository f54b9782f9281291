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

import torch
from einops import rearrange
from torch import Tensor, nn

from arvis.nn.attention import NormalizedSelfAttention
from arvis.nn.kv_cache import KVCache
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
        self.linear = nn.Linear(cond_dim, 6 * dim)

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
            self.ada_lin = nn.Sequential(nn.SiLU(), nn.Linear(cond_dim, 6 * dim))

    def modulation(self, condition: Tensor) -> tuple[Tensor, ...]:
        """The six (b, 1, c) vectors gamma1, gamma2, scale1, scale2, shift1, shift2.

        ``condition`` is (b, d), or (b, 1, 6, c) from :class:`SharedAdaLN` with ``shared_adaln``.
        """
        if self.shared_adaln:
            return (self.ada_gss + condition).unbind(2)
        return rearrange(self.ada_lin(condition), "b (six c) -> b 1 six c", six=6).unbind(2)

    def forward(self, x: Tensor, condition: Tensor, *, mask: Tensor | None = None, cache: KVCache | None = None,
                layer: int = 0) -> Tensor:
        """x (b, n, c) -> (b, n, c)."""
        gamma1, gamma2, scale1, scale2, shift1, shift2 = self.modulation(condition)
        attended = self.attn(self.ln_wo_grad(x) * (1 + scale1) + shift1, mask=mask, cache=cache, layer=layer)
        x = x + self.drop_path(attended * gamma1)
        return x + self.drop_path(self.ffn(self.ln_wo_grad(x) * (1 + scale2) + shift2) * gamma2)


class AdaLNHead(nn.Module):
    """The LayerNorm before the output head, modulated by the condition (VAR's ``AdaLNBeforeHead``)."""

    def __init__(self, dim: int, cond_dim: int, *, norm_eps: float = 1e-6) -> None:
        super().__init__()
        self.ln_wo_grad = nn.LayerNorm(dim, eps=norm_eps, elementwise_affine=False)
        self.ada_lin = nn.Sequential(nn.SiLU(), nn.Linear(cond_dim, 2 * dim))

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
        self.linear = nn.Linear(dim, out_dim)
        self.scale_shift_table = nn.Parameter(torch.randn(2, dim) / dim ** 0.5)

    def forward(self, x: Tensor, condition: Tensor) -> Tensor:
        shift, scale = (self.scale_shift_table + rearrange(condition, "b c -> b 1 c")).unbind(1)  # (b, c) each
        return self.linear(self.norm_final(x) * (1 + scale[:, None]) + shift[:, None])
