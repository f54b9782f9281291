"""Token-Shuffle: one AR step per s×s window of tokens, merged along channels before the trunk.

Ma et al., "Token-Shuffle: Towards High-Resolution Image Generation with Autoregressive Models", 2025,
https://arxiv.org/abs/2504.17789 (Meta; no public code, so every detail below that the abstract does not state is
a choice, named as such).

Shapes: b batch, r×c token grid (l = r·c tokens), s window side, k = s² tokens per window, m = l / k windows,
d model width, v vocabulary.

A raster AR transformer over windows instead of tokens. The grid is read in window order (windows in raster order,
raster order inside each window: :mod:`arvis.nn.windows`); :class:`arvis.nn.token_shuffle.TokenShuffle` turns the
k token embeddings of a window into one trunk input and :class:`arvis.nn.token_shuffle.TokenUnshuffle` one trunk
output back into k token features, which the shared vocabulary head (RMSNorm + linear, zero-initialised as
LlamaGen's) maps to k logits. The sequence is [condition prefix, W_0, ..., W_{m-2}]: the last prefix position
predicts W_0 and W_j predicts W_{j+1}, so the trunk sees m positions instead of l (k× fewer) and an image takes
m decoding steps. 2D RoPE runs over the (r/s)×(c/s) window grid; the prefix (a class token or a prompt, as the
raster generator's, with a prompt's padding keys hidden) takes the identity rotation.

**The method's approximation:** given the trunk's state, the k tokens of a window are predicted, and sampled,
independently of one another (one softmax per token); only the next window sees them. Guidance and filtering act
per token.

Decoding unit "window": ``unit_lengths() = [k] * m``; the ``next-unit`` sampler draws every token of a window at
once and its guidance schedule runs over the m windows. Samples come back in the tokenizer's raster order
(:meth:`to_layout_order`); teacher-forced logits, prefixes and partial samples are in window order.

Choices (README faithfulness notes): ``shuffle_blocks`` / ``unshuffle_blocks`` residual SwiGLU blocks of the trunk's
feed-forward width (2 and 2 in the presets); no text-token vocabulary shared with an LLM (class ids, or prompts
through the raster generator's prompt embedding); the paper's stage 1 (training without shuffle first) is left to
the user (``window=1`` is the same architecture one token per step); the optional z-loss is PaLM's
``weight · mean(logsumexp(logits)²)`` over the positions with a target (the paper's weight is not public).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

import torch
from torch import Tensor

from arvis.conditions import Condition, as_condition
from arvis.generators.base import GENERATORS, GeneratorOutput, IGNORE_INDEX, StepOutput
from arvis.generators.llama import (LlamaGenerator, LlamaGeneratorConfig, RotaryConfig, TextConditionConfig,
                                   TokenGridConfig, TokenGridLayout)
from arvis.nn.kv_cache import KVCache
from arvis.nn.mlp import llama_hidden_dim
from arvis.nn.rope import RotaryTable, rope_table_2d
from arvis.nn.token_shuffle import TokenShuffle, TokenUnshuffle, compressed_width
from arvis.nn.windows import check_window, to_raster_order, to_window_order


@dataclasses.dataclass(frozen=True, kw_only=True)
class TokenShuffleConfig(LlamaGeneratorConfig, RotaryConfig, TextConditionConfig, TokenGridConfig):
    """Token-Shuffle configuration (the trunk's, every Llama generator's, the text and the grid fields are
    inherited; ``window`` must divide both sides of ``token_grid``).

    Attributes:
        window: s, the window side (the paper's default 2: 4× fewer trunk positions); 1 is one token per step.
        shuffle_blocks: residual MLP blocks after the merge (a choice: the paper's count is not public).
        unshuffle_blocks: residual MLP blocks before the split.
        z_loss_weight: weight of the z-loss on the logits (0: off; the paper adds one in its 2048² stage).
    """

    window: int = 2
    shuffle_blocks: int = 2
    unshuffle_blocks: int = 2
    z_loss_weight: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        self.check_text_fields()
        self.check_grid()
        check_window(*self.token_grid, self.window)
        compressed_width(self.dim, self.window)
        if self.shuffle_blocks < 0 or self.unshuffle_blocks < 0:
            raise ValueError(f"shuffle_blocks and unshuffle_blocks must be >= 0, got {self.shuffle_blocks}, "
                             f"{self.unshuffle_blocks}")
        if not math.isfinite(self.z_loss_weight) or self.z_loss_weight < 0:
            raise ValueError(f"z_loss_weight must be a finite number >= 0, got {self.z_loss_weight}")

    @property
    def window_grid(self) -> tuple[int, int]:
        """(r/s, c/s): the grid of windows, one trunk position each."""
        rows, cols = self.token_grid
        return rows // self.window, cols // self.window

    @property
    def window_tokens(self) -> int:
        """k = s², the tokens of one window (of one decoding step)."""
        return self.window * self.window


def z_loss(logits: Tensor, targets: Tensor) -> Tensor:
    """PaLM's auxiliary loss mean(logsumexp(logits)²) over the positions with a target: logits (b, l, v) float32,
    targets (b, l) long (``IGNORE_INDEX`` where none)."""
    valid = targets != IGNORE_INDEX
    return (logits.logsumexp(-1).square() * valid).sum() / valid.sum().clamp(min=1)


@GENERATORS.register
class TokenShuffleGenerator(TokenGridLayout, LlamaGenerator):
    """Class- or text-conditional AR transformer predicting one s×s window of tokens per step (Token-Shuffle)."""

    config_class = TokenShuffleConfig
    unit = "window"
    samplers = ("next-unit",)

    def __init__(self, config: TokenShuffleConfig) -> None:
        super().__init__(config, rope=RotaryTable(lambda: rope_table_2d(
            *config.window_grid, config.head_dim, config.rope_base, prefix_length=config.prefix_length)))
        hidden_dim = llama_hidden_dim(config.dim, config.ffn_multiple_of)
        options = dict(norm_eps=config.norm_eps, dropout=config.ffn_dropout)
        self.shuffle = TokenShuffle(config.dim, config.window, config.shuffle_blocks, hidden_dim, **options)
        self.unshuffle = TokenUnshuffle(config.dim, config.window, config.unshuffle_blocks, hidden_dim, **options)
        self.reset_parameters()

    @property
    def num_windows(self) -> int:
        """m, the windows of the grid: the trunk positions after the prefix, and the decoding steps."""
        return math.prod(self.config.window_grid)

    def unit_lengths(self) -> list[int]:
        """k = s² tokens per step, m steps."""
        return [self.config.window_tokens] * self.num_windows

    def to_layout_order(self, tokens: Tensor) -> Tensor:
        """(b, l, ...) in window order -> the tokenizer's raster order."""
        return to_raster_order(tokens, *self.config.token_grid, self.config.window)

    def from_layout_order(self, tokens: Tensor) -> Tensor:
        """(b, l, ...) in raster order -> window order (teacher forcing, prefixes)."""
        return to_window_order(tokens, *self.config.token_grid, self.config.window)

    # ---- the public seam beyond LlamaGenerator's ----------------------------------------------------------

    def window_inputs(self, tokens: Tensor) -> Tensor:
        """tokens (b, n·k) long in window order -> the trunk inputs of those n windows (b, n, d)."""
        return self.shuffle(self.embed_tokens(tokens))

    def token_features(self, hidden: Tensor) -> Tensor:
        """Trunk outputs (b, n, d), one per predicted window -> the features (b, n·k, d) of the windows' tokens,
        which :meth:`logits` maps to the vocabulary."""
        return self.unshuffle(hidden)

    # ---- training and decoding ----------------------------------------------------------------------------

    def forward(self, tokens: Tensor, condition: Condition | Tensor, targets: Tensor | None = None) -> GeneratorOutput:
        """Teacher forcing. tokens (b, l) long in raster order, condition (class ids (b,) long, null class
        allowed, or a prompt), targets (b, l) long (default ``tokens``; ``IGNORE_INDEX`` where none) -> loss
        (cross-entropy, plus the z-loss when weighted) and logits (b, l, v) in window order."""
        tokens, condition, targets = self.teacher_forcing_batch(tokens, condition, targets)
        condition = self.drop_condition(condition)
        fed = self.window_inputs(tokens[:, :-self.config.window_tokens])
        x = self.tok_dropout(torch.cat([self.condition_embedding(condition), fed], dim=1))
        hidden = self.trunk(x, mask=self.attention_mask(condition, 0, x.shape[1], x.device))
        logits = self.logits(self.token_features(hidden[:, self.prefix_length - 1:]))
        output = self.teacher_forcing_output(logits, targets)
        if self.config.z_loss_weight:
            penalty = z_loss(logits, targets)
            output.loss = output.loss + self.config.z_loss_weight * penalty
            output.metrics["z_loss"] = penalty.detach()
        return output

    def new_cache(self, batch_size: int) -> KVCache:
        return self.trunk.new_cache(self.prefix_length + self.num_windows)

    def step(self, tokens: Tensor | None, condition: Condition | Tensor, cache: KVCache, *,
             output: Literal["logits", "hidden", "both"] = "logits", store: bool = True) -> Tensor | StepOutput:
        """Feeds the condition prefix (``tokens=None``, first call) or the (b, n·k) ids of the next n windows in
        window order (the sampler feeds one); returns the logits (b, k, v) of the window that follows, or the
        features (b, k, d) its logits come from (``output="hidden"``; ``"both"``: a :class:`StepOutput`).
        ``store=False`` leaves the cache unchanged. The condition is checked on the first call only."""
        condition = as_condition(condition)
        self.check_step_order(tokens, cache.length, "the condition prefix")
        if tokens is None:
            self.check_condition(condition)
            x = self.condition_embedding(condition)
        else:
            self.check_window_tokens(tokens, condition.batch_size)
            x = self.window_inputs(tokens)
        start, count = cache.length, x.shape[1]
        if start + count > self.prefix_length + self.num_windows - 1:
            raise ValueError(f"the cache holds {start} positions and {count} more would pass the last input "
                             f"window ({self.num_windows - 1} windows follow the prefix); every window has been fed")
        mask = self.attention_mask(condition, start, count, x.device)
        hidden = self.trunk(x, mask=mask, cache=cache, store=store)
        return self.step_output(self.token_features(hidden[:, -1:]), output)

    def check_window_tokens(self, tokens: Tensor, batch_size: int) -> None:
        """``ValueError`` unless ``tokens`` are (b, n·k) long ids in range: whole windows."""
        k = self.config.window_tokens
        if (not isinstance(tokens, Tensor) or tokens.dtype != torch.long or tokens.ndim != 2
                or tokens.shape[0] != batch_size or tokens.shape[1] == 0 or tokens.shape[1] % k):
            raise ValueError(f"expected ({batch_size}, n·{k}) long ids of whole {self.config.window}×"
                             f"{self.config.window} windows in window order, got "
                             f"{getattr(tokens, 'dtype', type(tokens).__name__)} {tuple(getattr(tokens, 'shape', ()))}")
        if tokens.min() < 0 or tokens.max() >= self.vocab_size:
            raise ValueError(f"token ids must lie in [0, {self.vocab_size - 1}]")


_TINY = dict(vocab_size=64, token_grid=(4, 4), window=2, num_classes=10, dim=32, num_layers=2, num_heads=2,
             ffn_multiple_of=32, shuffle_blocks=1, unshuffle_blocks=1)
_DEMO = dict(vocab_size=256, token_grid=(16, 16), window=2, num_classes=10, dim=128, num_layers=4, num_heads=4,
             ffn_multiple_of=64, token_dropout=0.0, resid_dropout=0.0, ffn_dropout=0.0)

GENERATORS.add_preset("token-shuffle-tiny", TokenShuffleConfig(**_TINY, z_loss_weight=1e-4),
                      "2-layer test model for vq-tiny (4x4 grid, 2x2 windows: 4 steps of 4 tokens)")
GENERATORS.add_preset("token-shuffle-t2i-tiny", TokenShuffleConfig(**_TINY, condition="text", prompt_length=6,
                                                                   text_vocab_size=32, text_feature_dim=16),
                      "2-layer text-to-image test model for vq-tiny (6 prompt positions, 2x2 windows)")
GENERATORS.add_preset("token-shuffle-demo", TokenShuffleConfig(**_DEMO),
                      "glyph model for a 64 px vq-demo (16x16 grid, 2x2 windows: 64 steps of 4 tokens)")
GENERATORS.add_preset("token-shuffle-b", TokenShuffleConfig(token_grid=(16, 16), window=2, num_classes=1000),
                      "LlamaGen GPT-B's trunk (12 layers, width 768) with 2x2 windows on VQ-16 at 256 px: 64 steps "
                      "(not a paper model; the speed benchmark's counterpart of llamagen-b)")
GENERATORS.add_preset("token-shuffle-2.7b", TokenShuffleConfig(
    vocab_size=8192, token_grid=(64, 64), window=2, dim=3072, num_layers=20, num_heads=24, condition="text",
    prompt_length=128, text_vocab_size=32000, text_feature_dim=3072),
                      "paper scale, partly unverified: width 3072 and 20 blocks (the paper's 2.7B); 24 heads, an "
                      "8192-code 16x tokenizer at 1024 px (64x64 grid -> 1024 windows) and a 32000-word prompt "
                      "table are choices")
