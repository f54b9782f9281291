"""Orthus's soft alternative to VQ: a continuous latent embedded as a mixture of image-token embedding rows.

Shapes: n latents, e latent width, v codes, d model width.

For a latent x (the tokenizer's unquantised vector) and a learnable input codebook c (v, e), initialised from the
tokenizer's codebook:

    w = softmax(-‖x - c_j‖² / τ)          (n, v)
    embedding = w @ E_img                  (n, d)   E_img: the trunk's v image-token embedding rows

Upstream uses τ = 1 (no temperature in ``OrthusModel.forward``); as τ -> 0 the mixture becomes the row of the
nearest code, i.e. the hard-VQ embedding. τ can be learned (stored as its logarithm).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class SoftCodeEmbedding(nn.Module):
    """Latents (..., e) and embedding rows (v, d) -> mixtures (..., d); see the module docstring.

    Args:
        num_codes: v.
        latent_dim: e.
        temperature: τ (> 0), the initial value when ``learn_temperature``.
        learn_temperature: make log τ a parameter.
    """

    def __init__(self, num_codes: int, latent_dim: int, temperature: float = 1.0,
                 learn_temperature: bool = False) -> None:
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"the soft-embedding temperature must be > 0, got {temperature}")
        self.codebook_in = nn.Embedding(num_codes, latent_dim)  # upstream's name
        log_temperature = torch.tensor(math.log(temperature))
        if learn_temperature:
            self.log_temperature = nn.Parameter(log_temperature)
        else:
            self.register_buffer("log_temperature", log_temperature)
        self.initial_log_temperature = math.log(temperature)

    def reset_parameters(self, codebook: Tensor | None = None) -> None:
        """The input codebook from ``codebook`` (v, e) (the tokenizer's), else N(0, 1); τ back to its initial value."""
        with torch.no_grad():
            if codebook is None:
                nn.init.normal_(self.codebook_in.weight)
            else:
                if tuple(codebook.shape) != tuple(self.codebook_in.weight.shape):
                    raise ValueError(f"the input codebook is {tuple(self.codebook_in.weight.shape)}, got a codebook "
                                     f"of shape {tuple(codebook.shape)}")
                self.codebook_in.weight.copy_(codebook)
            self.log_temperature.fill_(self.initial_log_temperature)

    @property
    def temperature(self) -> Tensor:
        return self.log_temperature.exp()

    def weights(self, latents: Tensor) -> Tensor:
        """latents (..., e) -> (..., v) mixture weights, computed in float32."""
        codes = self.codebook_in.weight.float()
        x = latents.float()
        squared = x.pow(2).sum(-1, keepdim=True) - 2.0 * x @ codes.t() + codes.pow(2).sum(-1)
        return (-squared / self.temperature.float()).softmax(dim=-1)

    def forward(self, latents: Tensor, rows: Tensor) -> Tensor:
        """latents (..., e), rows (v, d) -> (..., d) in the rows' dtype."""
        return self.weights(latents).to(rows.dtype) @ rows
