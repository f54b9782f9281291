"""Stochastic vector quantizer (SVQ) of LARP (Wang et al., 2024, arXiv:2410.21264), ``SimpleVectorQuantizer``
with ``stochastic=True`` upstream.

Shapes: b batch, d code dimension, h w latent grid (LARP uses h = 1, w = number of holistic tokens),
n = b*h*w positions, k codebook size.

Latents and codes are unit-normalised. In training mode the code of each position is *drawn* from
``softmax(cos(z, e) / temperature)`` over the codebook (upstream τ = 0.03); the codebook and
commitment losses and the straight-through output use the drawn code. Encoding for generation or
evaluation (:meth:`nearest_indices`, and :meth:`forward` in eval mode) takes the most likely code,
deterministically. This differs from upstream, which keeps sampling in eval mode unless
``set_vq_eval_deterministic(True)`` was called (reference notes, upstream bug 3).

Draws use the Gumbel-max trick (argmax of logits plus Gumbel noise), an exact sample of the
softmax, from :attr:`generator` when one is set, else from torch's global generator (like dropout).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from arvis.quantizers.vq import VectorQuantizer


class StochasticVectorQuantizer(VectorQuantizer):
    """L2-normalised VQ whose training-time codes are sampled from softmax(cosine / temperature).

    Args:
        codebook_size, dim, commitment_beta, entropy_loss_ratio, entropy_temperature, usage_window: as
            :class:`VectorQuantizer` (always ``l2_norm``). The entropy loss is not LARP's; it is there for
            small codebooks that collapse (see the ``larp-demo`` recipe).
        temperature: τ of the code distribution (LARP: 0.03).
        generator: optional ``torch.Generator`` for the draws (on the latents' device).
    """

    def __init__(self, codebook_size: int, dim: int, *, temperature: float = 0.03, commitment_beta: float = 0.25,
                 entropy_loss_ratio: float = 0.0, entropy_temperature: float = 0.01, usage_window: int = 65536,
                 generator: torch.Generator | None = None) -> None:
        super().__init__(codebook_size, dim, l2_norm=True, commitment_beta=commitment_beta,
                         entropy_loss_ratio=entropy_loss_ratio, entropy_temperature=entropy_temperature,
                         usage_window=usage_window)
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)
        self.generator = generator
        with torch.no_grad():
            nn.init.kaiming_uniform_(self.codebook.weight)  # upstream's nn.Embedding re-initialisation

    def code_logits(self, distances: Tensor) -> Tensor:
        """(n, k) squared distances of unit vectors -> (n, k) logits cos / τ (cos = 1 - d² / 2)."""
        return (1.0 - 0.5 * distances) / self.temperature

    def probabilities(self, latents: Tensor) -> Tensor:
        """latents (b, d, h, w) -> (n, k) code probabilities softmax(cos / τ), positions in (b h w) order."""
        return self.code_logits(self._squared_distances(self.prepare(latents))).softmax(dim=-1)

    def choose_indices(self, distances: Tensor) -> Tensor:
        """Training: one draw per position from softmax(cos / τ); eval: the nearest code."""
        if not self.training:
            return distances.argmin(dim=1)
        logits = self.code_logits(distances)
        uniform = torch.rand(logits.shape, generator=self.generator, device=logits.device, dtype=logits.dtype)
        gumbel = -torch.log(-torch.log(uniform.clamp_min(torch.finfo(logits.dtype).tiny)))
        return (logits + gumbel).argmax(dim=1)
