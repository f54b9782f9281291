"""MAR's diffusion head, ``SimpleMLPAdaLN``: a residual MLP denoiser of one token's latent, conditioned on a vector.

Li et al., "Autoregressive Image Generation without Vector Quantization", 2024 (MAR's ``diffloss.py``), as used by
Orthus (``models/diff_mlp.py`` upstream, with the output as wide as the input: v-prediction, no learned variance).

Shapes: n rows (tokens × diffusion repeats), e latent width, w head width, d condition width.

    y = TimestepEmbedder(t) + cond_embed(z)                       (n, w)
    x = input_proj(x_t)                                           (n, w)
    each block: x + gate · MLP(LN(x) · (1 + scale) + shift),  (shift, scale, gate) = adaLN_modulation(y)
    out = linear(LN(x) · (1 + scale) + shift),  (shift, scale) = final_layer.adaLN_modulation(y)

Initialisation as upstream: Xavier-uniform linear weights with zero biases, N(0, 0.02) timestep MLP weights, and
zero modulation and output layers (so the head starts by predicting 0). Submodule names follow upstream.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from arvis.nn.linear import Linear
from arvis.nn.sincos import sincos_1d

FREQUENCY_DIM = 256  # the sinusoidal timestep features' width (DiT's and MAR's)


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    return x * (1 + scale) + shift


def timestep_features(timesteps: Tensor, dim: int = FREQUENCY_DIM, max_period: float = 10000.0) -> Tensor:
    """(n,) timesteps (fractional allowed) -> (n, dim) float32 [cos(t·w_i), sin(t·w_i)], w_i =
    max_period^(-i/(dim/2)) (DiT's order: cosines first)."""
    features = sincos_1d(dim, timesteps.float(), base=max_period).to(timesteps.device)
    sines, cosines = features.chunk(2, dim=-1)
    return torch.cat([cosines, sines], dim=-1)


class TimestepEmbedder(nn.Module):
    """(n,) timesteps -> (n, w): sinusoidal features, then Linear, SiLU, Linear."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(Linear(FREQUENCY_DIM, width), nn.SiLU(), Linear(width, width))

    def forward(self, timesteps: Tensor) -> Tensor:
        return self.mlp(timestep_features(timesteps).to(self.mlp[0].weight.dtype))


class ResBlock(nn.Module):
    """x (n, w), y (n, w) -> x + gate · MLP(modulated LN(x))."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.in_ln = nn.LayerNorm(width, eps=1e-6)
        self.mlp = nn.Sequential(Linear(width, width), nn.SiLU(), Linear(width, width))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), Linear(width, 3 * width))

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        shift, scale, gate = self.adaLN_modulation(y).chunk(3, dim=-1)
        return x + gate * self.mlp(modulate(self.in_ln(x), shift, scale))


class FinalLayer(nn.Module):
    """DiT's final layer: modulated LN without affine parameters, then a linear map to the output width."""

    def __init__(self, width: int, out_dim: int) -> None:
        super().__init__()
        self.norm_final = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.linear = Linear(width, out_dim)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), Linear(width, 2 * width))

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        shift, scale = self.adaLN_modulation(y).chunk(2, dim=-1)
        return self.linear(modulate(self.norm_final(x), shift, scale))


class SimpleMLPAdaLN(nn.Module):
    """The denoiser: noisy latents x_t (n, e), timesteps (n,) and conditions z (n, d) -> (n, e).

    Args:
        latent_dim: e, the width of one token's latent (input and output).
        width: w (Orthus: 1536).
        condition_dim: d, the width of the conditioning vector (the trunk's hidden size).
        num_blocks: residual blocks (Orthus: 3).
    """

    def __init__(self, latent_dim: int, width: int, condition_dim: int, num_blocks: int) -> None:
        super().__init__()
        self.time_embed = TimestepEmbedder(width)
        self.cond_embed = Linear(condition_dim, width)
        self.input_proj = Linear(latent_dim, width)
        self.res_blocks = nn.ModuleList(ResBlock(width) for _ in range(num_blocks))
        self.final_layer = FinalLayer(width, latent_dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm) and module.elementwise_affine:
                module.reset_parameters()
        for layer in (self.time_embed.mlp[0], self.time_embed.mlp[2]):
            nn.init.normal_(layer.weight, std=0.02)
        for modulation in [block.adaLN_modulation[-1] for block in self.res_blocks] \
                + [self.final_layer.adaLN_modulation[-1], self.final_layer.linear]:
            nn.init.zeros_(modulation.weight)
            nn.init.zeros_(modulation.bias)

    def forward(self, x: Tensor, timesteps: Tensor, condition: Tensor) -> Tensor:
        y = self.time_embed(timesteps) + self.cond_embed(condition)
        x = self.input_proj(x)
        for block in self.res_blocks:
            x = block(x, y)
        return self.final_layer(x, y)
