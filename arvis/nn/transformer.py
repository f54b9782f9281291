"""The Llama decoder block (pre-norm RMSNorm, self-attention, SwiGLU), as used by LlamaGen."""

from __future__ import annotations

from torch import Tensor, nn

from arvis.nn.attention import SelfAttention
from arvis.nn.kv_cache import KVCache
from arvis.nn.mlp import SwiGLU
from arvis.nn.norms import RMSNorm


class LlamaBlock(nn.Module):
    """x + attn(norm(x)), then + ffn(norm(x)). Submodule names follow LlamaGen's checkpoints; ``qk_norm`` adds
    Chameleon's per-head LayerNorm of queries and keys (``attention.q_norm`` / ``k_norm``)."""

    def __init__(self, dim: int, num_heads: int, hidden_dim: int, *, num_kv_heads: int | None = None,
                 norm_eps: float = 1e-5, attn_dropout: float = 0.0, resid_dropout: float = 0.0,
                 ffn_dropout: float = 0.0, qk_norm: bool = False) -> None:
        super().__init__()
        self.attention_norm = RMSNorm(dim, norm_eps)
        self.attention = SelfAttention(dim, num_heads, num_kv_heads, attn_dropout=attn_dropout,
                                       resid_dropout=resid_dropout, qk_norm=qk_norm)
        self.ffn_norm = RMSNorm(dim, norm_eps)
        self.feed_forward = SwiGLU(dim, hidden_dim, ffn_dropout)

    def forward(self, x: Tensor, *, rope: Tensor | None = None, mask: Tensor | None = None,
                cache: KVCache | None = None, layer: int = 0, store: bool = True) -> Tensor:
        """x (b, n, dim) -> (b, n, dim)."""
        x = x + self.attention(self.attention_norm(x), rope=rope, mask=mask, cache=cache, layer=layer, store=store)
        return x + self.feed_forward(self.ffn_norm(x))
