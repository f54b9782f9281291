"""HAR generator: unit rule, upstream input layout and mask, cached level steps = teacher forcing."""

import dataclasses

import pytest
import torch

from arvis.generators.base import GENERATORS
from arvis.generators.har import HARConfig, HARGenerator, check_levels, decoding_units, sequence_plan
from arvis.nn.attention import block_causal_mask
from arvis.samplers import NextUnitSampler, NextUnitSettings
from arvis.testing import randomize_parameters_
from arvis.tokenizers.base import TokenLayout

SMALL = dict(vocab_size=32, num_classes=5, dim=32, num_layers=2, num_heads=2, ffn_multiple_of=32)


def small_har(level_sizes, ar_token_num, **overrides) -> HARGenerator:
    torch.manual_seed(0)
    config = HARConfig(**{**SMALL, "level_sizes": level_sizes, "ar_token_num": ar_token_num, **overrides})
    return randomize_parameters_(HARGenerator(config)).eval()


def upstream_plan(block_size: int, ar_token_num: int) -> list[tuple[str, int]]:
    """gpt_har.py ``Transformer.forward``'s input assembly (cls_token_num 1), on symbolic entries."""
    nested = [block_size]
    while nested[-1] // 2 > 1:
        nested.append(nested[-1] // 2)
    nested = [*nested, 1][::-1]
    blocks = [nested[0]] + [nested[i + 1] - nested[i] for i in range(len(nested) - 1)]
    tokens = [("token", i) for i in range(block_size)]
    spe = [("placeholder", j) for j in range(block_size - 1)]
    first = tokens[:ar_token_num] + spe[:ar_token_num - 1]
    last, rest, n_sum = tokens[ar_token_num:], [], 0
    for n in blocks:
        if n_sum + n > ar_token_num:  # torch.stack(dim=1) + reshape: concatenation, not interleaving
            rest += last[n_sum - ar_token_num:n_sum - ar_token_num + n] + spe[n_sum - 1:n_sum - 1 + n]
        n_sum += n
    return ([("class", 0)] + first + rest)[:block_size]


def upstream_mask(block_size: int, ar_token_num: int) -> torch.Tensor:
    """gpt_har.py's ``group_mask`` (True = may attend): level blocks, first ar_token_num positions causal."""
    nested = [block_size]
    while nested[-1] // 2 > 1:
        nested.append(nested[-1] // 2)
    nested = [*nested, 1][::-1]
    blocks = [nested[0]] + [nested[i + 1] - nested[i] for i in range(len(nested) - 1)]
    mask = block_causal_mask(blocks).clone()
    mask[:ar_token_num, :ar_token_num] = torch.ones(ar_token_num, ar_token_num).tril().bool()
    mask[:ar_token_num, ar_token_num:] = False
    return mask


def test_units_for_128_tokens_take_nine_steps():
    units = decoding_units(128, 4)
    assert list(units) == [1, 1, 1, 1, 4, 8, 16, 32, 64] and len(units) == 9
    assert check_levels((1, 1, 2, 4, 8, 16, 32, 64), 4) == units
    assert list(decoding_units(8, 2)) == [1, 1, 2, 4]
    assert list(decoding_units(32, 4)) == [1, 1, 1, 1, 4, 8, 16]
    model = GENERATORS.build("har-tiny")
    assert len(model.unit_lengths()) == 4 and model.unit == "level"
    assert model.layout == TokenLayout(((1,), (1,), (2,), (4,)))


def test_ar_token_num_equal_to_the_length_is_plain_next_token_ar():
    assert list(decoding_units(8, 8)) == [1] * 8
    assert list(sequence_plan(8, 8)) == [("class", 0)] + [("token", i) for i in range(7)]
    assert torch.equal(block_causal_mask(decoding_units(8, 8)), torch.ones(8, 8).tril().bool())


def test_input_layout_matches_upstream_description():
    plan = sequence_plan(16, 4)
    tok = lambda *ids: [("token", i) for i in ids]  # noqa: E731
    spe = lambda *ids: [("placeholder", j) for j in ids]  # noqa: E731
    # [cls, t0..t2] | [t3, s0, s1, s2] | [t4..t7, s3..s6]
    assert list(plan) == [("class", 0), *tok(0, 1, 2), *tok(3), *spe(0, 1, 2), *tok(4, 5, 6, 7), *spe(3, 4, 5, 6)]
    full = sequence_plan(128, 4)
    assert list(full[64:]) == tok(*range(32, 64)) + spe(*range(31, 63))  # [t32..t63, s31..s62]
    assert max(j for kind, j in full if kind == "placeholder") == 62


@pytest.mark.parametrize("length,ar", [(128, 4), (8, 2), (32, 4), (64, 1), (64, 2), (128, 8)])
def test_input_layout_and_mask_equal_upstream_code(length, ar):
    assert list(sequence_plan(length, ar)) == upstream_plan(length, ar)
    assert torch.equal(block_causal_mask(decoding_units(length, ar)), upstream_mask(length, ar))


@pytest.mark.parametrize("levels,ar", [((1, 1, 2, 4), 2), ((1, 1, 2, 4, 8, 16), 4), ((1, 1, 2, 4, 8), 1),
                                       ((2, 2, 4, 8), 2), ((1, 1, 2, 4, 8, 16), 2), ((1, 1, 2, 4), 8)])
def test_cached_level_steps_equal_teacher_forcing(levels, ar):
    model = small_har(levels, ar)
    tokens = torch.randint(0, model.vocab_size, (3, sum(levels)), generator=torch.Generator().manual_seed(1))
    labels = torch.tensor([0, 4, model.null_class])
    with torch.no_grad():
        expected = model(tokens, labels).logits
        cache, stepped, inputs, consumed = model.new_cache(3), [], None, 0
        for unit in model.units:
            logits = model.step(inputs, labels, cache)
            assert logits.shape == (3, unit, model.vocab_size)
            stepped.append(logits)
            inputs, consumed = tokens[:, consumed:consumed + unit], consumed + unit
    torch.testing.assert_close(torch.cat(stepped, dim=1), expected, atol=1e-5, rtol=0)


def test_teacher_forcing_uses_the_block_mask():
    """Changing a token changes only the logits of later units (and its own unit's, via the fed block)."""
    model = small_har((1, 1, 2, 4, 8, 16), 4)
    tokens = torch.randint(0, model.vocab_size, (1, 32), generator=torch.Generator().manual_seed(2))
    changed = tokens.clone()
    changed[0, 5] = (changed[0, 5] + 1) % model.vocab_size  # t5 is fed in the block at positions 8..15
    labels = torch.tensor([1])
    with torch.no_grad():
        before, after = model(tokens, labels).logits, model(changed, labels).logits
    differs = (before - after).abs().amax(-1)[0] > 0
    assert not differs[:8].any() and differs[8:].all()


def test_sampling_with_the_next_scale_sampler():
    model = GENERATORS.build("har-tiny")
    randomize_parameters_(model)
    model.eval()
    sampler = NextUnitSampler(NextUnitSettings(cfg_scale=2.0, top_k=10))
    labels = torch.tensor([0, 3])
    first = sampler(model, labels, rng=torch.Generator().manual_seed(0))
    again = sampler(model, labels, rng=torch.Generator().manual_seed(0))
    assert first.shape == (2, 8) and first.dtype == torch.long and torch.equal(first, again)


def test_har_l_size():
    with torch.device("meta"):
        model = GENERATORS.build("har-l")
    assert len(model.unit_lengths()) == 9
    assert round(model.num_parameters() / 1e6) == 326  # README: 326M (326,263,808 with vocab 8192)


class _Tokenizer:
    def __init__(self, shapes, vocab_size=100):
        self.layout, self.vocab_size = TokenLayout(shapes), vocab_size


def test_fit_config_takes_levels_from_the_tokenizer():
    config = GENERATORS.preset("har-tiny")
    fitted = HARGenerator.fit_config(config, tokenizer=_Tokenizer(((1,), (1,), (2,), (4,), (8,))), num_classes=7)
    assert fitted.level_sizes == (1, 1, 2, 4, 8) and fitted.vocab_size == 100 and fitted.num_classes == 7
    with pytest.raises(ValueError, match="1D levels"):
        HARGenerator.fit_config(config, tokenizer=_Tokenizer(((4, 4),)), num_classes=7)


@pytest.mark.parametrize("changes,match", [
    (dict(level_sizes=(1, 1, 2, 3)), "ar_token_num \\* 2\\*\\*k"),
    (dict(level_sizes=(4, 4)), "do not match the token levels"),
    (dict(level_sizes=(1, 1, 1, 1, 4)), "do not match the token levels"),
    (dict(ar_token_num=0), "ar_token_num must be >= 1"),
    (dict(ar_token_num=16), "ar_token_num \\* 2\\*\\*k"),
    (dict(dim=30), "divisible by num_heads"),
    (dict(level_sizes=()), "non-empty"),
])
def test_bad_configs_raise(changes, match):
    with pytest.raises(ValueError, match=match):
        dataclasses.replace(GENERATORS.preset("har-tiny"), **changes)


def test_bad_step_inputs_raise():
    model = small_har((1, 1, 2, 4), 2)
    labels = torch.tensor([0, 1])
    cache = model.new_cache(2)
    with pytest.raises(ValueError, match="class prefix"):
        model.step(torch.zeros(2, 1, dtype=torch.long), labels, cache)
    model.step(None, labels, cache)
    with pytest.raises(ValueError, match="fresh cache"):
        model.step(None, labels, cache)
    with pytest.raises(ValueError, match=r"\(2, 1\) long ids"):
        model.step(torch.zeros(2, 2, dtype=torch.long), labels, cache)
    with pytest.raises(ValueError, match="must lie in"):
        model.step(torch.full((2, 1), 99), labels, cache)
    for ids in (torch.zeros(2, 1), torch.zeros(2, 1), torch.zeros(2, 2)):
        model.step(ids.long(), labels, cache)
    with pytest.raises(ValueError, match="every unit has been fed"):
        model.step(torch.zeros(2, 4, dtype=torch.long), labels, cache)
    with pytest.raises(ValueError):
        model(torch.zeros(2, 7, dtype=torch.long), labels)


def test_sampler_takes_one_step_per_unit_not_per_level():
    """har-demo: 6 levels but 7 steps (the first 4 tokens one at a time)."""
    import torch

    from arvis.generators.base import GENERATORS
    from arvis.samplers import sampler_for

    model = GENERATORS.build("har-demo").eval()
    calls = []
    original = model.step
    model.step = lambda *args, **kwargs: calls.append(1) or original(*args, **kwargs)
    tokens = sampler_for(model, cfg_scale=2.0)(model, torch.tensor([0, 1]),
                                                                rng=torch.Generator().manual_seed(0))
    assert tokens.shape == (2, 32) and len(calls) == 7
