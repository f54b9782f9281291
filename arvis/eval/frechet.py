"""Fréchet distance between Gaussians fitted to features: the one implementation behind FID and FVD.

    FD = ||mu1 - mu2||^2 + tr(sigma1) + tr(sigma2) - 2 tr((sigma1 sigma2)^(1/2))

(Heusel et al. 2017, https://arxiv.org/abs/1706.08500). The trace of the matrix square
root is computed without scipy, in float64, from a symmetric problem:
``sigma1 sigma2`` is similar to ``A = sigma1^(1/2) sigma2 sigma1^(1/2)``, which is
symmetric positive semi-definite, so ``tr((sigma1 sigma2)^(1/2)) = sum(sqrt(eig(A)))``.
``torch.linalg.eigh`` on symmetric matrices stays accurate for rank-deficient
covariances (fewer samples than dimensions), where ``scipy.linalg.sqrtm`` returns
complex or NaN values; eigenvalues at rounding level are dropped (see ``_drop_rounding``).

Covariance conventions (both used in the field, so both are here):
    sample (divide by n - 1): FID as computed by numpy ``np.cov``, torch-fidelity, pytorch-fid.
    population (divide by n): FVD as computed by StyleGAN-V's ``FeatureStats.get_mean_cov``.

Shapes: n samples, d feature dimension.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

ArrayLike = Tensor | np.ndarray


class FeatureStats:
    """Streaming float64 accumulator of n, sum(x) and sum(x^T x) (StyleGAN-V's ``FeatureStats``).

    Feed batches with :meth:`update`, then read the Gaussian with :meth:`mean_cov`. Sums are
    kept on the CPU in float64 whatever the features' device and dtype, so a float16 GPU
    batch and its float32 CPU copy accumulate to the same statistics.
    """

    def __init__(self) -> None:
        self.num_samples = 0
        self._sum: Tensor | None = None  # (d,)
        self._sum_outer: Tensor | None = None  # (d, d)

    @property
    def num_features(self) -> int | None:
        """The feature dimension d, or None before the first :meth:`update`."""
        return None if self._sum is None else self._sum.shape[0]

    def update(self, features: ArrayLike) -> None:
        """Adds a batch of features (b, d); every batch must have the same d."""
        x = _as_float64(features, "features")
        if x.ndim != 2:
            raise ValueError(f"expected features of shape (batch, dim), got {tuple(x.shape)}; flatten them first")
        if not torch.isfinite(x).all():
            raise ValueError("features contain NaN or inf; check the feature extractor and its inputs")
        if self._sum is None:
            self._sum = torch.zeros(x.shape[1], dtype=torch.float64)
            self._sum_outer = torch.zeros(x.shape[1], x.shape[1], dtype=torch.float64)
        elif x.shape[1] != self._sum.shape[0]:
            raise ValueError(
                f"features have dimension {x.shape[1]} but earlier batches had {self._sum.shape[0]}; "
                "use one feature extractor for all batches"
            )
        self.num_samples += x.shape[0]
        self._sum += x.sum(dim=0)
        self._sum_outer += x.T @ x

    def mean_cov(self, population: bool = True) -> tuple[Tensor, Tensor]:
        """Returns mu (d,) and sigma (d, d), float64.

        Args:
            population: divide the covariance by n (FVD, StyleGAN-V) if True, else by n - 1
                (FID, numpy ``cov``, torch-fidelity).
        """
        if self._sum is None or self.num_samples < 2:
            raise ValueError(f"need at least 2 samples for a covariance, got {self.num_samples}")
        n = self.num_samples
        mu = self._sum / n
        sigma = (self._sum_outer - n * torch.outer(mu, mu)) / (n if population else n - 1)
        return mu, (sigma + sigma.T) / 2


def gaussian_stats(features: ArrayLike, *, population: bool = False) -> tuple[Tensor, Tensor]:
    """Mean (d,) and covariance (d, d) in float64 of features (n, d); sample covariance by default."""
    stats = FeatureStats()
    stats.update(features)
    return stats.mean_cov(population=population)


def frechet_distance(mu1: ArrayLike, sigma1: ArrayLike, mu2: ArrayLike, sigma2: ArrayLike) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2), computed in float64.

    Args:
        mu1, mu2: means (d,), numpy arrays or tensors of any float dtype (cast to float64).
        sigma1, sigma2: symmetric positive semi-definite covariances (d, d); may be singular.

    Returns:
        The distance, >= 0 (rounding below zero is clamped to 0).
    """
    mu1, mu2 = _as_float64(mu1, "mu1"), _as_float64(mu2, "mu2")
    sigma1, sigma2 = _as_float64(sigma1, "sigma1"), _as_float64(sigma2, "sigma2")
    dim = mu1.shape[0] if mu1.ndim == 1 else None
    for name, mu in (("mu1", mu1), ("mu2", mu2)):
        if mu.ndim != 1 or mu.shape[0] != dim:
            raise ValueError(f"{name} must have shape ({dim},) like mu1 (a 1-D mean), got {tuple(mu.shape)}")
    for name, sigma in (("sigma1", sigma1), ("sigma2", sigma2)):
        if tuple(sigma.shape) != (dim, dim):
            raise ValueError(f"{name} must have shape ({dim}, {dim}) to match the means, got {tuple(sigma.shape)}")
        scale = sigma.abs().max().item() if sigma.numel() else 0.0
        if (sigma - sigma.T).abs().max().item() > 1e-6 * scale + 1e-12:
            raise ValueError(f"{name} is not symmetric; pass a covariance matrix")
    for name, value in (("mu1", mu1), ("mu2", mu2), ("sigma1", sigma1), ("sigma2", sigma2)):
        if not torch.isfinite(value).all():
            raise ValueError(f"{name} contains NaN or inf")
    root1 = _psd_sqrt((sigma1 + sigma1.T) / 2)
    inner = root1 @ ((sigma2 + sigma2.T) / 2) @ root1
    trace_sqrt = _drop_rounding(torch.linalg.eigvalsh((inner + inner.T) / 2)).sqrt().sum()
    distance = (mu1 - mu2).square().sum() + sigma1.trace() + sigma2.trace() - 2 * trace_sqrt
    distance = distance.item()
    if not math.isfinite(distance):  # unreachable for finite inputs; kept as a guard
        raise ValueError("the Fréchet distance is not finite; check the statistics")
    return max(distance, 0.0)


def _psd_sqrt(sigma: Tensor) -> Tensor:
    """Symmetric square root of a symmetric PSD matrix (eigenvalues at rounding level count as 0)."""
    eigenvalues, eigenvectors = torch.linalg.eigh(sigma)
    return (eigenvectors * _drop_rounding(eigenvalues).sqrt()) @ eigenvectors.T


def _drop_rounding(eigenvalues: Tensor) -> Tensor:
    """Eigenvalues below d * eps * max|eigenvalue| (numpy's ``matrix_rank`` tolerance) set to 0.

    With fewer samples than dimensions most eigenvalues are exactly 0 but come out as
    rounding noise of about 1e-16 relative; their square roots (about 1e-8 each, over
    thousands of them) would otherwise bias the trace. Measured on 20 samples of 2048-d
    features: this matches the exact value (from the n x n problem) to 1e-15 relative,
    where scipy's ``sqrtm`` and torch-fidelity's ``eigvals`` are off by about 1e-7.
    """
    tolerance = eigenvalues.shape[0] * torch.finfo(eigenvalues.dtype).eps * eigenvalues.abs().max()
    return torch.where(eigenvalues > tolerance, eigenvalues, torch.zeros_like(eigenvalues))


def _as_float64(value: ArrayLike, name: str) -> Tensor:
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(value)
    if not isinstance(value, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor or numpy array, got {type(value).__name__}")
    if value.is_complex():
        raise ValueError(f"{name} is complex; pass real-valued statistics")
    return value.detach().to(device="cpu", dtype=torch.float64)
