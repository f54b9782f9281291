"""Pre-norm ViT block with QK-norm and LayerScale (Dosovitskiy et al., 2021; Dehghani et al., 2023 for
QK-norm; Touvron et al., 2021 for LayerScale), in timm's layout as used by ResTok's ``blocks.py``.

Shapes: b batch, n positions, h heads, d head dim. ``mask`` is boolean, True where a query may
attend, broadcastable to (b, h, n, n); ``None`` means full attention.

The block exposes its two residual branches (:meth:`ViTBlock.attend`, :meth:`ViTBlock.feed_forward`)
so that a model can act on the sequence between them (ResTok merges image tokens there).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from arvis.nn.mlp import GeluMLP


class LayerScale(nn.Module):
    """Per-channel learnable scale ``gamma * x`` (CaiT); ``init_value`` 1.0 starts as the identity."""

    def __init__(self, dim: int, init_value: float = 1.0) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init_value)))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gamma


class QKNormAttention(nn.Module):
    """Fused-qkv multi-head attention with LayerNorm on each head's queries and keys.

    ``key_bias=False`` (with ``qkv_bias``) keeps learned query and value biases and a fixed zero key bias, as
    timm's and ResTok's ``Attention`` with ``qkv_fused`` do (``q_bias``, a ``k_bias`` zero buffer, ``v_bias``);
    ``key_bias=True`` is one learned bias over all three (``qkv.bias``).
    """

    def __init__(self, dim: int, num_heads: int, *, qkv_bias: bool = True, key_bias: bool = True,
                 qk_norm: bool = True, attn_dropout: float = 0.0, proj_dropout: float = 0.0) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} must be divisible by num_heads {num_heads}")
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.attn_dropout = attn_dropout
        separate_biases = qkv_bias and not key_bias
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias and key_bias)
        if separate_biases:
            self.q_bias = nn.Parameter(torch.zeros(dim))
            self.register_buffer("k_bias", torch.zeros(dim), persistent=False)
            self.v_bias = nn.Parameter(torch.zeros(dim))
        self.separate_biases = separate_biases
        self.q_norm = nn.LayerNorm(self.head_dim) if qk_norm else nn.Identity()
        self.k_norm = nn.LayerNorm(self.head_dim) if qk_norm else nn.Identity()
        self.proj = nn.Linear(dim, dim)
        self.proj_dropout = nn.Dropout(proj_dropout)

    def forward(self, x: Tensor, *, mask: Tensor | None = None) -> Tensor:
        """x (b, n, dim) -> (b, n, dim)."""
        if self.separate_biases:
            qkv = F.linear(x, self.qkv.weight, torch.cat([self.q_bias, self.k_bias.to(self.q_bias.dtype), self.v_bias]))
        else:
            qkv = self.qkv(x)
        q, k, v = rearrange(qkv, "b n (three h d) -> three b h n d", three=3, h=self.num_heads)
        out = F.scaled_dot_product_attention(self.q_norm(q), self.k_norm(k), v, attn_mask=mask,
                                             dropout_p=self.attn_dropout if self.training else 0.0)
        return self.proj_dropout(self.proj(rearrange(out, "b h n d -> b n (h d)")))


class ViTBlock(nn.Module):
    """x + ls1(attn(norm1 x)), then x + ls2(mlp(norm2 x)); exact-GELU MLP (timm's ``Mlp``).

    Defaults: QK-norm, LayerScale 1, LayerNorm eps 1e-6 on norm1/norm2 (the QK norms use 1e-5), one learned
    qkv bias. ResTok's upstream blocks are ``norm_eps=1e-5, key_bias=False`` (a zero key bias); timm's plain
    ``Block`` as LARP uses it is ``qk_norm=False, layer_scale_init=None, qkv_bias=False, norm_eps=1e-5``.
    ``dropout`` is timm's ``proj_drop`` (after the attention projection and the MLP), ``attn_dropout`` its
    ``attn_drop``.
    """

    def __init__(self, dim: int, num_heads: int, *, mlp_ratio: float = 4.0, qk_norm: bool = True,
                 layer_scale_init: float | None = 1.0, qkv_bias: bool = True, key_bias: bool = True,
                 norm_eps: float = 1e-6, dropout: float = 0.0, attn_dropout: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = QKNormAttention(dim, num_heads, qkv_bias=qkv_bias, key_bias=key_bias, qk_norm=qk_norm,
                                    attn_dropout=attn_dropout, proj_dropout=dropout)
        self.ls1 = LayerScale(dim, layer_scale_init) if layer_scale_init is not None else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = GeluMLP(dim, int(dim * mlp_ratio), dropout=dropout, approximate="none")
        self.ls2 = LayerScale(dim, layer_scale_init) if layer_scale_init is not None else nn.Identity()

    def attend(self, x: Tensor, *, mask: Tensor | None = None) -> Tensor:
        """The attention residual branch: x (b, n, dim) -> (b, n, dim)."""
        return x + self.ls1(self.attn(self.norm1(x), mask=mask))

    def feed_forward(self, x: Tensor) -> Tensor:
        """The MLP residual branch: x (b, n, dim) -> (b, n, dim)."""
        return x + self.ls2(self.mlp(self.norm2(x)))

    def forward(self, x: Tensor, *, mask: Tensor | None = None) -> Tensor:
        return self.feed_forward(self.attend(x, mask=mask))


def xavier_init_vit(model: nn.Module, patch_embed: nn.Module) -> None:
    """The MAE/DiT initialisation LARP uses: Xavier-uniform weights and zero biases for every ``nn.Linear`` of
    ``model`` and for ``patch_embed`` (a conv initialised as the linear map it is)."""
    for module in model.modules():
        if isinstance(module, nn.Linear):
            nn.init.xavier_uniform_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    nn.init.xavier_uniform_(patch_embed.weight.view(patch_embed.weight.shape[0], -1))
    nn.init.zeros_(patch_embed.bias)
