"""Fréchet distance: closed forms, scipy parity, singular covariances, streaming statistics."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch

from arvis.eval.frechet import FeatureStats, frechet_distance, gaussian_stats


def scipy_frechet(mu1, sigma1, mu2, sigma2) -> float:
    """The pytorch-fid / torch-fidelity formula."""
    covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean.real))


def random_spd(rng: np.random.Generator, dim: int) -> np.ndarray:
    a = rng.standard_normal((dim, dim))
    return a @ a.T / dim + 0.5 * np.eye(dim)


def test_diagonal_closed_form():
    a, b = np.array([1.0, 4.0, 9.0, 0.25]), np.array([4.0, 1.0, 9.0, 1.0])
    mu1, mu2 = np.array([0.0, 1.0, 2.0, 3.0]), np.array([1.0, 1.0, 0.0, 3.0])
    expected = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-12)


def test_commuting_covariances_closed_form():
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.standard_normal((6, 6)))  # shared eigenvectors -> sigma1 sigma2 commute
    a, b = rng.uniform(0.1, 3.0, 6), rng.uniform(0.1, 3.0, 6)
    sigma1, sigma2 = q @ np.diag(a) @ q.T, q @ np.diag(b) @ q.T
    mu = rng.standard_normal(6)
    expected = ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
    assert frechet_distance(mu, sigma1, mu, sigma2) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("dim", [2, 16, 64])
def test_matches_scipy_sqrtm(dim):
    rng = np.random.default_rng(dim)
    mu1, mu2 = rng.standard_normal(dim), rng.standard_normal(dim)
    sigma1, sigma2 = random_spd(rng, dim), random_spd(rng, dim)
    expected = scipy_frechet(mu1, sigma1, mu2, sigma2)
    assert frechet_distance(mu1, sigma1, mu2, sigma2) == pytest.approx(expected, rel=1e-6)
    as_float32 = [torch.from_numpy(x).float() for x in (mu1, sigma1, mu2, sigma2)]
    assert frechet_distance(*as_float32) == pytest.approx(expected, rel=1e-5)
    mixed = (mu1.astype(np.float32), torch.from_numpy(sigma1), torch.from_numpy(mu2).half().float(), sigma2)
    assert np.isfinite(frechet_distance(*mixed))  # mixed dtypes and array types are fine


def test_rank_deficient_is_finite_and_nonnegative():
    gen = torch.Generator().manual_seed(0)
    dim = 64
    x, y = torch.randn(10, dim, generator=gen), torch.randn(12, dim, generator=gen) + 0.1  # n < d: singular
    distance = frechet_distance(*gaussian_stats(x), *gaussian_stats(y))
    assert np.isfinite(distance) and distance >= 0
    zero = torch.zeros(dim, dim)
    assert frechet_distance(torch.zeros(dim), zero, torch.zeros(dim), zero) == 0.0


def test_rank_deficient_matches_the_exact_small_problem():
    """With n < d, tr sqrt(s1 s2) is the sum of singular values of Xc Yc^T / (n - 1): exact, no d x d roots."""
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(20, 512, generator=gen, dtype=torch.float64)
    y = 1.1 * torch.randn(20, 512, generator=gen, dtype=torch.float64) + 0.1
    xc, yc = x - x.mean(0), y - y.mean(0)
    exact = ((x.mean(0) - y.mean(0)).square().sum() + xc.square().sum() / 19 + yc.square().sum() / 19
             - 2 * torch.linalg.svdvals(xc @ yc.T / 19).sum()).item()
    assert frechet_distance(*gaussian_stats(x), *gaussian_stats(y)) == pytest.approx(exact, rel=1e-12)


def test_same_features_give_zero():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(200, 32, generator=gen) * 3 + 1
    mu, sigma = gaussian_stats(x)
    assert frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0.0, abs=1e-9)
    singular_mu, singular_sigma = gaussian_stats(x[:8])
    assert frechet_distance(singular_mu, singular_sigma, singular_mu, singular_sigma) == pytest.approx(0.0, abs=1e-6)


def test_streaming_equals_one_shot():
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(103, 8, generator=gen) * 5 + 2
    stats = FeatureStats()
    for chunk in x.split(17):
        stats.update(chunk.float())
    assert stats.num_samples == 103 and stats.num_features == 8
    for population in (True, False):
        mu, sigma = stats.mean_cov(population=population)
        expected = np.cov(x.double().numpy(), rowvar=False, bias=population)
        assert mu.dtype == sigma.dtype == torch.float64
        np.testing.assert_allclose(mu.numpy(), x.double().mean(0).numpy(), rtol=1e-12)
        np.testing.assert_allclose(sigma.numpy(), expected, rtol=1e-10, atol=1e-10)
    _, population = stats.mean_cov(population=True)
    _, sample = stats.mean_cov(population=False)
    assert torch.allclose(population * 103 / 102, sample, rtol=1e-12, atol=0)
    mu, sigma = gaussian_stats(x)  # sample covariance by default, as torch-fidelity
    assert torch.allclose(sigma, sample, rtol=1e-12, atol=1e-12)


def test_feature_stats_errors():
    stats = FeatureStats()
    assert stats.num_features is None
    with pytest.raises(ValueError, match="at least 2 samples"):
        stats.mean_cov()
    stats.update(torch.zeros(1, 4))
    with pytest.raises(ValueError, match="at least 2 samples"):
        stats.mean_cov()
    with pytest.raises(ValueError, match="dimension 5 but earlier batches had 4"):
        stats.update(torch.zeros(3, 5))
    with pytest.raises(ValueError, match="NaN or inf"):
        stats.update(torch.full((2, 4), float("nan")))
    with pytest.raises(ValueError, match=r"shape \(batch, dim\)"):
        stats.update(torch.zeros(2, 4, 1))


def test_bad_shapes_raise():
    mu, sigma = np.zeros(3), np.eye(3)
    with pytest.raises(ValueError, match="mu2 must have shape"):
        frechet_distance(mu, sigma, np.zeros(4), np.eye(4))
    with pytest.raises(ValueError, match="sigma2 must have shape"):
        frechet_distance(mu, sigma, mu, np.eye(4))
    with pytest.raises(ValueError, match="mu1 must have shape"):
        frechet_distance(np.zeros((3, 1)), sigma, mu, sigma)
    with pytest.raises(ValueError, match="not symmetric"):
        frechet_distance(mu, np.triu(np.ones((3, 3))), mu, sigma)
    with pytest.raises(ValueError, match="NaN or inf"):
        frechet_distance(np.full(3, np.nan), sigma, mu, sigma)
    with pytest.raises(ValueError, match="torch.Tensor or numpy array"):
        frechet_distance([0.0, 0.0, 0.0], sigma, mu, sigma)
