"""Generator interface: teacher-forced training plus the one primitive samplers drive.

A generator never samples. It exposes
    ``forward(inputs, condition, targets=None) -> GeneratorOutput``  teacher forcing with the method's own mask
        (targets default to the inputs; ``IGNORE_INDEX`` marks positions without a target), and
    ``new_cache(batch_size)`` / ``step(tokens, condition, cache)``  incremental decoding,
where one ``step`` consumes the next unit of input (``None`` on the first call: the
condition prefix) and returns the logits of the next unit, (b, unit_length, vocab), or with
``output="hidden"`` / ``"both"`` the trunk's hidden states of those positions (for continuous heads).
Samplers (``arvis.samplers``) own every decoding policy around these calls; a generator names the ones that
can drive it (:attr:`Generator.samplers`, its default first).

Conditions: ``condition`` is an :class:`arvis.conditions.Condition` (a bare (b,) long tensor is read as class
ids). A generator declares the fields it takes (:attr:`Generator.condition_fields`), its one joint null
condition for guidance (:meth:`Generator.null_condition`) and its prefix length (:attr:`Generator.prefix_length`,
the positions the condition takes before the first token).

Token order: a generator may emit tokens in its own unit order; :meth:`Generator.to_layout_order` maps a
sequence in that order to the tokenizer's layout order and :meth:`Generator.from_layout_order` back
(identity by default). Teacher forcing takes layout order; samplers return a whole sequence sampled from the
condition in layout order, while a prefix to continue and the partial sequences of a shorter ``length`` are in
emission order.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from arvis.checks import check_token_ids
from arvis.conditions import Condition, as_condition
from arvis.modeling import Component
from arvis.nn.kv_cache import KVCache
from arvis.registry import Registry
from arvis.tokenizers.base import TokenLayout, TokenSpec

GENERATORS: Registry = Registry("generator")
IGNORE_INDEX = -100  # a target that no loss reads (nanoGPT's and torch's cross-entropy convention)


@dataclasses.dataclass
class GeneratorOutput:
    """Teacher-forced result.

    Attributes:
        loss: scalar training loss.
        logits: (b, l, vocab) logits; position i predicts token i.
        metrics: named scalar diagnostics (e.g. token accuracy).
    """

    loss: Tensor
    logits: Tensor
    metrics: dict[str, Tensor]


@dataclasses.dataclass
class StepOutput:
    """What ``step(..., output="both")`` returns: logits (b, n, v) float32 and the trunk's hidden states
    (b, n, d) of the n positions it predicts (before any head norm)."""

    logits: Tensor
    hidden: Tensor


class Generator(Component):
    """Base class of conditional token generators (class-conditional unless a subclass declares other fields)."""

    kind: ClassVar[str] = "generator"
    registry = GENERATORS
    unit: ClassVar[str] = "token"  # what one decoding step emits, descriptive: "token" | "scale" | "level" | ...
    # the registered samplers (arvis.samplers.SAMPLERS) that can drive this generator; the first is its default
    samplers: ClassVar[tuple[str, ...]] = ("next-token",)

    @property
    def layout(self) -> TokenLayout:
        raise NotImplementedError

    @property
    def vocab_size(self) -> int:
        """Token vocabulary (every generator config names it ``vocab_size``)."""
        return self.config.vocab_size

    @property
    def token_spec(self) -> TokenSpec:
        """The tokens this generator models, as a tokenizer must provide them (:meth:`TokenSpec.check_serves`):
        its layout and id vocabulary; a generator of token vectors (continuous or code vectors) also names
        their width ``latent_dim``."""
        return TokenSpec(self.layout, self.vocab_size, None)

    @property
    def num_classes(self) -> int:
        """Real classes, without the null class (every generator config names it ``num_classes``)."""
        return self.config.num_classes

    @property
    def null_class(self) -> int:
        """The label id of the unconditional ("null") class used for classifier-free guidance."""
        return self.num_classes

    @classmethod
    def fit_config(cls, config, *, tokenizer, num_classes: int):
        """Returns ``config`` adapted to a tokenizer (layout, vocabulary, ...) and a dataset's classes."""
        raise NotImplementedError

    def bind_tokenizer(self, tokenizer) -> None:
        """Takes what the generator needs from its tokenizer's weights (VAR: the codebook); most need nothing."""

    def check_tokenizer(self, tokenizer) -> None:
        """Raises ``ValueError`` if this generator cannot model ``tokenizer``'s tokens beyond layout and
        vocabulary (which :func:`arvis.pipeline.check_compatible` checks); most need nothing more."""

    def forward(self, inputs: Tensor, labels: Tensor, targets: Tensor | None = None) -> GeneratorOutput:
        raise NotImplementedError

    def to_layout_order(self, tokens: Tensor) -> Tensor:
        """(b, l) tokens (or (b, l, ...) per-token values) in this generator's order -> the tokenizer's layout
        order. The identity unless a generator emits its units in another order (Token-Shuffle's windows)."""
        return tokens

    def from_layout_order(self, tokens: Tensor) -> Tensor:
        """The inverse of :meth:`to_layout_order`."""
        return tokens

    def check_targets(self, targets: Tensor, batch_size: int) -> Tensor:
        """Raises ``ValueError`` unless ``targets`` are (b, l) long ids or ``IGNORE_INDEX``; returns them."""
        if not isinstance(targets, Tensor) or targets.dtype != torch.long \
                or tuple(targets.shape) != (batch_size, self.layout.length):
            raise ValueError(f"expected targets of shape ({batch_size}, {self.layout.length}) torch.long, got "
                             f"{getattr(targets, 'dtype', type(targets).__name__)} "
                             f"{tuple(getattr(targets, 'shape', ()))}")
        given = targets[targets != IGNORE_INDEX]
        if given.numel() and (given.min() < 0 or given.max() >= self.vocab_size):
            raise ValueError(f"targets must be token ids in [0, {self.vocab_size - 1}] or IGNORE_INDEX "
                             f"({IGNORE_INDEX})")
        return targets

    def teacher_forcing_batch(self, tokens: Tensor, condition: Condition | Tensor,
                              targets: Tensor | None = None) -> tuple[Tensor, Condition, Tensor]:
        """A teacher-forcing batch checked and put in this generator's own order: tokens (b, l) long in layout
        order, a condition of b samples (class ids are wrapped) and targets (b, l) (default the tokens;
        ``IGNORE_INDEX`` where none) -> (tokens, condition, targets), tokens and targets through
        :meth:`from_layout_order`. Raises ``ValueError`` naming what is wrong."""
        self.check_tokens(tokens)
        condition = self.check_condition(condition)
        check_batch(tokens, condition)
        targets = self.check_targets(tokens if targets is None else targets, tokens.shape[0])
        return self.from_layout_order(tokens), condition, self.from_layout_order(targets)

    @staticmethod
    def teacher_forcing_output(logits: Tensor, targets: Tensor, label_smoothing: float = 0.0) -> GeneratorOutput:
        """The loss (cross-entropy over the positions with a target) and accuracy of logits (b, l, v)."""
        loss = F.cross_entropy(rearrange(logits, "b l v -> (b l) v"), rearrange(targets, "b l -> (b l)"),
                               ignore_index=IGNORE_INDEX, label_smoothing=label_smoothing)
        valid = targets != IGNORE_INDEX
        accuracy = ((logits.argmax(-1) == targets) & valid).float().sum() / valid.sum().clamp(min=1)
        return GeneratorOutput(loss=loss, logits=logits, metrics={"accuracy": accuracy.detach()})

    def new_cache(self, batch_size: int) -> KVCache:
        raise NotImplementedError

    def compile_decoding(self, **options) -> Generator:
        """Decodes through ``torch.compile(**options)`` with static KV caches: the steps of one shape (a raster
        sampler's one-token steps) share one compiled graph, which ``mode="reduce-overhead"`` on a GPU replays as a
        CUDA graph (see :class:`arvis.nn.kv_cache.DecodingPasses`). Samples are those of eager decoding up to float
        rounding. Returns the generator; one without a KV-cached trunk raises ``ValueError``."""
        trunk = getattr(self, "trunk", None)
        if not hasattr(trunk, "compile_decoding"):
            raise ValueError(f"{type(self).__name__} has no KV-cached trunk to compile for decoding")
        trunk.compile_decoding(**options)
        return self

    @staticmethod
    def check_step_order(tokens: Tensor | None, filled: int, prefix: str) -> None:
        """``ValueError`` unless a step feeds ``prefix`` (``tokens=None``) exactly when nothing is cached yet
        (``filled`` positions): the prefix first, on a fresh cache, and only then the units."""
        if tokens is None and filled:
            raise ValueError(f"step(None, ...) feeds {prefix} and must be the first call on a fresh cache")
        if tokens is not None and not filled:
            raise ValueError(f"the first step must feed {prefix}: call step(None, condition, cache)")

    def unit_lengths(self) -> list[int]:
        """Tokens produced by each decoding step, in order (one step per unit of the layout by default)."""
        return [math.prod(shape) for shape in self.layout.shapes]

    def unit_boundaries(self) -> list[int]:
        """Token counts at the ends of the decoding steps, 0 first: [0, n_0, n_0 + n_1, ..., l]."""
        return [0, *itertools.accumulate(self.unit_lengths())]

    def step(self, tokens: Tensor | None, labels: Tensor, cache: KVCache, *,
             output: str = "logits") -> Tensor | StepOutput:
        raise NotImplementedError

    @property
    def condition_fields(self) -> frozenset[str]:
        """The :class:`~arvis.conditions.Condition` fields this generator takes, every one required."""
        return frozenset({"labels"})

    @property
    def prefix_length(self) -> int:
        """Positions the condition takes before the first token (one class token by default)."""
        return 1

    def null_condition(self, batch_size: int, device: torch.device | str | None = None) -> Condition:
        """The joint null condition of guidance for ``batch_size`` samples: the null class for ``labels``; a
        generator taking other fields (the empty prompt, a zero control map) overrides it."""
        unknown = self.condition_fields - {"labels"}
        if unknown:
            raise NotImplementedError(f"{type(self).__name__} takes {sorted(unknown)} and must give their null")
        return Condition(labels=torch.full((batch_size,), self.null_class, dtype=torch.long, device=device))

    @property
    def prompt_length(self) -> int:
        """The fixed prompt length p of a text-conditional generator (every prompt is padded to it)."""
        raise ValueError(f"{type(self).__name__} takes no text prompt")

    def check_condition(self, condition: Condition | Tensor, *, allow_null: bool = True) -> Condition:
        """Raises ``ValueError`` naming the problem unless ``condition`` carries exactly the fields this generator
        takes, each well formed; returns it as a :class:`~arvis.conditions.Condition` (class ids given as a
        tensor are wrapped)."""
        condition = as_condition(condition)
        extra, missing = condition.fields - self.condition_fields, self.condition_fields - condition.fields
        if extra or missing:
            problems = [f"got {sorted(extra)}, which it does not take" if extra else "",
                        f"{sorted(missing)} missing" if missing else ""]
            raise ValueError(f"{type(self).__name__} is conditioned on {sorted(self.condition_fields)}: "
                             + "; ".join(problem for problem in problems if problem))
        if condition.labels is not None:
            self.check_labels(condition.labels, allow_null=allow_null)
        if condition.prompt is not None:
            self.check_prompt(condition.prompt, condition.prompt_mask)
        return condition

    def check_prompt(self, prompt: Tensor, mask: Tensor) -> None:
        """Raises ``ValueError`` unless ``prompt`` and ``mask`` are (b, p) at this generator's prompt length."""
        if mask.dtype != torch.bool or tuple(mask.shape) != tuple(prompt.shape[:2]) or mask.ndim != 2:
            raise ValueError(f"prompt_mask must be a (b, p) torch.bool tensor matching the prompt, got {mask.dtype} "
                             f"{tuple(mask.shape)} for a prompt of shape {tuple(prompt.shape)}")
        if prompt.shape[1] != self.prompt_length:
            raise ValueError(f"prompts must be padded to this generator's prompt length {self.prompt_length}, got "
                             f"{prompt.shape[1]} positions (a longer prompt does not fit: shorten it)")

    def check_labels(self, labels: Tensor, *, allow_null: bool = False) -> None:
        """Raises ``ValueError`` if ``labels`` are not (b,) long class ids in range."""
        if not isinstance(labels, Tensor) or labels.dtype != torch.long or labels.ndim != 1:
            raise ValueError(f"expected class labels as a 1-D torch.long tensor, got {labels!r:.80}")
        upper = self.num_classes + (1 if allow_null else 0)
        if labels.numel() and (labels.min() < 0 or labels.max() >= upper):
            raise ValueError(
                f"class ids must lie in [0, {self.num_classes - 1}] for this generator, got "
                f"[{labels.min().item()}, {labels.max().item()}]"
            )

    def check_tokens(self, tokens: Tensor) -> None:
        """Raises ``ValueError`` naming the problem if ``tokens`` do not fit this component."""
        check_token_ids(tokens, self.layout.length, self.vocab_size)


def wrapped_spec(generator: Generator) -> dict[str, Any]:
    """{"type": class name, "config": dict}: how a wrapper's config names the generator it wraps (a Distilled
    Decoding teacher, a ControlAR base)."""
    return {"type": type(generator).__name__, "config": generator.config.to_dict()}


def build_wrapped(spec: Any, expected: type[Generator], wrapper: str, role: str) -> Generator:
    """The generator a wrapper's config names (:func:`wrapped_spec`), freshly initialised; ``ValueError`` unless
    ``spec`` is such a dict naming a registered subclass of ``expected``."""
    if not isinstance(spec, dict) or set(spec) != {"type", "config"}:
        raise ValueError(f"{wrapper}: {role} must be {{'type': ..., 'config': {{...}}}}, got {spec!r:.80}")
    cls = GENERATORS.get_class(spec["type"])
    if not issubclass(cls, expected):
        raise ValueError(f"{wrapper} wraps a {expected.__name__}, not a {spec['type']}")
    return cls(cls.config_class.from_saved(spec["config"]))


def check_batch(tokens: Tensor, condition: Condition) -> None:
    """Raises ``ValueError`` unless ``tokens`` hold as many samples as ``condition``."""
    if tokens.shape[0] != condition.batch_size:
        raise ValueError(f"tokens hold {tokens.shape[0]} samples but the condition {condition.batch_size}")
