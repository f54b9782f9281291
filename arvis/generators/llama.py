"""The Llama trunk shared by LlamaGen-style generators (raster, HAR): embeddings, blocks, head, RoPE.

Shapes: b batch, n positions, d model width, v vocabulary.

Subclasses keep LlamaGen's attribute names (``cls_embedding``, ``tok_embeddings``, ``layers``,
``norm``, ``output``) so that checkpoints map key for key, add what their layout needs, say how
their RoPE table is laid out (:meth:`LlamaGenerator.build_rope_table`) and call
:meth:`reset_parameters` at the end of ``__init__``. Configs need the fields read here
(``vocab_size``, ``num_classes``, ``dim``, ``num_layers``, ``num_heads``, ``num_kv_heads``,
``ffn_multiple_of``, ``norm_eps``, the dropouts and ``initializer_range``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from arvis.generators.base import Generator
from arvis.nn.conditioning import ClassEmbedding
from arvis.nn.kv_cache import KVCache
from arvis.nn.mlp import llama_hidden_dim
from arvis.nn.norms import RMSNorm
from arvis.nn.transformer import LlamaBlock


class LlamaGenerator(Generator):
    """Base class (not registered): class-token prefix, token embeddings, Llama blocks, RMSNorm, linear head."""

    def __init__(self, config) -> None:
        super().__init__(config)
        self.cls_embedding = ClassEmbedding(config.num_classes, config.dim, config.class_dropout)
        self.tok_embeddings = nn.Embedding(config.vocab_size, config.dim)
        self.tok_dropout = nn.Dropout(config.token_dropout)
        hidden_dim = llama_hidden_dim(config.dim, config.ffn_multiple_of)
        self.layers = nn.ModuleList(
            LlamaBlock(config.dim, config.num_heads, hidden_dim, num_kv_heads=config.num_kv_heads,
                       norm_eps=config.norm_eps, attn_dropout=config.attn_dropout,
                       resid_dropout=config.resid_dropout, ffn_dropout=config.ffn_dropout)
            for _ in range(config.num_layers)
        )
        self.norm = RMSNorm(config.dim, config.norm_eps)
        self.output = nn.Linear(config.dim, config.vocab_size, bias=False)
        # RoPE tables are derived from the config on first use per device, never stored as buffers:
        # module.to(dtype) must not round the angles (upstream keeps them in fp32), and a model
        # built on the meta device must still get real tables.
        self._rope_by_device: dict[torch.device, Tensor] = {}

    def reset_parameters(self) -> None:
        """Upstream init: N(0, 0.02) for linear and embedding weights, unit norms, zero output head."""
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=self.config.initializer_range)
                if getattr(module, "bias", None) is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, RMSNorm):
                module.reset_parameters()
        nn.init.zeros_(self.output.weight)

    def build_rope_table(self) -> Tensor:
        """(positions, head_dim/2, 2) float32 RoPE table of the whole input sequence (prefix included)."""
        raise NotImplementedError

    def rope_table(self, start: int, count: int, device: torch.device) -> Tensor:
        """(count, head_dim/2, 2) float32 RoPE rows of positions [start, start + count) on ``device``."""
        if device not in self._rope_by_device:
            with torch.inference_mode(False):  # a table first built while sampling must serve training too
                self._rope_by_device[device] = self.build_rope_table().to(device)
        return self._rope_by_device[device][start:start + count]

    def _run_layers(self, x: Tensor, start: int, mask: Tensor | None, cache: KVCache | None) -> Tensor:
        """x (b, n, d) at positions [start, start + n) -> logits (b, n, v) in float32."""
        rope = self.rope_table(start, x.shape[1], x.device)
        for index, layer in enumerate(self.layers):
            x = layer(x, rope=rope, mask=mask, cache=cache, layer=index)
        return self.output(self.norm(x)).float()
