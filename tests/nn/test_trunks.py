"""The public trunks: position ids gathered by id (repeats allowed), read-only cache passes, per-layer additions."""

from __future__ import annotations

import pytest
import torch

from arvis.nn.adaln import AdaLNTrunk, AdaLNTrunkConfig
from arvis.nn.attention import causal_mask
from arvis.nn.llama_trunk import LlamaTrunk, LlamaTrunkConfig
from arvis.nn.rope import RotaryTable, rope_table_1d
from arvis.testing import randomize_parameters_

CONFIG = LlamaTrunkConfig(dim=32, num_layers=3, num_heads=2, ffn_multiple_of=32, resid_dropout=0.0, ffn_dropout=0.0)


def llama_trunk() -> LlamaTrunk:
    torch.manual_seed(0)
    trunk = LlamaTrunk(CONFIG, RotaryTable(lambda: rope_table_1d(16, CONFIG.head_dim)))
    return randomize_parameters_(trunk, std=0.3).eval()


def test_repeated_position_ids_give_two_independent_halves():
    """SDAR's [noisy; clean] input: both halves at positions 0..n-1, each seeing only itself, equal two passes."""
    trunk = llama_trunk()
    first, second = torch.randn(2, 5, 32), torch.randn(2, 5, 32)
    positions = torch.arange(5).repeat(2)
    own_half = torch.block_diag(causal_mask(5), causal_mask(5))
    with torch.no_grad():
        joint = trunk(torch.cat([first, second], dim=1), positions=positions, mask=own_half)
        alone = [trunk(x, mask=causal_mask(5)) for x in (first, second)]
    torch.testing.assert_close(joint, torch.cat(alone, dim=1), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="positions must be"):
        trunk(first, positions=torch.arange(4))


def test_rope_rows_are_gathered_by_position_id():
    trunk = llama_trunk()
    x = torch.randn(1, 3, 32)
    with torch.no_grad():
        default = trunk(x, mask=causal_mask(3))
        explicit = trunk(x, positions=torch.arange(3), mask=causal_mask(3))
        shifted = trunk(x, positions=torch.arange(3) + 4, mask=causal_mask(3))
        same_place = trunk(x, positions=torch.zeros(3, dtype=torch.long), mask=causal_mask(3))
    torch.testing.assert_close(default, explicit, atol=0, rtol=0)
    torch.testing.assert_close(default, shifted, atol=1e-5, rtol=0)  # RoPE sees only relative positions
    assert not torch.allclose(default[:, 1:], same_place[:, 1:], atol=1e-3)  # repeated ids: no relative offset
    torch.testing.assert_close(trunk.rope.rows(torch.tensor([2, 2, 0])),
                               rope_table_1d(16, CONFIG.head_dim)[[2, 2, 0]], atol=0, rtol=0)


@pytest.mark.parametrize("kind", ["llama", "adaln"])
def test_a_read_only_pass_leaves_the_cache_as_it_was(kind):
    torch.manual_seed(0)
    if kind == "llama":
        trunk = llama_trunk()
        call = lambda x, **kw: trunk(x, **kw)  # noqa: E731
    else:
        trunk = randomize_parameters_(AdaLNTrunk(AdaLNTrunkConfig(depth=2, dim=32, num_heads=2, drop_path_rate=0.0)))
        trunk.eval()
        condition = torch.randn(2, 32)
        call = lambda x, **kw: trunk(x, condition, **kw)  # noqa: E731
    prefix, rest = torch.randn(2, 4, 32), torch.randn(2, 3, 32)
    with torch.no_grad():
        whole = call(torch.cat([prefix, rest], dim=1), mask=causal_mask(7))
        cache = trunk.new_cache(7)
        call(prefix, mask=causal_mask(4), cache=cache)
        peek = call(rest, mask=causal_mask(3, 7), cache=cache, store=False)
        assert cache.length == 4
        call(torch.randn(2, 3, 32), mask=causal_mask(3, 7), cache=cache, store=False)  # other scratch keys
        again = call(rest, mask=causal_mask(3, 7), cache=cache, store=False)
        call(torch.randn(2, 3, 32), mask=causal_mask(3, 7), cache=cache, store=False)
        stored = call(rest, mask=causal_mask(3, 7), cache=cache)
        assert cache.length == 7
    for result in (peek, again, stored):
        torch.testing.assert_close(result, whole[:, 4:], atol=1e-5, rtol=0)


def test_per_layer_additions_enter_before_their_layer():
    trunk = llama_trunk()
    x, extra = torch.randn(2, 4, 32), torch.randn(2, 4, 32)
    mask = causal_mask(4)
    with torch.no_grad():
        added = trunk(x, mask=mask, additions={1: extra})
        manual = x
        for index, layer in enumerate(trunk.layers):
            manual = layer(manual + (extra if index == 1 else 0), rope=trunk.rope.rows(torch.arange(4)), mask=mask)
        untouched = trunk(x, mask=mask, additions={})
    torch.testing.assert_close(added, manual, atol=1e-5, rtol=0)
    torch.testing.assert_close(untouched, trunk(x, mask=mask), atol=0, rtol=0)
    with pytest.raises(ValueError, match="additions name layers \\[3\\]"):
        trunk(x, mask=mask, additions={3: extra})
