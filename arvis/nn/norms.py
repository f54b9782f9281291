"""Normalisation layers."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class RMSNorm(nn.Module):
    """Root-mean-square norm (Zhang & Sennrich 2019), computed in float32 as in Llama/LlamaGen."""

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def reset_parameters(self) -> None:
        nn.init.ones_(self.weight)

    def forward(self, x: Tensor) -> Tensor:
        normed = F.rms_norm(x.float(), (x.shape[-1],), eps=self.eps)  # x · rsqrt(mean(x²) + eps), one kernel
        return normed.type_as(x) * self.weight


class HeadLayerNorm(nn.Module):
    """Chameleon's qk-norm: a LayerNorm over each head's channels with a weight and bias per head and channel.

    x (b, h, n, d) -> (b, h, n, d); the normalisation runs in float32 and the result has x's dtype.
    """

    def __init__(self, num_heads: int, head_dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_heads, 1, head_dim))
        self.bias = nn.Parameter(torch.zeros(num_heads, 1, head_dim))

    def reset_parameters(self) -> None:
        nn.init.ones_(self.weight)
        nn.init.zeros_(self.bias)

    def forward(self, x: Tensor) -> Tensor:
        normed = F.layer_norm(x.float(), (x.shape[-1],), eps=self.eps).type_as(x)
        return normed * self.weight + self.bias
