"""LARP's sequence generator: learned absolute positions, no RoPE, 1D-sequence tokenizers only."""

from __future__ import annotations

import pytest
import torch

from arvis.generators import GENERATORS, SequenceGenerator
from arvis.testing import randomize_parameters_
from arvis.tokenizers import TOKENIZERS


def test_larp_ar_size():
    with torch.device("meta"):
        model = GENERATORS.build("larp-ar")
    assert round(model.num_parameters() / 1e6) == 632  # LARP README: 632M


def test_fits_a_larp_tokenizer_and_refuses_grids():
    config = SequenceGenerator.fit_config(GENERATORS.preset("sequence-tiny"), tokenizer=TOKENIZERS.build("larp-demo"),
                                          num_classes=7)
    assert (config.length, config.vocab_size, config.num_classes) == (32, 256, 7)
    with pytest.raises(ValueError, match="one 1D token sequence"):
        SequenceGenerator.fit_config(config, tokenizer=TOKENIZERS.build("vq-tiny"), num_classes=10)


def test_positions_are_the_learned_table_and_not_rope():
    model = randomize_parameters_(GENERATORS.build("sequence-tiny")).eval()
    assert model.rope_table(0, 8, torch.device("cpu")) is None
    tokens = torch.randint(0, 64, (2, 8), generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([1, 2])
    with torch.no_grad():
        before = model(tokens, labels).logits
        model.pos_embeddings.weight[5].add_(1.0)  # the input at position 5 is t_4
        after = model(tokens, labels).logits
    changed = (before - after).abs().amax(-1)[0] > 0
    assert not changed[:5].any() and changed[5:].all()


def test_positions_are_added_after_the_token_dropout():
    torch.manual_seed(0)
    model = GENERATORS.build("sequence-tiny", token_dropout=0.999).train()
    embeddings = torch.randn(2, 8, model.config.dim)
    inputs = model.teacher_forcing_inputs(embeddings)
    dropped = inputs[0, 3] == model.pos_embeddings.weight[3]  # dropped elements keep their position (upstream)
    assert dropped.float().mean() > 0.9
    legacy = GENERATORS.build("sequence-tiny", token_dropout=0.999, positions_after_dropout=False).train()
    assert (legacy.teacher_forcing_inputs(embeddings) == 0).float().mean() > 0.9  # arvis 0.1: dropped with them
