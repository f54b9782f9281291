"""Adversarial objectives of tokenizer training: the GAN losses and the LeCam regulariser.

GAN losses, by ``TokenizerLossConfig.disc_loss``:

- ``hinge`` (VQGAN, LlamaGen): D minimises ½[mean relu(1 - D(x)) + mean relu(1 + D(x̂))]; G minimises -mean D(x̂).
- ``non_saturating``: D minimises BCE(D(x), 1) + BCE(D(x̂), 0); G minimises -mean log σ(D(x̂)).
- ``non_saturating_smooth`` (LARP's ``ns_smooth``): the non-saturating loss with one-sided noisy labels for D,
  real targets 1 - |N(0, 0.15²)| clamped to >= 0.7 and fake targets |N(0, 0.15²)| clamped to <= 0.3, drawn
  from an explicit ``torch.Generator``; G's loss is the non-saturating one.

LeCam (Tseng et al., 2021): relu(mean D(x) - EMA_fake)² + relu(EMA_real - mean D(x̂))², the EMAs (decay
0.999, starting at 0) tracking the mean logits and updated after the penalty is taken, as in LARP.

Logits have any shape (patch grids (b, 1, p, q) or one per clip (b, 1)); every loss is a scalar mean.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

GAN_LOSSES = ("hinge", "non_saturating", "non_saturating_smooth")
SMOOTHING_STD = 0.15
SMOOTHING_LIMIT = 0.3


def hinge_discriminator_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """0.5 * (mean relu(1 - D(x)) + mean relu(1 + D(x_hat))), a scalar."""
    return 0.5 * (F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean())


def hinge_generator_loss(fake_logits: Tensor) -> Tensor:
    """-mean D(x_hat), a scalar."""
    return -fake_logits.mean()


def smoothed_targets(real_logits: Tensor, fake_logits: Tensor, generator: torch.Generator | None = None,
                     ) -> tuple[Tensor, Tensor]:
    """LARP's one-sided noisy labels: real 1 - |N(0, 0.15²)| >= 0.7, fake |N(0, 0.15²)| <= 0.3.

    The noise is drawn on the generator's device (the CPU for ``None``) and moved to the logits'.
    """
    device = generator.device if generator is not None else torch.device("cpu")
    real_noise = torch.randn(real_logits.shape, generator=generator, device=device).abs() * SMOOTHING_STD
    fake_noise = torch.randn(fake_logits.shape, generator=generator, device=device).abs() * SMOOTHING_STD
    real_target = (1.0 - real_noise).clamp(min=1.0 - SMOOTHING_LIMIT)
    fake_target = fake_noise.clamp(max=SMOOTHING_LIMIT)
    return (real_target.to(real_logits.device, real_logits.dtype),
            fake_target.to(fake_logits.device, fake_logits.dtype))


def discriminator_loss(kind: str, real_logits: Tensor, fake_logits: Tensor,
                       generator: torch.Generator | None = None) -> Tensor:
    """The discriminator's GAN loss of ``kind`` (see the module docstring), a scalar.

    Args:
        kind: one of ``GAN_LOSSES``.
        real_logits, fake_logits: D's logits on real and reconstructed pixels (any shape).
        generator: randomness of the ``non_saturating_smooth`` labels.
    """
    if kind == "hinge":
        return hinge_discriminator_loss(real_logits, fake_logits)
    if kind == "non_saturating":
        real_target, fake_target = torch.ones_like(real_logits), torch.zeros_like(fake_logits)
    elif kind == "non_saturating_smooth":
        real_target, fake_target = smoothed_targets(real_logits, fake_logits, generator)
    else:
        raise ValueError(f"unknown GAN loss {kind!r}; choose one of {GAN_LOSSES}")
    return (F.binary_cross_entropy_with_logits(real_logits, real_target)
            + F.binary_cross_entropy_with_logits(fake_logits, fake_target))


def generator_loss(kind: str, fake_logits: Tensor) -> Tensor:
    """The tokenizer's adversarial loss of ``kind``: -mean D(x̂) (hinge) or -mean log σ(D(x̂)), a scalar."""
    if kind == "hinge":
        return hinge_generator_loss(fake_logits)
    if kind in GAN_LOSSES:
        return -F.logsigmoid(fake_logits).mean()
    raise ValueError(f"unknown GAN loss {kind!r}; choose one of {GAN_LOSSES}")


class LeCamRegularizer(nn.Module):
    """The LeCam penalty with its two logit EMAs, kept as buffers so that checkpoints carry them.

    Args:
        decay: EMA decay of the mean real and fake logits (0.999 in LARP).
    """

    def __init__(self, decay: float = 0.999) -> None:
        super().__init__()
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"LeCam decay must lie in [0, 1), got {decay}")
        self.decay = float(decay)
        self.register_buffer("ema_real", torch.zeros(()))
        self.register_buffer("ema_fake", torch.zeros(()))

    def forward(self, real_logits: Tensor, fake_logits: Tensor) -> Tensor:
        """The penalty against the current EMAs (a scalar), then the EMAs step towards these logits' means."""
        real_mean, fake_mean = real_logits.float().mean(), fake_logits.float().mean()
        penalty = (F.relu(real_mean - self.ema_fake).square() + F.relu(self.ema_real - fake_mean).square())
        with torch.no_grad():
            self.ema_real.lerp_(real_mean.detach().to(self.ema_real), 1.0 - self.decay)
            self.ema_fake.lerp_(fake_mean.detach().to(self.ema_fake), 1.0 - self.decay)
        return penalty
