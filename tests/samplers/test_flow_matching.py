"""The flow-matching token sampler: codes from Gaussian noise follow the categorical distribution, deterministically."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from scipy.stats import chisquare

from arvis.samplers.flow_matching import FlowMatchingDraw, flow_to_codes
from arvis.samplers.next_token import NextTokenSampler
from arvis.samplers import NextTokenSettings


def _fixed_case():
    generator = torch.Generator().manual_seed(1)
    codes = F.normalize(torch.randn(12, 4, generator=generator), dim=-1)
    probs = torch.softmax(torch.randn(12, generator=generator, dtype=torch.float64) * 1.5, 0)
    probs[[2, 7]] = 0.0  # codes a filter removed: never drawn
    return codes, probs / probs.sum()


def test_flow_matching_codes_follow_the_distribution():
    codes, probs = _fixed_case()
    count = 40000
    noise = torch.randn(count, 4, generator=torch.Generator().manual_seed(2))
    indices = flow_to_codes(noise, probs.log().expand(count, -1), codes)
    observed = torch.bincount(indices, minlength=12).double()
    assert observed[[2, 7]].sum() == 0
    kept = probs > 0
    result = chisquare(observed[kept].numpy(), (probs[kept] * count).numpy())
    assert result.pvalue > 1e-3, (observed / count, probs)
    # the test has power: 16 ODE steps are measurably off the distribution
    coarse = torch.bincount(flow_to_codes(noise, probs.log().expand(count, -1), codes, num_steps=16), minlength=12)
    assert chisquare(coarse.double()[kept].numpy(), (probs[kept] * count).numpy()).pvalue < 1e-6


def test_flow_matching_map_is_deterministic_and_depends_on_the_noise():
    codes, probs = _fixed_case()
    noise = torch.randn(500, 4, generator=torch.Generator().manual_seed(3))
    first = flow_to_codes(noise, probs.log().expand(500, -1), codes)
    assert torch.equal(first, flow_to_codes(noise.clone(), probs.log().expand(500, -1), codes))
    assert not torch.equal(first, flow_to_codes(-noise, probs.log().expand(500, -1), codes))


def test_flow_matching_in_row_chunks_gives_the_same_codes(monkeypatch):
    import arvis.samplers.flow_matching as flow_matching

    codes, probs = _fixed_case()
    noise = torch.randn(50, 4, generator=torch.Generator().manual_seed(4))
    log_probs = probs.log().expand(50, -1).clone()
    log_probs[::3, :6] = float("-inf")  # rows with different supports
    whole = flow_to_codes(noise, log_probs, codes, num_steps=32)
    monkeypatch.setattr(flow_matching, "_row_chunks", lambda lp, dim: [slice(i, i + 7) for i in range(0, 50, 7)])
    assert torch.equal(flow_to_codes(noise, log_probs, codes, num_steps=32), whole)


def test_flow_matching_rejects_mismatched_shapes():
    codes, probs = _fixed_case()
    with pytest.raises(ValueError, match="noise dimension must be the code dimension"):
        flow_to_codes(torch.randn(3, 5), probs.log().expand(3, -1), codes)


def test_flow_matching_draw_makes_teacher_sampling_a_function_of_the_noise(tiny_pipeline):
    generator, tokenizer = tiny_pipeline.generator, tiny_pipeline.tokenizer
    codes = tokenizer.code_vectors()
    labels = torch.tensor([0, 3, 5])
    noise = torch.randn(3, generator.layout.length, codes.shape[1], generator=torch.Generator().manual_seed(0))
    sampler = tiny_pipeline.sampler()
    first = sampler(generator, labels, draw=FlowMatchingDraw(codes, noise))
    again = sampler(generator, labels, draw=FlowMatchingDraw(codes, noise.clone()))
    other = sampler(generator, labels, draw=FlowMatchingDraw(codes, torch.randn_like(noise)))
    assert torch.equal(first, again) and not torch.equal(first, other)
    # with a one-code distribution (top_k=1) the map must give the greedy tokens
    greedy = NextTokenSampler(NextTokenSettings(top_k=1))
    assert torch.equal(greedy(generator, labels, draw=FlowMatchingDraw(codes, noise)), greedy(generator, labels))
