"""Vector quantizer of VQ-VAE (van den Oord et al., 2017) as used by LlamaGen (Sun et al., 2024, arXiv:2406.06525).

Shapes: b batch, d code dimension, h w latent grid, n = b*h*w flattened positions,
k codebook size.

With ``l2_norm`` the latents and the codebook are both projected onto the unit sphere,
so the nearest code by squared L2 distance is the one of highest cosine similarity.
The commitment weight ``beta`` multiplies the commitment term (the encoder-side
pull), not the codebook term as in taming's legacy quantizer.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn


@dataclasses.dataclass
class QuantizerOutput:
    """What :meth:`VectorQuantizer.forward` returns.

    Attributes:
        quantized: (b, d, h, w) straight-through codes: their value is the codebook entry,
            their gradient flows to the input latents.
        indices: (b, h, w) long codebook indices.
        losses: scalar losses ``"codebook"``, ``"commitment"`` and, when enabled, ``"entropy"``.
        usage: scalar fraction of the codebook used (see :meth:`VectorQuantizer.forward`).
    """

    quantized: Tensor
    indices: Tensor
    losses: dict[str, Tensor]
    usage: Tensor


class VectorQuantizer(nn.Module):
    """Nearest-neighbour codebook lookup with straight-through gradients.

    Args:
        codebook_size: number of codes k.
        dim: code dimension d (the channel count of the latents).
        l2_norm: normalise latents and codes to unit length before the lookup.
        commitment_beta: weight of the commitment loss.
        entropy_loss_ratio: weight of the entropy loss; 0 skips computing it.
        entropy_temperature: temperature of the code-assignment softmax in the entropy loss.
        usage_window: how many recent training indices the usage statistic remembers.
    """

    def __init__(self, codebook_size: int, dim: int, *, l2_norm: bool = True, commitment_beta: float = 0.25,
                 entropy_loss_ratio: float = 0.0, entropy_temperature: float = 0.01,
                 usage_window: int = 65536) -> None:
        super().__init__()
        if codebook_size < 1 or dim < 1 or usage_window < 1:
            raise ValueError(
                f"codebook_size, dim and usage_window must be positive, got {codebook_size}, {dim}, {usage_window}"
            )
        if entropy_temperature <= 0:
            raise ValueError(f"entropy_temperature must be positive, got {entropy_temperature}")
        self.codebook_size = codebook_size
        self.dim = dim
        self.l2_norm = l2_norm
        self.commitment_beta = commitment_beta
        self.entropy_loss_ratio = entropy_loss_ratio
        self.entropy_temperature = entropy_temperature
        self.codebook = nn.Embedding(codebook_size, dim)
        with torch.no_grad():
            self.codebook.weight.uniform_(-1.0 / codebook_size, 1.0 / codebook_size)
            if l2_norm:
                self.codebook.weight.copy_(F.normalize(self.codebook.weight, dim=-1))
        # Training statistic, not model state: kept out of checkpoints (non-persistent).
        self.register_buffer("recent_indices", torch.full((usage_window,), -1, dtype=torch.long), persistent=False)

    def codes(self) -> Tensor:
        """(k, d) codebook as used for lookups (unit-normalised if ``l2_norm``)."""
        weight = self.codebook.weight
        return F.normalize(weight, dim=-1) if self.l2_norm else weight

    def prepare(self, latents: Tensor) -> Tensor:
        """latents (b, d, h, w) -> (b, d, h, w), unit-normalised over d if ``l2_norm``: the space the nearest code is
        searched in (no state is changed)."""
        if latents.ndim != 4 or latents.shape[1] != self.dim:
            raise ValueError(
                f"expected latents of shape (batch, {self.dim}, height, width), got {tuple(latents.shape)}"
            )
        return F.normalize(latents, dim=1) if self.l2_norm else latents

    def _squared_distances(self, latents: Tensor) -> Tensor:
        """Prepared latents (b, d, h, w) -> (n, k) squared L2 distances to every code, in float32."""
        flat = rearrange(latents, "b d h w -> (b h w) d").float()
        codes = self.codes().float()
        with torch.autocast(device_type=flat.device.type, enabled=False):
            return (
                flat.pow(2).sum(dim=1, keepdim=True)
                + codes.pow(2).sum(dim=1)[None, :]
                - 2.0 * flat @ codes.t()
            )

    def nearest_indices(self, latents: Tensor) -> Tensor:
        """latents (b, d, h, w) -> (b, h, w) long indices of the nearest codes; no state is changed."""
        prepared = self.prepare(latents)
        indices = self._squared_distances(prepared).argmin(dim=1)
        return rearrange(indices, "(b h w) -> b h w", b=latents.shape[0], h=latents.shape[2])

    def choose_indices(self, distances: Tensor) -> Tensor:
        """(n, k) squared distances -> (n,) code indices of a :meth:`forward` pass: the nearest codes."""
        return distances.argmin(dim=1)

    def lookup(self, indices: Tensor) -> Tensor:
        """indices (b, h, w) long -> codes (b, d, h, w) (unit-normalised if ``l2_norm``)."""
        if indices.ndim != 3 or indices.dtype != torch.long:
            raise ValueError(
                f"expected (batch, height, width) long indices, got {indices.dtype} {tuple(indices.shape)}"
            )
        return rearrange(F.embedding(indices, self.codes()), "b h w d -> b d h w")

    def forward(self, latents: Tensor) -> QuantizerOutput:
        """Quantizes latents (b, d, h, w).

        In training mode the indices are appended to the rolling usage window (under
        no_grad) and ``usage`` is the fraction of the codebook seen in that window. In eval
        mode nothing is stored and ``usage`` is the fraction used by this batch alone.
        """
        prepared = self.prepare(latents)
        distances = self._squared_distances(prepared)
        flat_indices = self.choose_indices(distances)
        indices = rearrange(flat_indices, "(b h w) -> b h w", b=latents.shape[0], h=latents.shape[2])
        codes = self.lookup(indices).to(prepared.dtype)
        codes_float, prepared_float = codes.float(), prepared.float()  # losses in float32 under bf16
        losses = {
            "codebook": torch.mean((codes_float - prepared_float.detach()) ** 2),
            "commitment": self.commitment_beta * torch.mean((codes_float.detach() - prepared_float) ** 2),
        }
        if self.entropy_loss_ratio > 0:
            losses["entropy"] = self.entropy_loss_ratio * entropy_loss(-distances, self.entropy_temperature)
        quantized = prepared + (codes - prepared).detach()
        usage = self._update_usage(flat_indices) if self.training else self._fraction_used(flat_indices)
        return QuantizerOutput(quantized=quantized, indices=indices, losses=losses, usage=usage)

    @torch.no_grad()
    def _update_usage(self, flat_indices: Tensor) -> Tensor:
        """Pushes (n,) indices into the rolling window; returns the fraction of codes seen in it."""
        window = self.recent_indices
        count = flat_indices.numel()
        if count >= window.numel():
            window.copy_(flat_indices[-window.numel():])
        else:
            window.copy_(torch.cat([window[count:], flat_indices]))
        return self._fraction_used(window)

    @torch.no_grad()
    def _fraction_used(self, indices: Tensor) -> Tensor:
        """(n,) indices, -1 for empty slots -> scalar fraction of distinct codes among them."""
        valid = indices[indices >= 0]
        seen = torch.bincount(valid, minlength=self.codebook_size).count_nonzero()
        return seen.float() / self.codebook_size


def entropy_loss(affinity: Tensor, temperature: float) -> Tensor:
    """Mean per-sample entropy minus entropy of the mean of softmax(affinity / temperature).

    Minimising it makes each assignment confident while spreading assignments over the
    codebook (LlamaGen's ``compute_entropy_loss``).

    Args:
        affinity: (n, k) scores, e.g. negative squared distances.
        temperature: softmax temperature.
    """
    logits = affinity.float() / temperature
    probabilities = logits.softmax(dim=-1)
    sample_entropy = -(probabilities * logits.log_softmax(dim=-1)).sum(dim=-1).mean()
    mean_probabilities = probabilities.mean(dim=0)
    average_entropy = -(mean_probabilities * torch.log(mean_probabilities + 1e-5)).sum()
    return sample_entropy - average_entropy
