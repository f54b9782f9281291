"""Next-token AR over a 1D token sequence with learned absolute positions: LARP's ``LARP_AR``
(``llama-abs-LP`` upstream, ``models/larp_ar.py``), for LARP's holistic video tokens.

Shapes: b batch, l tokens, d model width, v vocabulary.

The LlamaGen trunk (class-token prefix, Llama blocks, RMSNorm, zero-initialised head) without RoPE:
a learned table of l positions is added to the inputs [class token, t_0, ..., t_{l-2}] (the class
token takes position 0), after the token dropout as upstream (``positions_after_dropout``; arvis 0.1 added
them before it, which folders it saved keep). ``rope_base`` does not exist here because upstream's is never read.
"""

from __future__ import annotations

import dataclasses

from torch import Tensor, nn

from arvis.generators.base import GENERATORS
from arvis.generators.llama import LlamaGeneratorConfig, NextTokenLlama
from arvis.tokenizers.base import TokenLayout


@dataclasses.dataclass(frozen=True, kw_only=True)
class SequenceConfig(LlamaGeneratorConfig):
    """Sequence GPT configuration (the trunk's and every Llama generator's fields are inherited); the
    ``larp-ar`` preset is LARP's AR model on 1024 tokens (UCF-101's 101 classes).

    Attributes:
        length: tokens per sample.
        positions_after_dropout: add the learned positions after the token dropout (upstream adds ``abs_pe``
            after ``tok_dropout``); arvis 0.1 added them before it, which folders it saved keep.
    """

    saved_defaults = {"positions_after_dropout": False}

    length: int = 1024
    positions_after_dropout: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.length < 1:
            raise ValueError(f"length must be positive, got {self.length}")


@GENERATORS.register
class SequenceGenerator(NextTokenLlama):
    """Class-conditional next-token AR over a 1D sequence with learned absolute positions (LARP AR)."""

    config_class = SequenceConfig

    def __init__(self, config: SequenceConfig) -> None:
        super().__init__(config)
        self.pos_embeddings = nn.Embedding(config.length, config.dim)
        self.reset_parameters()

    @property
    def layout(self) -> TokenLayout:
        return TokenLayout(((self.config.length,),))

    @classmethod
    def fit_config(cls, config: SequenceConfig, *, tokenizer, num_classes: int) -> SequenceConfig:
        """Returns ``config`` with the length, vocabulary and classes of a 1D-sequence tokenizer and a dataset."""
        shapes = tokenizer.layout.shapes
        if len(shapes) != 1 or len(shapes[0]) != 1:
            raise ValueError(f"the sequence generator needs a tokenizer with one 1D token sequence (LARP), got "
                             f"layout {shapes}")
        return dataclasses.replace(config, length=shapes[0][0], vocab_size=tokenizer.vocab_size,
                                   num_classes=num_classes)

    def absolute_positions(self, start: int, count: int) -> Tensor:
        return self.pos_embeddings.weight[start:start + count]

    def teacher_forcing_inputs(self, embeddings: Tensor) -> Tensor:
        """Token dropout, then the positions (upstream), or the reverse for folders saved by arvis 0.1."""
        if self.config.positions_after_dropout:
            return self._inputs(self.tok_dropout(embeddings), 0)
        return super().teacher_forcing_inputs(embeddings)


GENERATORS.add_preset("sequence-tiny", SequenceConfig(vocab_size=64, length=8, num_classes=10, dim=32, num_layers=2,
                                                      num_heads=2, ffn_multiple_of=32),
                      "2-layer test model for larp-tiny (8 tokens, 64 codes)")
GENERATORS.add_preset("sequence-demo", SequenceConfig(vocab_size=256, length=32, num_classes=10, dim=128,
                                                      num_layers=4, num_heads=4, ffn_multiple_of=64,
                                                      token_dropout=0.0, resid_dropout=0.0, ffn_dropout=0.0),
                      "moving-glyph model for larp-demo (32 tokens, 256 codes)")
GENERATORS.add_preset("larp-ar", SequenceConfig(vocab_size=8192, length=1024, num_classes=101, dim=1280, num_layers=30,
                                                num_heads=20),
                      "LARP's AR generator (llama-abs-LP): 30 layers, 1280 wide, 20 heads, learned absolute "
                      "positions over 1024 tokens, 632M")
