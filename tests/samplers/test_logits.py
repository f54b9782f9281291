import pytest
import torch

from arvis.samplers.logits import (apply_temperature, cfg_mix, cfg_scale_at, filter_logits, per_sample_generators,
                                   sample_categorical, sample_seeds, top_k_filter, top_p_filter)


def test_top_k_one_is_argmax():
    logits = torch.randn(64, 50, generator=torch.Generator().manual_seed(0))
    filtered = top_k_filter(logits, 1)
    draws = sample_categorical(filtered, torch.Generator().manual_seed(1))
    assert torch.equal(draws, logits.argmax(-1))
    assert (torch.isfinite(filtered).sum(-1) == 1).all()


def test_top_k_keeps_exactly_k_and_leaves_kept_values_unchanged():
    logits = torch.tensor([[0.1, 3.0, -1.0, 2.0, 0.5]])
    filtered = top_k_filter(logits, 2)
    assert torch.equal(torch.isfinite(filtered), torch.tensor([[False, True, False, True, False]]))
    assert filtered[0, 1] == 3.0 and filtered[0, 3] == 2.0
    assert torch.equal(top_k_filter(logits, 0), logits)


def test_top_p_removes_the_tail():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    logits = probs.log()
    # LlamaGen's rule: a token goes once the mass of the tokens before it exceeds p.
    assert torch.equal(torch.isfinite(top_p_filter(logits, 0.45)), torch.tensor([[True, False, False, False]]))
    assert torch.equal(torch.isfinite(top_p_filter(logits, 0.7)), torch.tensor([[True, True, False, False]]))
    assert torch.equal(torch.isfinite(top_p_filter(logits, 0.9)), torch.tensor([[True, True, True, False]]))
    assert torch.equal(top_p_filter(logits, 1.0), logits)
    shuffled = logits[:, [2, 0, 3, 1]]  # the kept set follows the values, not the positions
    assert torch.equal(torch.isfinite(top_p_filter(shuffled, 0.7)), torch.tensor([[False, True, False, True]]))


def test_cfg_scale_one_is_conditional_only_and_mix_formula():
    cond, uncond = torch.randn(4, 10), torch.randn(4, 10)
    assert torch.equal(cfg_mix(cond, uncond, 1.0), cond)
    torch.testing.assert_close(cfg_mix(cond, uncond, 3.0), uncond + 3.0 * (cond - uncond))
    torch.testing.assert_close(cfg_mix(cond, uncond, 0.0), uncond)


def test_cfg_schedules():
    assert [cfg_scale_at("constant", 4.0, step, 5) for step in range(5)] == [4.0] * 5
    assert [cfg_scale_at("linear", 4.0, step, 4) for step in range(4)] == [1.0, 2.0, 3.0, 4.0]
    assert cfg_scale_at("linear", 4.0, 0, 1) == 4.0
    # ResTok's HAR: 9 steps, guidance from 0.25 of the way on, so steps 0 and 1 are unguided.
    assert [cfg_scale_at("step", 3.75, step, 9, 0.25) for step in range(9)] == [1.0, 1.0] + [3.75] * 7
    assert [cfg_scale_at("step", 2.0, step, 5, 0.5) for step in range(5)] == [1.0, 1.0, 2.0, 2.0, 2.0]
    with pytest.raises(ValueError, match="unknown CFG schedule"):
        cfg_scale_at("cosine-ish", 2.0, 0, 2)


def test_temperature_sharpens_and_rejects_zero():
    logits = torch.tensor([[1.0, 2.0]])
    assert apply_temperature(logits, 0.5).softmax(-1)[0, 1] > logits.softmax(-1)[0, 1]
    with pytest.raises(ValueError, match="temperature"):
        apply_temperature(logits, 0.0)


def test_sampling_follows_the_distribution_and_is_seeded():
    probs = torch.tensor([0.6, 0.3, 0.1])
    logits = probs.log().expand(20000, 3)
    draws = sample_categorical(logits, torch.Generator().manual_seed(0))
    frequencies = torch.bincount(draws, minlength=3).float() / draws.numel()
    torch.testing.assert_close(frequencies, probs, atol=0.015, rtol=0)
    assert torch.equal(draws, sample_categorical(logits, torch.Generator().manual_seed(0)))


def test_sampling_never_draws_a_filtered_token():
    logits = torch.tensor([[float("-inf"), 0.0, float("-inf")], [5.0, float("-inf"), float("-inf")]]).repeat(500, 1)
    draws = sample_categorical(logits, torch.Generator().manual_seed(0))
    assert torch.equal(draws, torch.tensor([1, 0]).repeat(500))


def test_per_sample_generators_make_rows_independent_of_the_batch():
    logits = torch.randn(6, 4, 30, generator=torch.Generator().manual_seed(0))
    whole = sample_categorical(logits, per_sample_generators(3, 0, 6))
    head = sample_categorical(logits[:2], per_sample_generators(3, 0, 2))
    tail = sample_categorical(logits[2:], per_sample_generators(3, 2, 4))
    assert whole.shape == (6, 4) and torch.equal(torch.cat([head, tail]), whole)
    assert not torch.equal(sample_categorical(logits, per_sample_generators(4, 0, 6)), whole)
    assert len(set(sample_seeds(0, 0, 100)) | set(sample_seeds(1, 0, 100))) == 200  # no overlap between runs
    with pytest.raises(ValueError, match="3 per-sample generators for a batch of 6"):
        sample_categorical(logits, per_sample_generators(3, 0, 3))


def test_filter_order_matches_llamagen():
    logits = torch.tensor([[4.0, 3.0, 2.0, 1.0]])
    # T=2 gives logits 2, 1.5, 1, .5; top-3 renormalises to probs .51/.31/.19, so top-p .5 keeps one token.
    # (Nucleus over all four tokens, .44/.26/.16/.10, would keep two: the order matters.)
    filtered = filter_logits(logits, temperature=2.0, top_k=3, top_p=0.5)
    assert torch.equal(torch.isfinite(filtered), torch.tensor([[True, False, False, False]]))
    assert torch.isfinite(filter_logits(logits, temperature=2.0, top_p=0.5)).sum() == 2
