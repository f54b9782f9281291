"""Token-Shuffle's two operations around a Transformer trunk (Ma et al., arXiv 2504.17789; no public code).

Shapes: b batch, m windows, s window side (k = s² tokens per window), d model width, d' = d / s².

* :class:`TokenShuffle`: per-token embeddings (b, m·k, d) in window order -> one input per window (b, m, d): a
  linear map compresses each token to d', the window's k vectors are concatenated along channels (back to d) and
  residual MLP blocks follow.
* :class:`TokenUnshuffle`: one trunk output per window (b, m, d) -> features of the window's tokens (b, m·k, d):
  residual MLP blocks, an RMSNorm, a linear map d -> k·d', the split into k vectors of d', and a per-token MLP
  d' -> d that the vocabulary head then reads.

Choices the paper's text leaves open (named here and in the README's faithfulness notes): the residual blocks are
pre-norm SwiGLU blocks (:class:`arvis.nn.mlp.ResidualSwiGLU`) of the trunk's feed-forward width; the unshuffle
normalises the trunk output before its linear map (the place a Llama's final norm takes before its head), and its
per-token MLP is a GELU MLP of hidden width d; the residual blocks and that MLP take the trunk's feed-forward dropout.
With s = 1 both operations keep one token per position.
"""

from __future__ import annotations

from torch import Tensor, nn

from arvis.nn.linear import Linear
from arvis.nn.mlp import GeluMLP, ResidualSwiGLU
from arvis.nn.norms import RMSNorm
from arvis.nn.windows import merge_windows, split_windows


def _residual_blocks(count: int, dim: int, hidden_dim: int, norm_eps: float, dropout: float) -> nn.ModuleList:
    return nn.ModuleList(ResidualSwiGLU(dim, hidden_dim, norm_eps=norm_eps, dropout=dropout) for _ in range(count))


def compressed_width(dim: int, window: int) -> int:
    """d' = d / s²; ``ValueError`` unless s² divides d."""
    if window < 1 or dim % (window * window):
        raise ValueError(f"the model width {dim} must be divisible by window² = {window * window} (each of a "
                         f"window's tokens takes d/s² channels of the merged token)")
    return dim // (window * window)


class TokenShuffle(nn.Module):
    """(b, m·s², d) token embeddings in window order -> (b, m, d) merged window inputs."""

    def __init__(self, dim: int, window: int, num_blocks: int, hidden_dim: int, *, norm_eps: float = 1e-5,
                 dropout: float = 0.0) -> None:
        super().__init__()
        self.window = window
        self.compress = Linear(dim, compressed_width(dim, window))
        self.blocks = _residual_blocks(num_blocks, dim, hidden_dim, norm_eps, dropout)

    def forward(self, embeddings: Tensor) -> Tensor:
        x = merge_windows(self.compress(embeddings), self.window)
        for block in self.blocks:
            x = block(x)
        return x


class TokenUnshuffle(nn.Module):
    """(b, m, d) trunk outputs, one per window -> (b, m·s², d) features of the windows' tokens, in window order."""

    def __init__(self, dim: int, window: int, num_blocks: int, hidden_dim: int, *, norm_eps: float = 1e-5,
                 dropout: float = 0.0) -> None:
        super().__init__()
        width = compressed_width(dim, window)
        self.window = window
        self.blocks = _residual_blocks(num_blocks, dim, hidden_dim, norm_eps, dropout)
        self.norm = RMSNorm(dim, norm_eps)
        self.expand = Linear(dim, window * window * width)
        self.token_mlp = GeluMLP(width, dim, dropout, approximate="none", out_dim=dim)

    def forward(self, hidden: Tensor) -> Tensor:
        for block in self.blocks:
            hidden = block(hidden)
        return self.token_mlp(split_windows(self.expand(self.norm(hidden)), self.window))
