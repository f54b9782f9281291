import pytest
import torch

from arvis.nn.attention import SelfAttention, causal_mask
from arvis.nn.conditioning import ClassEmbedding
from arvis.nn.kv_cache import KVCache
from arvis.nn.rope import apply_rope, rope_table_1d, rope_table_2d


def test_causal_mask_with_cache_offset():
    assert torch.equal(causal_mask(2, 4), torch.tensor([[True, True, True, False], [True, True, True, True]]))
    assert torch.equal(causal_mask(3), torch.ones(3, 3, dtype=torch.bool).tril())


def test_rope_1d_scores_depend_only_on_relative_position():
    table = rope_table_1d(16, 8)
    q, k = torch.randn(1, 1, 1, 8), torch.randn(1, 1, 1, 8)
    def score(i, j):
        return (apply_rope(q, table[i:i + 1]) * apply_rope(k, table[j:j + 1])).sum()
    torch.testing.assert_close(score(3, 1), score(10, 8))
    torch.testing.assert_close(score(0, 0), (q * k).sum())


def test_rope_2d_golden_layout():
    table = rope_table_2d(3, 4, head_dim=8, base=100.0, prefix_length=1, zero_prefix=True)
    assert table.shape == (1 + 12, 4, 2)
    assert torch.equal(table[0], torch.zeros(4, 2))  # upstream's zeroed prefix
    row, col = 2, 3
    position = 1 + row * 4 + col
    frequencies = torch.tensor([1.0, 100.0 ** -0.5])  # base^(-2i/(d/2)), i = 0, 1
    angles = torch.cat([row * frequencies, col * frequencies])
    torch.testing.assert_close(table[position], torch.stack([angles.cos(), angles.sin()], dim=-1))
    identity_prefix = rope_table_2d(3, 4, head_dim=8, prefix_length=1, zero_prefix=False)[0]
    assert torch.equal(identity_prefix, torch.tensor([[1.0, 0.0]] * 4))


def test_rope_rejects_bad_head_dims():
    with pytest.raises(ValueError, match="divisible by 4"):
        rope_table_2d(2, 2, head_dim=6)


def test_attention_with_cache_equals_masked_full_pass():
    torch.manual_seed(0)
    attention = SelfAttention(32, 4, num_kv_heads=2).eval()
    x = torch.randn(2, 6, 32)
    full = attention(x, mask=causal_mask(6))
    cache = KVCache(1, 8)
    first = attention(x[:, :4], mask=causal_mask(4), cache=cache)
    cache.advance(4)
    rest = attention(x[:, 4:], mask=causal_mask(2, 6), cache=cache)
    torch.testing.assert_close(torch.cat([first, rest], dim=1), full, atol=1e-6, rtol=0)


def test_kv_cache_overflow_is_an_error():
    cache = KVCache(1, 2)
    cache.append(0, torch.zeros(1, 1, 2, 4), torch.zeros(1, 1, 2, 4))
    cache.advance(2)
    with pytest.raises(ValueError, match="overflow"):
        cache.append(0, torch.zeros(1, 1, 1, 4), torch.zeros(1, 1, 1, 4))


def test_class_embedding_label_dropout_only_in_training():
    embedding = ClassEmbedding(10, 4, dropout=0.5)
    labels = torch.arange(10).repeat(100)
    torch.manual_seed(0)
    dropped = embedding.drop_labels(labels)
    fraction = (dropped == 10).float().mean().item()
    assert 0.45 < fraction < 0.55
    assert torch.equal(embedding.eval().drop_labels(labels), labels)
