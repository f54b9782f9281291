"""Speculative Jacobi decoding keeps next-token sampling's distribution, and behaves like a sampler."""

from __future__ import annotations

import itertools

import pytest
import torch
from scipy import stats

import arvis
from arvis.generators.base import GENERATORS
from arvis.generators.raster import RasterConfig, RasterGenerator
from arvis.samplers import SpeculativeJacobiSettings, sampler_for
from arvis.samplers.logits import filter_logits, per_sample_generators
from arvis.samplers.speculative_jacobi import verify_drafts
from arvis.testing import example_condition, randomize_parameters_


def _chi_square_p_value(counts: torch.Tensor, expected: torch.Tensor) -> float:
    """Pearson's test of counts against expected counts, bins under 5 expected pooled."""
    keep = expected >= 5
    observed, pooled = counts[keep].double(), expected[keep].double()
    if not keep.all():
        observed = torch.cat([observed, counts[~keep].sum()[None].double()])
        pooled = torch.cat([pooled, expected[~keep].sum()[None].double()])
    return float(stats.chisquare(observed.numpy(), pooled.numpy() * observed.sum().item() / pooled.sum().item()).pvalue)


def test_the_verification_of_one_draft_gives_the_target_distribution():
    """Drafts from q, verified against p: the token kept is distributed as p (the residual matters: drawing the
    replacement from p instead would give token 2 a probability of 0.32, not 0.2)."""
    target = torch.tensor([[0.5, 0.3, 0.2]])
    proposal = torch.tensor([[0.1, 0.1, 0.8]])
    generator = torch.Generator().manual_seed(0)
    draws = 20000
    drafts = torch.multinomial(proposal[0], draws, replacement=True, generator=generator)
    uniforms = torch.rand(draws, generator=generator)
    kept = torch.stack([verify_drafts(target, drafts[i:i + 1], proposal, uniforms[i:i + 1], generator)[1][0]
                        for i in range(draws)])
    assert _chi_square_p_value(torch.bincount(kept, minlength=3), target[0] * draws) > 1e-3


def test_verification_accepts_while_the_ratio_allows_and_replaces_the_first_rejected_draft():
    target = torch.tensor([[0.5, 0.5, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    point_masses = torch.eye(3)[[0, 1, 2]]
    drafts = torch.tensor([0, 1, 2])
    accepted, tokens = verify_drafts(target, drafts, point_masses, torch.tensor([0.4, 0.0, 0.0]))
    assert accepted == 2 and tokens.tolist() == [0, 2]  # 0.4 < 0.5 accepts; p(1) = 0 rejects: the residual is token 2
    accepted, tokens = verify_drafts(target, torch.tensor([1, 2, 0]), point_masses[[1, 2, 0]],
                                     torch.tensor([0.0, 0.99, 0.99]))
    assert accepted == 3 and tokens.tolist() == [1, 2, 0]


@pytest.mark.parametrize("draft_init", ["random", "repeat"])
def test_samples_follow_the_exact_joint_distribution_of_the_guided_filtered_model(draft_init):
    """A 2x2 grid over 3 codes: the 81 sequences' exact probabilities under guidance and top-p, from teacher
    forcing, against 3000 speculative samples (window 3: several drafts verified per pass, refills, a row start)."""
    torch.manual_seed(0)
    config = RasterConfig(vocab_size=3, token_grid=(2, 2), num_classes=2, dim=16, num_layers=1, num_heads=2,
                          ffn_multiple_of=16)
    model = randomize_parameters_(RasterGenerator(config), std=0.5).eval()
    sequences = torch.tensor(list(itertools.product(range(3), repeat=4)))
    with torch.no_grad():
        conditional = model(sequences, torch.full((81,), 1)).logits
        unconditional = model(sequences, torch.full((81,), model.null_class)).logits
    probabilities = filter_logits(unconditional + 2.0 * (conditional - unconditional), top_p=0.9).softmax(-1)
    exact = probabilities.gather(-1, sequences[..., None])[..., 0].prod(-1)
    draws = 3000
    sampler = sampler_for(model, "speculative-jacobi", cfg_scale=2.0, top_p=0.9, draft_window=3,
                          draft_init=draft_init)
    samples = sampler(model, torch.full((draws,), 1), rng=per_sample_generators(0, 0, draws))
    counts = torch.bincount((samples * torch.tensor([27, 9, 3, 1])).sum(-1), minlength=81)
    assert _chi_square_p_value(counts, exact * draws) > 1e-3


@pytest.mark.parametrize("preset", ["raster-tiny", "raster-t2i-tiny", "sequence-tiny"])
def test_greedy_decoding_equals_next_token_and_samples_are_seeded_and_batch_independent(preset):
    torch.manual_seed(0)
    model = randomize_parameters_(GENERATORS.build(preset)).eval()
    condition = example_condition(model, 3)
    condition = condition.replace(labels=condition.labels.clamp(max=model.num_classes - 1)) \
        if condition.labels is not None else condition
    greedy = sampler_for(model, top_k=1, cfg_scale=2.0)(model, condition)
    speculative = sampler_for(model, "speculative-jacobi", top_k=1, cfg_scale=2.0, draft_window=5)
    assert torch.equal(speculative(model, condition), greedy)
    sampler = sampler_for(model, "speculative-jacobi", cfg_scale=2.0, top_k=8, draft_window=4)
    first = sampler(model, condition, rng=per_sample_generators(3, 0, 3))
    assert torch.equal(first, sampler(model, condition, rng=per_sample_generators(3, 0, 3)))
    one_by_one = torch.cat([sampler(model, condition.select([row]), rng=per_sample_generators(3, row, 1))
                            for row in range(3)])
    assert torch.equal(first, one_by_one)


def test_speculative_jacobi_through_generate_and_its_settings(tiny_pipeline):
    images = arvis.generate(tiny_pipeline, [0, 1], num_samples=2, sampler="speculative-jacobi", draft_window=4,
                            output_type="pt", seed=1)
    assert images.shape == (4, 3, 16, 16)
    one_by_one = arvis.generate(tiny_pipeline, [0, 1], num_samples=2, sampler="speculative-jacobi", draft_window=4,
                                output_type="pt", seed=1, batch_size=1)
    torch.testing.assert_close(images, one_by_one, atol=1e-5, rtol=0)  # same tokens; the decoder's batch rounding
    with pytest.raises(ValueError, match="draft_window must be >= 1"):
        SpeculativeJacobiSettings(draft_window=0)
    with pytest.raises(ValueError, match=r"\['draft_window'\] is not a setting of the next-token sampler"):
        arvis.generate(tiny_pipeline, [0], draft_window=4)
    with pytest.raises(ValueError, match="speculative-jacobi sampler does not drive VARGenerator"):
        sampler_for(GENERATORS.build("var-tiny"), "speculative-jacobi")


def test_a_window_pass_gives_every_position_the_teacher_forced_logits_and_the_cache_rewinds():
    torch.manual_seed(0)
    model = randomize_parameters_(GENERATORS.build("raster-tiny")).eval()
    tokens, labels = torch.randint(0, model.vocab_size, (2, 16)), torch.tensor([1, 2])
    with torch.inference_mode():
        full = model(tokens, labels).logits
        cache = model.new_cache(2)
        model.step(None, labels, cache)
        window = model.step(tokens[:, :5], labels, cache, every_position=True)  # predicts tokens 1..5
        torch.testing.assert_close(window, full[:, 1:6], atol=1e-5, rtol=0)
        cache.rewind(3)  # the prefix and tokens 0, 1: the next pass continues after token 1
        again = model.step(tokens[:, 2:6], labels, cache, every_position=True)
        torch.testing.assert_close(again, full[:, 3:7], atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="rewind to a length in"):
        cache.rewind(cache.length + 1)
