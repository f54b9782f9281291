"""Feed-forward blocks: SwiGLU (Llama, LlamaGen), the GELU MLP (ViT, VAR) and a residual SwiGLU block."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from arvis.nn.linear import Linear
from arvis.nn.norms import RMSNorm


def find_multiple(value: int, multiple: int) -> int:
    """Rounds ``value`` up to a multiple of ``multiple``."""
    return value if value % multiple == 0 else value + multiple - value % multiple


def llama_hidden_dim(dim: int, multiple_of: int = 256) -> int:
    """Llama's SwiGLU width: 2/3 of 4·dim, rounded up to ``multiple_of`` (2048 for dim 768)."""
    return find_multiple(int(2 * 4 * dim / 3), multiple_of)


class SwiGLU(nn.Module):
    """w2(silu(w1 x) * w3 x), no biases (Shazeer 2020; Llama). Names follow Llama's w1/w2/w3."""

    def __init__(self, dim: int, hidden_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.w1 = Linear(dim, hidden_dim, bias=False)
        self.w3 = Linear(dim, hidden_dim, bias=False)
        self.w2 = Linear(hidden_dim, dim, bias=False)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.w2(F.silu(self.w1(x)) * self.w3(x)))


class GeluMLP(nn.Module):
    """fc2(gelu(fc1 x)), with biases unless ``bias=False`` (LlamaGen t2i's caption MLP); names fc1/fc2 as upstream.

    ``approximate="tanh"`` is VAR's ``FFN``; ``"none"`` (exact erf GELU) is timm's ``Mlp`` (ResTok, LARP).
    """

    def __init__(self, dim: int, hidden_dim: int, dropout: float = 0.0, approximate: str = "tanh", *,
                 out_dim: int | None = None, bias: bool = True) -> None:
        super().__init__()
        if approximate not in ("tanh", "none"):
            raise ValueError(f"approximate must be 'tanh' or 'none', got {approximate!r}")
        self.approximate = approximate
        self.fc1 = Linear(dim, hidden_dim, bias=bias)
        self.fc2 = Linear(hidden_dim, out_dim or dim, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.fc2(F.gelu(self.fc1(x), approximate=self.approximate)))


class ResidualSwiGLU(nn.Module):
    """x (..., d) -> x + SwiGLU(RMSNorm(x)) (..., d): the feed-forward half of a pre-norm Llama block on its own
    (Token-Shuffle's residual MLPs around the trunk); submodules ``norm`` and ``ffn`` (w1/w2/w3)."""

    def __init__(self, dim: int, hidden_dim: int, *, norm_eps: float = 1e-5, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm = RMSNorm(dim, norm_eps)
        self.ffn = SwiGLU(dim, hidden_dim, dropout)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.ffn(self.norm(x))
