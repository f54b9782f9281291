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
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from arvis.generators.base import Generator, GeneratorOutput
from arvis.nn.attention import causal_mask
from arvis.nn.conditioning import ClassEmbedding
from arvis.nn.kv_cache import KVCache
from arvis.nn.mlp import llama_hidden_dim
from arvis.nn.norms import RMSNorm
from arvis.nn.transformer import LlamaBlock


PREFIX_LENGTH = 1  # one class token (LlamaGen's cls_token_num for class-conditional models)


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

    def build_rope_table(self) -> Tensor | None:
        """(positions, head_dim/2, 2) float32 RoPE table of the whole input sequence (prefix included),
        or None for a model without RoPE."""
        raise NotImplementedError

    def rope_table(self, start: int, count: int, device: torch.device) -> Tensor | None:
        """(count, head_dim/2, 2) float32 RoPE rows of positions [start, start + count) on ``device``
        (None for models without RoPE, whose ``build_rope_table`` returns None)."""
        if device not in self._rope_by_device:
            with torch.inference_mode(False):  # a table first built while sampling must serve training too
                table = self.build_rope_table()
                self._rope_by_device[device] = None if table is None else table.to(device)
        table = self._rope_by_device[device]
        return None if table is None else table[start:start + count]

    def _run_layers(self, x: Tensor, start: int, mask: Tensor | None, cache: KVCache | None) -> Tensor:
        """x (b, n, d) at positions [start, start + n) -> logits (b, n, v) in float32."""
        rope = self.rope_table(start, x.shape[1], x.device)
        for index, layer in enumerate(self.layers):
            x = layer(x, rope=rope, mask=mask, cache=cache, layer=index)
        return self.output(self.norm(x)).float()


class NextTokenLlama(LlamaGenerator):
    """Base class (not registered) of one-token-per-step generators over the sequence
    [class token, t_0, ..., t_{l-2}], position i predicting t_i (LlamaGen's raster order, LARP's 1D order).

    Subclasses give the layout and the positions: RoPE through ``build_rope_table`` and/or absolute
    embeddings added to the inputs through :meth:`absolute_positions`.
    """

    unit = "token"

    def absolute_positions(self, start: int, count: int) -> Tensor | None:
        """(count, d) embeddings added to the inputs at positions [start, start + count), or None."""
        return None

    def _inputs(self, x: Tensor, start: int) -> Tensor:
        positions = self.absolute_positions(start, x.shape[1])
        return x if positions is None else x + positions

    def teacher_forcing_inputs(self, embeddings: Tensor) -> Tensor:
        """embeddings (b, n, d) of [class, t_0, ...] -> the layers' input in training: absolute positions (if
        any) added, then token dropout. Subclasses may order the two otherwise (LARP's AR)."""
        return self.tok_dropout(self._inputs(embeddings, 0))

    def forward(self, tokens: Tensor, labels: Tensor) -> GeneratorOutput:
        """Teacher forcing. tokens (b, l) long, labels (b,) long (null class allowed) -> loss and (b, l, v)."""
        self.check_tokens(tokens)
        self.check_labels(labels, allow_null=True)
        prefix = rearrange(self.cls_embedding(labels), "b d -> b 1 d")
        x = self.teacher_forcing_inputs(torch.cat([prefix, self.tok_embeddings(tokens[:, :-1])], dim=1))
        mask = causal_mask(x.shape[1], device=x.device)
        logits = self._run_layers(x, 0, mask, None)
        loss = F.cross_entropy(rearrange(logits, "b l v -> (b l) v"), rearrange(tokens, "b l -> (b l)"))
        accuracy = (logits.argmax(-1) == tokens).float().mean()
        return GeneratorOutput(loss=loss, logits=logits, metrics={"accuracy": accuracy.detach()})

    def new_cache(self, batch_size: int) -> KVCache:
        return KVCache(self.config.num_layers, PREFIX_LENGTH + self.layout.length)

    def step(self, tokens: Tensor | None, labels: Tensor, cache: KVCache) -> Tensor:
        """Feeds the class token (``tokens=None``, first call) or the next (b, n) tokens; -> (b, 1, v).

        Returns the logits of the token that follows the fed positions.
        """
        if tokens is None:
            if cache.length:
                raise ValueError("step(None, ...) feeds the class prefix and must be the first call on a fresh cache")
            self.check_labels(labels, allow_null=True)
            x = rearrange(self.cls_embedding(labels), "b d -> b 1 d")
        else:
            if cache.length == 0:
                raise ValueError("the first step must feed the class prefix: call step(None, labels, cache)")
            x = self.tok_embeddings(tokens)
        start, count = cache.length, x.shape[1]
        mask = causal_mask(count, start + count, device=x.device) if count > 1 else None
        logits = self._run_layers(self._inputs(x, start), start, mask, cache)
        cache.advance(count)
        return logits[:, -1:]
