"""HAR: ResTok's hierarchical autoregressive generator (LlamaGen GPT over 1D token levels).

Zhang et al., "ResTok" (arXiv 2601.03955), upstream Kwai-Kolors/ResTok ``autoregressive/models/gpt_har.py``.

Shapes: b batch, l tokens (the tokenizer's 1D levels concatenated, coarse to fine), n positions of
one step, d model width, v vocabulary.

Decoding units. The first ``ar_token_num`` (a) tokens are predicted one at a time; after that each
step predicts as many tokens as have been generated so far, so the units are
``[1] * a + [a, 2a, 4a, ..., l/2]`` (l must be a * 2**k with k >= 1). For l = 128, a = 4 this is
[1, 1, 1, 1, 4, 8, 16, 32, 64]: 9 steps (1 prefill, 3 autoregressive, 5 level steps); ``ar_token_num = l``
makes every unit one token (plain next-token AR with the same model, for comparisons). The units
must fit the tokenizer's levels: from position a on, the unit boundaries must be exactly the level
boundaries (every parallel step predicts one whole level; levels inside the first a tokens may be
split across single-token steps), which :class:`HARConfig` checks.

Training sequence (l positions; position i predicts token t_i, so one CE over all l tokens):
``[cls, t_0 .. t_{a-2}]`` causally, then one block per parallel unit: the unit [p, 2p) is predicted
from the block at positions [p, 2p), which holds the previous unit's tokens (t_{a-1} alone for
p = a, else t_{p/2} .. t_{p-1}) followed by learnable placeholder embeddings s_j, numbered
consecutively over the blocks. For l = 128, a = 4: [cls, t0, t1, t2], [t3, s0..s2], [t4..t7, s3..s6],
..., [t32..t63, s31..s62]. Attention is bidirectional inside a unit and causal across units
(:func:`block_causal_mask` over the decoding units). While sampling one step feeds one block
against the KV cache of the earlier ones (mask ``None``). 1D RoPE uses positions 0..l-1 in
sequence order (upstream ``precompute_freqs_cis_1d``; the class token sits at position 0 with the
identity rotation, unlike LlamaGen's zeroed prefix).

Upstream allocates ``spe_token_num = l - 1`` placeholder embeddings but reads only the first
l/2 - 1; the table keeps upstream's size so that released weights load without reshaping.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Literal

import torch
from torch import Tensor, nn

from arvis.conditions import Condition, as_condition
from arvis.generators.base import GENERATORS, GeneratorOutput, StepOutput
from arvis.generators.llama import LlamaGenerator, LlamaGeneratorConfig, RotaryConfig
from arvis.nn.attention import block_causal_mask
from arvis.nn.kv_cache import KVCache
from arvis.nn.rope import RotaryTable, rope_table_1d
from arvis.tokenizers.base import TokenLayout

CLASS, TOKEN, PLACEHOLDER = "class", "token", "placeholder"


def decoding_units(length: int, ar_token_num: int) -> tuple[int, ...]:
    """Unit lengths ``[1] * a + [a, 2a, ..., length/2]``; raises ``ValueError`` unless length = a * 2**k.

    ``a == length`` (k = 0) is plain next-token AR over the 1D sequence, the raster baseline at the same tokens.
    """
    if ar_token_num < 1:
        raise ValueError(f"ar_token_num must be >= 1, got {ar_token_num}")
    units, total = [1] * ar_token_num, ar_token_num
    while total < length:
        units.append(total)
        total *= 2
    if total != length:
        raise ValueError(f"HAR needs a token count of ar_token_num * 2**k (each parallel step doubles the generated "
                         f"tokens); got {length} tokens with ar_token_num={ar_token_num}")
    return tuple(units)


def check_levels(level_sizes: tuple[int, ...], ar_token_num: int) -> tuple[int, ...]:
    """Returns the decoding units of ``level_sizes``; raises ``ValueError`` if they do not fit the levels."""
    if not level_sizes or min(level_sizes) < 1:
        raise ValueError(f"level_sizes must be a non-empty tuple of positive lengths, got {level_sizes}")
    units = decoding_units(sum(level_sizes), ar_token_num)
    unit_ends = {end for end in itertools.accumulate(units) if end >= ar_token_num}
    level_ends = {end for end in itertools.accumulate(level_sizes) if end >= ar_token_num}
    if unit_ends != level_ends:
        raise ValueError(
            f"the HAR decoding units {list(units)} (ar_token_num={ar_token_num}) do not match the token levels "
            f"{list(level_sizes)}: from token {ar_token_num} on, each parallel step must predict exactly one "
            f"level (unit ends {sorted(unit_ends)} vs level ends {sorted(level_ends)}); choose another ar_token_num"
        )
    return units


def sequence_plan(length: int, ar_token_num: int) -> tuple[tuple[str, int], ...]:
    """What sits at each of the ``length`` input positions: ("class", 0), ("token", i) or ("placeholder", j)."""
    decoding_units(length, ar_token_num)
    plan = [(CLASS, 0)] + [(TOKEN, i) for i in range(ar_token_num - 1)]
    start, used = ar_token_num, 0
    while start < length:
        fed = [ar_token_num - 1] if start == ar_token_num else list(range(start // 2, start))
        plan += [(TOKEN, i) for i in fed]
        plan += [(PLACEHOLDER, used + j) for j in range(start - len(fed))]
        used += start - len(fed)
        start *= 2
    return tuple(plan)


@dataclasses.dataclass(frozen=True, kw_only=True)
class HARConfig(LlamaGeneratorConfig, RotaryConfig):
    """HAR GPT configuration (the trunk's and every Llama generator's fields are inherited); the ``har-l``
    preset is GPT-L on ResTok's 128 tokens (levels 1, 1, 2, ..., 64).

    Attributes:
        level_sizes: the tokenizer's 1D levels, coarse to fine.
        ar_token_num: tokens predicted one at a time before the level-parallel steps.
    """

    level_sizes: tuple[int, ...] = (1, 1, 2, 4, 8, 16, 32, 64)
    ar_token_num: int = 4

    def __post_init__(self) -> None:
        super().__post_init__()
        if (self.dim // self.num_heads) % 2:
            raise ValueError(f"dim ({self.dim}) must be divisible by num_heads ({self.num_heads}) into an even head dim")
        check_levels(tuple(self.level_sizes), self.ar_token_num)


@GENERATORS.register
class HARGenerator(LlamaGenerator):
    """Class-conditional HAR transformer: a few AR tokens, then one parallel step per ResTok level."""

    config_class = HARConfig
    unit = "level"
    samplers = ("next-unit",)

    def __init__(self, config: HARConfig) -> None:
        length = sum(config.level_sizes)  # 1D RoPE over sequence positions 0..l-1 (the class token: identity)
        super().__init__(config, rope=RotaryTable(lambda: rope_table_1d(length, config.head_dim, config.rope_base)))
        self.units = check_levels(tuple(config.level_sizes), config.ar_token_num)
        self.plan = sequence_plan(self.layout.length, config.ar_token_num)
        self.unit_starts = (0, *itertools.accumulate(self.units))
        self.placeholder_embeddings = nn.Embedding(self.layout.length - 1, config.dim)  # upstream spe_token_num
        self.reset_parameters()

    @property
    def layout(self) -> TokenLayout:
        return TokenLayout(tuple((n,) for n in self.config.level_sizes))

    def unit_lengths(self) -> list[int]:
        """Tokens of each decoding step: [1]*a, then a, 2a, ... (9 steps for 128 tokens with ar_token_num 4)."""
        return list(self.units)

    @classmethod
    def fit_config(cls, config: HARConfig, *, tokenizer, num_classes: int) -> HARConfig:
        """Returns ``config`` with the levels, vocabulary and classes of a 1D-level tokenizer and a dataset."""
        shapes = tokenizer.layout.shapes
        if not shapes or any(len(shape) != 1 for shape in shapes):
            raise ValueError(f"HAR needs a tokenizer whose layout is 1D levels (shapes like ((1,), (1,), (2,), ...)), "
                             f"got {shapes}")
        return dataclasses.replace(config, level_sizes=tuple(shape[0] for shape in shapes),
                                   vocab_size=tokenizer.vocab_size, num_classes=num_classes)

    def _embed(self, plan: tuple[tuple[str, int], ...], condition: Condition, token_ids: Tensor | None) -> Tensor:
        """Input embeddings (b, n, d) of ``plan``'s entries; ``token_ids`` (b, #token entries) in plan order."""
        counts = {kind: sum(entry == kind for entry, _ in plan) for kind in (CLASS, TOKEN, PLACEHOLDER)}
        rows = []  # class row, then token rows, then placeholder rows; reordered into plan order below
        if counts[CLASS]:
            rows.append(self.condition_embedding(condition))
        if counts[TOKEN]:
            rows.append(self.embed_tokens(token_ids))
        if counts[PLACEHOLDER]:
            ids = torch.tensor([index for kind, index in plan if kind == PLACEHOLDER], device=condition.device)
            rows.append(self.placeholder_embeddings(ids).expand(condition.batch_size, -1, -1))
        offsets = {CLASS: 0, TOKEN: counts[CLASS], PLACEHOLDER: counts[CLASS] + counts[TOKEN]}
        order, seen = [], dict.fromkeys(offsets, 0)
        for kind, _ in plan:
            order.append(offsets[kind] + seen[kind])
            seen[kind] += 1
        x = torch.cat(rows, dim=1)
        if order == list(range(len(order))):
            return x
        return x[:, torch.tensor(order, device=x.device)]

    def forward(self, tokens: Tensor, condition: Condition | Tensor, targets: Tensor | None = None) -> GeneratorOutput:
        """Teacher forcing. tokens (b, l) long inputs, condition (class ids (b,) long, null class allowed), targets
        (b, l) long (default ``tokens``; ``IGNORE_INDEX`` where none) -> loss and logits (b, l, v)."""
        tokens, condition, targets = self.teacher_forcing_batch(tokens, condition, targets)
        fed = [index for kind, index in self.plan if kind == TOKEN]
        x = self._embed(self.plan, self.drop_condition(condition), tokens[:, fed])
        mask = block_causal_mask(self.units, device=x.device)
        hidden = self.trunk(self.tok_dropout(x), mask=mask)
        return self.teacher_forcing_output(self.logits(hidden), targets)

    def new_cache(self, batch_size: int) -> KVCache:
        return self.trunk.new_cache(self.layout.length)

    def step(self, tokens: Tensor | None, condition: Condition | Tensor, cache: KVCache, *,
             output: Literal["logits", "hidden", "both"] = "logits", store: bool = True) -> Tensor | StepOutput:
        """Feeds the class token (``tokens=None``, first call) or the (b, m) ids of the unit just sampled;
        returns the next unit's logits (b, n, v) (n = 1 during the first ``ar_token_num`` steps, then the
        next level's length), or its hidden states (``output="hidden"``, ``"both"``). ``store=False`` leaves
        the cache unchanged. The condition is checked on the first call only."""
        condition = as_condition(condition)
        start = cache.length
        if start not in self.unit_starts[:-1]:
            raise ValueError(f"the cache holds {start} positions, which is not the start of a HAR unit "
                             f"(starts {list(self.unit_starts[:-1])}); every unit has been fed or the cache is foreign")
        count = self.units[self.unit_starts.index(start)]
        plan = self.plan[start:start + count]
        self.check_step_order(tokens, start, "the class prefix")
        if tokens is None:
            self.check_condition(condition)
        else:
            expected = sum(kind == TOKEN for kind, _ in plan)
            if (not isinstance(tokens, Tensor) or tokens.dtype != torch.long
                    or tuple(tokens.shape) != (condition.batch_size, expected)):
                raise ValueError(f"expected ({condition.batch_size}, {expected}) long ids of the unit just sampled, got "
                                 f"{getattr(tokens, 'dtype', type(tokens).__name__)} {tuple(getattr(tokens, 'shape', ()))}")
            if tokens.numel() and (tokens.min() < 0 or tokens.max() >= self.vocab_size):
                raise ValueError(f"token ids must lie in [0, {self.vocab_size - 1}]")
        x = self._embed(plan, condition, tokens)
        return self.step_output(self.trunk(self.tok_dropout(x), cache=cache, store=store), output)


GENERATORS.add_preset("har-tiny", HARConfig(vocab_size=64, level_sizes=(1, 1, 2, 4), ar_token_num=2, num_classes=10,
                                            dim=32, num_layers=2, num_heads=2, ffn_multiple_of=32),
                      "2-layer test model for a tiny ResTok (8 tokens in levels 1, 1, 2, 4; units 1, 1, 2, 4)")
GENERATORS.add_preset("har-demo", HARConfig(vocab_size=256, level_sizes=(1, 1, 2, 4, 8, 16), ar_token_num=4,
                                            num_classes=10, dim=128, num_layers=4, num_heads=4, ffn_multiple_of=64,
                                            token_dropout=0.0, resid_dropout=0.0, ffn_dropout=0.0),
                      "quickstart HAR for a 32-token ResTok (units 1, 1, 1, 1, 4, 8, 16: 7 steps)")
GENERATORS.add_preset("har-l", HARConfig(vocab_size=8192, dim=1024, num_layers=24, num_heads=16),
                      "ResTok HAR GPT-L (README 326M): 128 tokens in 9 steps")
