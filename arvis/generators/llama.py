"""Llama-style generators (raster, HAR, sequence): embeddings, the public Llama trunk, LlamaGen's logits head.

Shapes: b batch, n positions, d model width, v vocabulary.

A generator here is embedding + trunk + head:

* embeddings: the condition prefix (``cls_embedding``: one class token, LlamaGen's label dropout teaching the null
  class; or, for a text-conditional generator, the p prompt positions of :class:`arvis.nn.prompt.PromptEmbedding`,
  named as LlamaGen t2i's ``CaptionEmbedder``), the token
  table (``tok_embeddings``) and the input dropout (``tok_dropout``); subclasses add what their layout needs
  (learned positions, placeholder embeddings);
* ``trunk``: :class:`arvis.nn.llama_trunk.LlamaTrunk`, with the RoPE table the subclass lays out;
* head: RMSNorm (``norm``) then a linear map to the vocabulary (``output``), zero-initialised as upstream.

Submodule names follow LlamaGen's checkpoints inside the blocks (``trunk.layers.{i}...``; folders saved by
arvis 0.1 had ``layers.{i}...``, renamed on load by :meth:`LlamaGenerator.upgrade_state_dict`). The public seam
for wrappers (Distilled Decoding, ControlAR, later SDAR, ...) is ``trunk``, :meth:`drop_condition` and
:meth:`null_rows`, :meth:`condition_embedding`, :meth:`embed_tokens`, :meth:`normed`, :meth:`logits`,
:meth:`step_output`, :meth:`attention_mask` and :meth:`remove_token_embeddings`, and for next-token ones
:meth:`NextTokenLlama.teacher_forcing_inputs` and :meth:`NextTokenLlama.absolute_positions`.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import torch
from einops import rearrange
from torch import Tensor, nn

from arvis.conditions import Condition, as_condition
from arvis.config import Config
from arvis.generators.base import Generator, GeneratorOutput, StepOutput
from arvis.nn.attention import causal_mask, with_key_padding
from arvis.nn.conditioning import ClassEmbedding
from arvis.nn.kv_cache import KVCache
from arvis.nn.linear import Linear
from arvis.nn.llama_trunk import LlamaTrunk, LlamaTrunkConfig
from arvis.nn.norms import HeadLayerNorm, RMSNorm
from arvis.nn.prompt import PromptEmbedding
from arvis.nn.rope import RotaryTable
from arvis.tokenizers.base import TokenLayout


@dataclasses.dataclass(frozen=True, kw_only=True)
class LlamaGeneratorConfig(LlamaTrunkConfig):
    """What every class-conditional Llama generator has beyond its trunk (the trunk's fields are inherited).

    Attributes:
        vocab_size: token vocabulary v.
        num_classes: real classes (the null class is one more).
        class_dropout: label dropout, teaching the null class used by classifier-free guidance.
        token_dropout: dropout on the input embeddings.
        initializer_range: std of the N(0, std) weights of every linear and embedding layer.
    """

    vocab_size: int = 16384
    num_classes: int = 1000
    class_dropout: float = 0.1
    token_dropout: float = 0.1
    initializer_range: float = 0.02

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.vocab_size < 2 or self.num_classes < 1:
            raise ValueError(f"vocab_size must be >= 2 and num_classes >= 1, got {self.vocab_size}, {self.num_classes}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class PromptConfig(Config):
    """The fixed-length prompt of a generator that reads prompts (text-to-image raster, the interleaved ones).

    Attributes:
        prompt_length: p, the fixed prompt length (LlamaGen t2i: 120).
        text_vocab_size: the text vocabulary of a learned table of prompt tokens (id 0 pads), or None when
            prompts come as features of a frozen text encoder (LlamaGen t2i: FLAN-T5-XL).
    """

    prompt_length: int = 120
    text_vocab_size: int | None = None

    def check_prompt_fields(self) -> None:
        """Raises ``ValueError`` on a bad prompt field (the configs that mix this in call it)."""
        if self.prompt_length < 1:
            raise ValueError(f"prompt_length must be positive, got {self.prompt_length}")
        if self.text_vocab_size is not None and self.text_vocab_size < 2:
            raise ValueError(f"text_vocab_size must be >= 2 (id 0 pads) or None, got {self.text_vocab_size}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class TextConditionConfig(PromptConfig):
    """What a generator that can take text prompts as its condition prefix adds to its config (mixed into the
    raster generator's; the prompt fields are :class:`PromptConfig`'s).

    Attributes:
        condition: ``"class"`` (one class token) or ``"text"`` (a prompt of ``prompt_length`` positions;
            ``class_dropout`` is then the prompt dropout, as upstream's ``class_dropout_prob``).
        text_feature_dim: e, the prompt feature width (the encoder's, 2048 for FLAN-T5-XL; or the table's).
    """

    condition: Literal["class", "text"] = "class"
    text_feature_dim: int = 2048

    def check_text_fields(self) -> None:
        """Raises ``ValueError`` on a bad text field (the configs that mix this in call it from their
        ``__post_init__``)."""
        self.check_prompt_fields()
        if self.condition not in ("class", "text"):
            raise ValueError(f"condition must be 'class' or 'text', got {self.condition!r}")
        if self.text_feature_dim < 1:
            raise ValueError(f"text_feature_dim must be positive, got {self.text_feature_dim}")

    @property
    def takes_text(self) -> bool:
        return self.condition == "text"

    @property
    def prefix_length(self) -> int:
        """Positions the condition takes before the first token: the prompt's p, or one class token."""
        return self.prompt_length if self.takes_text else 1


@dataclasses.dataclass(frozen=True, kw_only=True)
class RotaryConfig(Config):
    """The RoPE base of generators with rotary positions (mixed into their configs)."""

    rope_base: float = 10000.0


@dataclasses.dataclass(frozen=True, kw_only=True)
class TokenGridConfig(Config):
    """The one 2D token grid of a generator with 2D RoPE (raster, Token-Shuffle; mixed into their configs, whose
    trunk fields give the head dim).

    Attributes:
        token_grid: (rows, cols) of the tokenizer's grid.
    """

    token_grid: tuple[int, int] = (16, 16)

    def check_grid(self) -> None:
        """Raises ``ValueError`` on a grid side below 1 or a head dim that 2D RoPE cannot split in four (the
        configs that mix this in call it from their ``__post_init__``)."""
        if len(self.token_grid) != 2 or min(self.token_grid) < 1:
            raise ValueError(f"token_grid must be two positive sides (rows, cols), got {self.token_grid}")
        if self.head_dim % 4:
            raise ValueError(f"head dim dim/num_heads ({self.head_dim}) must be divisible by 4 for 2D RoPE")


class TokenGridLayout:
    """Generator mixin (raster, Token-Shuffle): the layout is the config's one 2D token grid, fitted to a
    tokenizer's by :meth:`fit_config`."""

    @property
    def layout(self) -> TokenLayout:
        return TokenLayout((tuple(self.config.token_grid),))

    @classmethod
    def fit_config(cls, config: TokenGridConfig, *, tokenizer, num_classes: int) -> TokenGridConfig:
        """Returns ``config`` with the grid, vocabulary and classes of a tokenizer and dataset."""
        layout = tokenizer.layout
        if len(layout.shapes) != 1 or len(layout.shapes[0]) != 2:
            raise ValueError(f"{cls.__name__} needs a tokenizer with a single 2D token grid, got layout "
                             f"{layout.shapes}")
        return dataclasses.replace(config, token_grid=tuple(layout.shapes[0]), vocab_size=tokenizer.vocab_size,
                                   num_classes=num_classes)


def reset_llama_parameters(model: nn.Module, std: float) -> None:
    """LlamaGen's init of a Llama generator: N(0, std) weights of every linear and embedding layer with zero
    biases, unit norms (qk-norms with zero biases), and a zero output head (``model.output``)."""
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=std)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, (RMSNorm, HeadLayerNorm)):
            module.reset_parameters()
    nn.init.zeros_(model.output.weight)


def check_prompt_ids(prompt: Tensor, prompt_length: int, vocab: int) -> None:
    """Raises ``ValueError`` unless ``prompt`` is (b, prompt_length) long ids of a text vocabulary of ``vocab``."""
    if prompt.dtype != torch.long or prompt.ndim != 2:
        raise ValueError(f"this generator takes prompts as (b, {prompt_length}) torch.long text-token ids, "
                         f"got {prompt.dtype} {tuple(prompt.shape)}")
    if prompt.numel() and (prompt.min() < 0 or prompt.max() >= vocab):
        raise ValueError(f"prompt token ids must lie in [0, {vocab - 1}] (the generator's text vocabulary), got "
                         f"[{prompt.min().item()}, {prompt.max().item()}]; encode prompts with the pipeline's "
                         "text tokenizer")


class LlamaGenerator(Generator):
    """Base class (not registered): condition prefix, token embeddings, Llama trunk, RMSNorm + linear head."""

    def __init__(self, config: LlamaGeneratorConfig, rope: RotaryTable | None = None) -> None:
        super().__init__(config)
        if self.takes_text:
            self.cls_embedding = PromptEmbedding(config.prompt_length, config.text_feature_dim, config.dim,
                                                 vocab_size=config.text_vocab_size, dropout=config.class_dropout)
        else:
            self.cls_embedding = ClassEmbedding(config.num_classes, config.dim, config.class_dropout)
        self.tok_embeddings = nn.Embedding(config.vocab_size, config.dim)
        self.tok_dropout = nn.Dropout(config.token_dropout)
        self.trunk = LlamaTrunk(config, rope)
        self.norm = RMSNorm(config.dim, config.norm_eps)
        self.output = Linear(config.dim, config.vocab_size, bias=False)

    def reset_parameters(self) -> None:
        """Upstream init: N(0, 0.02) for linear and embedding weights, unit norms, zero output head."""
        reset_llama_parameters(self, self.config.initializer_range)

    @classmethod
    def upgrade_state_dict(cls, state: dict[str, Tensor]) -> dict[str, Tensor]:
        """arvis 0.1 kept the blocks as ``layers.{i}``; they now live in the trunk, ``trunk.layers.{i}``."""
        return {("trunk." + key if key.startswith("layers.") else key): value for key, value in state.items()}

    # ---- the public seam ----------------------------------------------------------------------------------

    @property
    def takes_text(self) -> bool:
        """Whether the condition is a text prompt (a :class:`TextConditionConfig` with ``condition="text"``)."""
        return isinstance(self.config, TextConditionConfig) and self.config.takes_text

    @property
    def condition_fields(self) -> frozenset[str]:
        return frozenset({"prompt"}) if self.takes_text else frozenset({"labels"})

    @property
    def prefix_length(self) -> int:
        """Positions before the first token: one class token, or the prompt's p positions."""
        return self.config.prompt_length if self.takes_text else 1

    @property
    def prompt_length(self) -> int:
        if not self.takes_text:
            return super().prompt_length
        return self.config.prompt_length

    def check_prompt(self, prompt: Tensor, mask: Tensor) -> None:
        super().check_prompt(prompt, mask)
        vocab = self.config.text_vocab_size
        if vocab is None:
            if not prompt.is_floating_point() or prompt.ndim != 3 or prompt.shape[2] != self.config.text_feature_dim:
                raise ValueError(f"this generator takes prompts as (b, {self.prompt_length}, "
                                 f"{self.config.text_feature_dim}) float features of its frozen text encoder, got "
                                 f"{prompt.dtype} {tuple(prompt.shape)}")
        else:
            check_prompt_ids(prompt, self.prompt_length, vocab)

    def drop_condition(self, condition: Condition) -> Condition:
        """The training-time condition dropout (a no-op in eval mode), done here once, before
        :meth:`condition_embedding`: each class label replaced by the null class, or each prompt emptied, with
        probability ``class_dropout`` (upstream drops labels inside its label embedder; the draw is the same one).
        A wrapper that must know which rows were dropped (ControlAR zeroes their control) reads
        :meth:`null_rows` of the result."""
        if not self.training:
            return condition
        if condition.prompt_mask is not None:
            return condition.replace(prompt_mask=self.cls_embedding.drop_prompts(condition.prompt_mask))
        return condition.replace(labels=self.cls_embedding.drop_labels(condition.labels))

    def null_rows(self, condition: Condition) -> Tensor:
        """(b,) bool: the rows that carry the null condition (the null class, or the empty prompt)."""
        if condition.prompt_mask is not None:
            return ~condition.prompt_mask.any(1)
        return condition.labels == self.null_class

    def null_condition(self, batch_size: int, device: torch.device | str | None = None) -> Condition:
        """The null class, or the empty prompt: no real token, as (b, p) ids or (b, p, e) zero features."""
        if not self.takes_text:
            return super().null_condition(batch_size, device)
        shape = (batch_size, self.prompt_length)
        prompt = torch.zeros(*shape, dtype=torch.long, device=device) if self.config.text_vocab_size is not None \
            else torch.zeros(*shape, self.config.text_feature_dim, device=device)
        return Condition(prompt=prompt, prompt_mask=torch.zeros(*shape, dtype=torch.bool, device=device))

    def prefix_attendable(self, condition: Condition) -> Tensor | None:
        """(b, p) bool: the prefix positions other positions may attend to (a prompt's real tokens, or all of an
        empty prompt), or None when every prefix position may be (a class token)."""
        return None if condition.prompt_mask is None else PromptEmbedding.attendable(condition.prompt_mask)

    def attention_mask(self, condition: Condition, start: int, count: int, device: torch.device) -> Tensor | None:
        """The mask of ``count`` positions fed after ``start`` cached ones of a causal sequence (next-token and
        Token-Shuffle generators): causal, with a prompt's padding keys hidden; None for one class-conditioned
        position (it sees everything before it)."""
        mask = causal_mask(count, start + count, device=device) if count > 1 else None
        attendable = self.prefix_attendable(condition)
        if attendable is None:
            return mask
        return with_key_padding(mask, attendable, count, start + count)

    def rope_table(self, start: int, count: int, device: torch.device) -> Tensor | None:
        """(count, head_dim/2, 2) float32 RoPE rows of positions [start, start + count), or None without RoPE."""
        if self.trunk.rope is None:
            return None
        return self.trunk.rope.rows(torch.arange(start, start + count, device=device))

    def condition_embedding(self, condition: Condition | Tensor) -> Tensor:
        """condition (class ids (b,) long, null class allowed; or a prompt) -> the prefix (b, prefix_length, d).
        Nothing is dropped here: training passes drop the condition first (:meth:`drop_condition`)."""
        condition = as_condition(condition)
        if self.takes_text:
            return self.cls_embedding(condition.prompt, condition.prompt_mask)
        return rearrange(self.cls_embedding.embed(condition.labels), "b d -> b 1 d")

    def embed_tokens(self, tokens: Tensor) -> Tensor:
        """tokens (b, n) long -> (b, n, d) input embeddings."""
        if self.tok_embeddings is None:
            raise ValueError(f"this {type(self).__name__} has no token embeddings (a wrapper removed them: it feeds "
                             "continuous inputs)")
        return self.tok_embeddings(tokens)

    def remove_token_embeddings(self) -> None:
        """Deletes the token table, for wrappers that feed the trunk continuous inputs (Distilled Decoding):
        it would otherwise be an unused parameter. Token ids can no longer be embedded afterwards."""
        self.tok_embeddings = None

    def normed(self, hidden: Tensor) -> Tensor:
        """The head's RMSNorm of trunk hidden states (b, n, d)."""
        return self.norm(hidden)

    def logits(self, hidden: Tensor) -> Tensor:
        """Trunk hidden states (b, n, d) -> logits (b, n, v) float32."""
        return self.output(self.norm(hidden)).float()

    def step_output(self, hidden: Tensor, output: Literal["logits", "hidden", "both"]) -> Tensor | StepOutput:
        """What ``step`` returns for the hidden states (b, n, d) of the positions it predicts."""
        if output == "hidden":
            return hidden
        logits = self.logits(hidden)
        return StepOutput(logits=logits, hidden=hidden) if output == "both" else logits


class NextTokenLlama(LlamaGenerator):
    """Base class (not registered) of one-token-per-step generators over the sequence
    [condition prefix, t_0, ..., t_{l-2}], the last prefix position and then each t_{i-1} predicting t_i
    (LlamaGen's raster order, LARP's 1D order). A prompt prefix hides its padding keys from every position.

    Subclasses give the layout and the positions: RoPE through the trunk's table and/or absolute
    embeddings added to the inputs through :meth:`absolute_positions`.
    """

    unit = "token"
    samplers = ("next-token", "speculative-jacobi")

    def absolute_positions(self, start: int, count: int) -> Tensor | None:
        """(count, d) embeddings added to the inputs at positions [start, start + count), or None."""
        return None

    def _inputs(self, x: Tensor, start: int) -> Tensor:
        positions = self.absolute_positions(start, x.shape[1])
        return x if positions is None else x + positions

    def teacher_forcing_inputs(self, embeddings: Tensor) -> Tensor:
        """embeddings (b, n, d) of [class, t_0, ...] -> the trunk's input in training: absolute positions (if
        any) added, then token dropout. Subclasses may order the two otherwise (LARP's AR)."""
        return self.tok_dropout(self._inputs(embeddings, 0))

    def forward(self, tokens: Tensor, condition: Condition | Tensor, targets: Tensor | None = None) -> GeneratorOutput:
        """Teacher forcing. tokens (b, l) long inputs, condition (class ids (b,) long, null class allowed, or
        the fields the generator takes), targets (b, l) long (default ``tokens``; ``IGNORE_INDEX`` where a
        position has none) -> loss and logits (b, l, v)."""
        tokens, condition, targets = self.teacher_forcing_batch(tokens, condition, targets)
        condition = self.drop_condition(condition)
        x = torch.cat([self.condition_embedding(condition), self.embed_tokens(tokens[:, :-1])], dim=1)
        x = self.teacher_forcing_inputs(x)
        hidden = self.trunk(x, mask=self.attention_mask(condition, 0, x.shape[1], x.device))
        return self.teacher_forcing_output(self.logits(hidden[:, self.prefix_length - 1:]), targets)

    def new_cache(self, batch_size: int) -> KVCache:
        return self.trunk.new_cache(self.prefix_length + self.layout.length)

    def step(self, tokens: Tensor | None, condition: Condition | Tensor, cache: KVCache, *,
             output: Literal["logits", "hidden", "both"] = "logits", store: bool = True,
             every_position: bool = False) -> Tensor | StepOutput:
        """Feeds the condition prefix (``tokens=None``, first call) or the next (b, n) tokens; -> the logits (b, 1, v)
        of the token that follows the fed positions (``output="hidden"``: its trunk hidden state (b, 1, d);
        ``"both"``: a :class:`StepOutput`). ``store=False`` attends to the cache without changing its filled slots
        or length (the same positions can be fed again). ``every_position`` returns, for n fed tokens, the outputs
        of all n positions (b, n, ...), position i predicting the token after the i-th fed one (speculative
        decoding verifies a window of drafts in one pass this way).

        The condition is checked on the first call only (a per-step check would synchronise with the device);
        every call must pass the same condition. Decoding steps never drop the condition.
        """
        condition = as_condition(condition)
        self.check_step_order(tokens, cache.length, "the condition prefix")
        if tokens is None:
            self.check_condition(condition)
            x = self.condition_embedding(condition)
        else:
            x = self.embed_tokens(tokens)
        start, count = cache.length, x.shape[1]
        mask = self.attention_mask(condition, start, count, x.device)
        hidden = self.trunk(self._inputs(x, start), mask=mask, cache=cache, store=store)
        if every_position and tokens is not None:
            return self.step_output(hidden, output)
        if output == "hidden":
            return hidden[:, -1:]
        if self.takes_text:  # the prompt prefix: only its last position predicts
            hidden = hidden[:, -1:]
        logits = self.logits(hidden)[:, -1:]  # class: the head over every fed position, as before the trunk
        return StepOutput(logits=logits, hidden=hidden[:, -1:]) if output == "both" else logits
