"""LARP's AR prior (``gptc.py`` upstream): a small continuous-input GPT trained with the tokenizer and then
discarded. Its loss tells the encoder which token order to make predictable (query index 0..n-1).

Shapes: b batch, n tokens, e code dimension, k codebook size, d prior width.

Round 1 feeds the straight-through code vectors (unit length, so gradients reach the encoder) and
predicts codes 1..n-1; its logits are ``cos(prediction, code) / temperature`` against the detached
codebook, and its targets the indices the stochastic quantizer drew. Round 2 (scheduled sampling)
replaces a fraction of the inputs 1..n-1 by codes drawn from round 1's logits; the fraction ramps
linearly from 0 to ``max_ratio`` at ``peak`` of training. The loss is the mean cross-entropy over the
rounds, every round with gradients (upstream ``avg_loss_over_rounds=True``, no detached rounds).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from arvis.nn.attention import causal_mask
from arvis.nn.linear import Linear
from arvis.nn.vit import ViTBlock


class ContinuousPrior(nn.Module):
    """Causal transformer from code vectors (b, m, e) to unit next-code predictions (b, m, e).

    Learned absolute positions; minGPT-style blocks (pre-norm, biases, GELU MLP x4) with dropout.
    """

    def __init__(self, code_dim: int, max_length: int, *, width: int, depth: int, num_heads: int,
                 dropout: float) -> None:
        super().__init__()
        self.input_proj = Linear(code_dim, width)
        self.positions = nn.Parameter(torch.randn(max_length, width) * 0.02)
        self.embed_dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            ViTBlock(width, num_heads, qk_norm=False, layer_scale_init=None, norm_eps=1e-5, dropout=dropout,
                     attn_dropout=dropout)
            for _ in range(depth))
        self.norm = nn.LayerNorm(width)
        self.head = Linear(width, code_dim)

    def forward(self, codes: Tensor) -> Tensor:
        length = codes.shape[1]
        if length > self.positions.shape[0]:
            raise ValueError(f"the prior holds {self.positions.shape[0]} positions, got {length} inputs")
        x = self.embed_dropout(self.input_proj(codes) + self.positions[:length])
        mask = causal_mask(length, device=codes.device)
        for block in self.blocks:
            x = block(x, mask=mask)
        return F.normalize(self.head(self.norm(x)), dim=-1)


def scheduled_sampling_ratio(progress: float, max_ratio: float, peak: float) -> float:
    """Fraction of round-2 inputs replaced by sampled codes at ``progress`` in [0, 1] of training."""
    if peak <= 0:
        return max_ratio
    return min(max_ratio, max_ratio * progress / peak)


def prior_loss(prior: ContinuousPrior, codes: Tensor, indices: Tensor, codebook: Tensor, *, rounds: int,
               replace_ratio: float, temperature: float = 1.0,
               generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """The prior's cross-entropy over ``rounds`` of scheduled sampling, and round 1's top-1 accuracy.

    Args:
        codes: (b, n, e) straight-through unit code vectors (gradients flow to the encoder).
        indices: (b, n) long, the codes the quantizer drew (the targets).
        codebook: (k, e) unit codebook; detached here.
        rounds: scheduled-sampling rounds (LARP: 2).
        replace_ratio: fraction of inputs 1..n-1 replaced by sampled codes in rounds after the first.
        temperature: logits are cosines divided by this (LARP: 1.0).
        generator: randomness of the replacement mask and of the sampled codes.
    """
    codebook = codebook.detach()
    batch, length, dim = codes.shape
    targets = indices[:, 1:]
    replace = torch.rand(batch, length - 1, 1, generator=generator, device=codes.device) < replace_ratio
    inputs, all_logits = codes, []
    for round_index in range(rounds):
        predictions = prior(inputs[:, :-1])  # (b, n-1, e): position i predicts code i + 1
        logits = predictions @ codebook.t() / temperature
        all_logits.append(logits)
        if round_index < rounds - 1:
            with torch.no_grad():
                probabilities = rearrange(logits.float().softmax(dim=-1), "b m k -> (b m) k")
                drawn = torch.multinomial(probabilities, 1, generator=generator).view(batch, length - 1)
            mixed = torch.where(replace, F.embedding(drawn, codebook).to(codes.dtype), codes[:, 1:])
            inputs = torch.cat([codes[:, :1], mixed], dim=1)
    stacked = torch.stack(all_logits)  # (rounds, b, n-1, k)
    loss = F.cross_entropy(rearrange(stacked, "r b m k -> (r b m) k").float(),
                           targets.expand(rounds, -1, -1).reshape(-1))
    accuracy = (all_logits[0].argmax(-1) == targets).float().mean()
    return loss, accuracy.detach()
