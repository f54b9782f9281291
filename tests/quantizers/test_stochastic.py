"""LARP's stochastic VQ: training draws follow softmax(cos / τ); encoding is deterministic."""

from __future__ import annotations

import math

import pytest
import torch
from scipy.stats import chisquare

from arvis.quantizers import StochasticVectorQuantizer

COSINES = torch.tensor([0.95, 0.93, 0.92, 0.90, 0.87, 0.80, 0.50, -0.20])


def quantizer_with_known_cosines(seed: int = 0) -> tuple[StochasticVectorQuantizer, torch.Tensor]:
    """A 8-code quantizer (τ = 0.03, LARP's) whose codes have the cosines ``COSINES`` to the latent e_0."""
    quantizer = StochasticVectorQuantizer(8, 4, temperature=0.03, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        quantizer.codebook.weight.zero_()
        quantizer.codebook.weight[:, 0] = COSINES * 3.0  # any length: codes are normalised
        quantizer.codebook.weight[:, 1] = (1 - COSINES ** 2).sqrt() * 3.0
    latents = torch.zeros(1, 4, 1, 20000)
    latents[:, 0] = 2.0
    return quantizer, latents


def test_training_draws_follow_softmax_of_cosine_over_temperature():
    quantizer, latents = quantizer_with_known_cosines()
    expected = torch.softmax(COSINES.double() / 0.03, dim=0)
    torch.testing.assert_close(quantizer.probabilities(latents[..., :1])[0].double(), expected, atol=1e-5, rtol=1e-4)
    quantizer.train()
    indices = quantizer(latents).indices.flatten()
    counts = torch.bincount(indices, minlength=8).double()
    keep = expected * len(indices) >= 5  # chi-square needs >= 5 expected draws per cell; pool the rest
    observed = torch.cat([counts[keep], counts[~keep].sum(0, keepdim=True)])
    wanted = torch.cat([expected[keep], expected[~keep].sum(0, keepdim=True)]) * len(indices)
    result = chisquare(observed.numpy(), wanted.numpy())
    assert result.pvalue > 1e-3, (counts.tolist(), (expected * len(indices)).tolist())
    # Not the nearest code every time: the most likely code holds only about 40% of the draws.
    assert 0.3 < counts[0] / len(indices) < 0.5


def test_the_draws_are_reproducible_from_the_generator():
    first, latents = quantizer_with_known_cosines(seed=3)
    again, _ = quantizer_with_known_cosines(seed=3)
    other, _ = quantizer_with_known_cosines(seed=4)
    draws = [q.train()(latents[..., :500]).indices for q in (first, again, other)]
    assert torch.equal(draws[0], draws[1]) and not torch.equal(draws[0], draws[2])


def test_encoding_for_generation_is_deterministic_and_nearest():
    quantizer, _ = quantizer_with_known_cosines()
    latents = torch.randn(2, 4, 1, 16, generator=torch.Generator().manual_seed(0))
    quantizer.eval()
    first, second = quantizer(latents), quantizer(latents)
    assert torch.equal(first.indices, second.indices)
    assert torch.equal(first.indices, quantizer.nearest_indices(latents))
    quantizer.train()  # encode-style lookups stay nearest even in training mode
    assert torch.equal(quantizer.nearest_indices(latents), first.indices)


def test_losses_and_straight_through_use_the_drawn_code():
    quantizer, latents = quantizer_with_known_cosines()
    latents = latents[..., :64].clone().requires_grad_(True)
    output = quantizer.train()(latents)
    codes = quantizer.lookup(output.indices)
    torch.testing.assert_close(output.quantized, codes)
    prepared = torch.nn.functional.normalize(latents, dim=1)
    torch.testing.assert_close(output.losses["codebook"], ((codes - prepared) ** 2).mean())
    torch.testing.assert_close(output.losses["commitment"], 0.25 * ((codes - prepared) ** 2).mean())
    output.quantized.sum().backward()
    assert latents.grad is not None and latents.grad.abs().sum() > 0


def test_codebook_starts_with_kaiming_uniform_rows():
    quantizer = StochasticVectorQuantizer(4096, 16, generator=torch.Generator().manual_seed(0))
    bound = math.sqrt(6.0 / 16)  # kaiming_uniform_ with a=0 over fan_in = 16
    weight = quantizer.codebook.weight
    assert weight.abs().max() <= bound and weight.abs().max() > 0.95 * bound


@pytest.mark.parametrize("temperature", [0.0, -0.1])
def test_bad_temperature_raises(temperature):
    with pytest.raises(ValueError, match="temperature"):
        StochasticVectorQuantizer(8, 4, temperature=temperature)
