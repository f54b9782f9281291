"""VQGAN training objective (Esser et al., 2021) with LlamaGen's defaults (``tokenizer/tokenizer_image/vq_loss.py``).

Shapes: b batch, c channels, h w image size. Images are in the tokenizer's [-1, 1] range.

Generator step:     l2 * MSE + l1 * L1 + perceptual * LPIPS
                    + disc_weight * (-mean D(x_hat))        from step ``disc_start`` on
                    + the tokenizer's own losses (codebook, commitment, entropy).
Discriminator step: disc_weight * hinge(D(x), D(sg(x_hat))), only from step ``disc_start`` on.

The adversarial weight is fixed (LlamaGen's default; taming's adaptive weight is not used).
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import torch.nn.functional as F
from torch import Tensor, nn

from arvis.config import Config
from arvis.tokenizers.discriminators import PatchDiscriminator, hinge_discriminator_loss, hinge_generator_loss
from arvis.tokenizers.lpips import LPIPS, resolve_lpips


@dataclasses.dataclass(frozen=True, kw_only=True)
class TokenizerLossConfig(Config):
    """Weights and discriminator of the VQGAN objective; defaults follow LlamaGen's VQ training.

    Attributes:
        l2_weight: weight of the pixel MSE.
        l1_weight: weight of the pixel L1 (0 skips it).
        perceptual_weight: weight of LPIPS (0 skips it; it is also off when the weights are missing).
        lpips_vgg_path: torchvision ``vgg16-397923af.pth`` (or ``.safetensors``); None reads ``ARVIS_LPIPS_VGG``.
        lpips_lin_path: LPIPS v0.1 ``vgg.pth`` (or ``.safetensors``); None reads ``ARVIS_LPIPS_LIN``.
        disc_weight: weight of both adversarial losses.
        disc_start: first training step with adversarial losses; the discriminator is idle before it.
        disc_ndf: discriminator base width.
        disc_layers: discriminator stride-2 layers (3 needs images of at least 32 px).
    """

    l2_weight: float = 1.0
    l1_weight: float = 0.0
    perceptual_weight: float = 1.0
    lpips_vgg_path: str | None = None
    lpips_lin_path: str | None = None
    disc_weight: float = 0.5
    disc_start: int = 20000
    disc_ndf: int = 64
    disc_layers: int = 3

    def __post_init__(self) -> None:
        for name in ("l2_weight", "l1_weight", "perceptual_weight", "disc_weight", "disc_start"):
            if getattr(self, name) < 0:
                raise ValueError(f"TokenizerLossConfig.{name} must be non-negative, got {getattr(self, name)}")
        for name in ("disc_ndf", "disc_layers"):
            if getattr(self, name) < 1:
                raise ValueError(f"TokenizerLossConfig.{name} must be a positive integer, got {getattr(self, name)}")


class VQGANLoss(nn.Module):
    """Owns the PatchGAN discriminator and the (optional, frozen) LPIPS network.

    Two optimisers: the generator one over ``tokenizer.parameters()`` plus
    :meth:`generator_parameters` (currently none: LPIPS is frozen), the discriminator one over
    :meth:`discriminator_parameters`. Each iteration: ``generator_loss`` then, only while
    :meth:`discriminator_active`, ``discriminator_loss``. The generator backward also leaves
    gradients on the discriminator, so zero them before the discriminator backward.

    Args:
        config: loss weights and discriminator size.
        in_channels: image channels seen by the discriminator.
        lpips: a ready LPIPS network (e.g. random weights in tests); by default it is loaded
            with :func:`resolve_lpips` from the config paths when ``perceptual_weight > 0``.
        pixel_range: the tokenizer's pixel range (its ``pixel_range``); LPIPS is fed the images
            mapped to the [-1, 1] it was trained on (ResTok and LARP work in [0, 1]).
    """

    def __init__(self, config: TokenizerLossConfig, *, in_channels: int = 3, lpips: LPIPS | None = None,
                 pixel_range: tuple[float, float] = (-1.0, 1.0)) -> None:
        super().__init__()
        low, high = pixel_range
        if not high > low:
            raise ValueError(f"pixel_range must be (low, high) with high > low, got {pixel_range}")
        self.pixel_range = (float(low), float(high))
        self.config = config
        self.discriminator = PatchDiscriminator(in_channels, ndf=config.disc_ndf, num_layers=config.disc_layers)
        if lpips is None and config.perceptual_weight > 0:
            lpips = resolve_lpips(config.lpips_vgg_path, config.lpips_lin_path)
        self.lpips = lpips if config.perceptual_weight > 0 else None

    def discriminator_active(self, step: int) -> bool:
        """Whether adversarial losses are on at ``step`` (``step >= disc_start``)."""
        return step >= self.config.disc_start

    def generator_parameters(self) -> list[nn.Parameter]:
        """Trainable loss parameters to add to the tokenizer's in the generator optimiser."""
        discriminator = {id(p) for p in self.discriminator.parameters()}
        return [p for p in self.parameters() if p.requires_grad and id(p) not in discriminator]

    def discriminator_parameters(self) -> list[nn.Parameter]:
        """Parameters of the discriminator optimiser."""
        return list(self.discriminator.parameters())

    def generator_loss(self, inputs: Tensor, reconstruction: Tensor, tokenizer_losses: dict[str, Tensor],
                       step: int) -> tuple[Tensor, dict[str, Tensor]]:
        """Loss of the tokenizer's update.

        Args:
            inputs: (b, c, h, w) original images.
            reconstruction: (b, c, h, w) tokenizer output, with gradients.
            tokenizer_losses: the tokenizer's own scalar losses (``TokenizerOutput.losses``), added as is.
            step: global training step (decides the adversarial term).

        Returns:
            The scalar loss and detached scalar logs named after each term plus ``"total"``.
        """
        _check_pair(inputs, reconstruction)
        config = self.config
        terms = {"l2": F.mse_loss(reconstruction, inputs)}
        weights = {"l2": config.l2_weight}
        if config.l1_weight > 0:
            terms["l1"] = F.l1_loss(reconstruction, inputs)
            weights["l1"] = config.l1_weight
        if self.lpips is not None:
            terms["perceptual"] = self.lpips(self._lpips_range(reconstruction), self._lpips_range(inputs)).mean()
            weights["perceptual"] = config.perceptual_weight
        if self.discriminator_active(step):
            terms["adversarial"] = hinge_generator_loss(self.discriminator(reconstruction))
            weights["adversarial"] = config.disc_weight
        total = sum(weights[name] * value for name, value in terms.items()) + sum(tokenizer_losses.values())
        logs = {name: value.detach() for name, value in {**terms, **tokenizer_losses}.items()}
        logs["total"] = total.detach()
        return total, logs

    def _lpips_range(self, pixels: Tensor) -> Tensor:
        """Pixels in ``pixel_range`` -> [-1, 1] (the identity for [-1, 1] tokenizers)."""
        low, high = self.pixel_range
        if (low, high) == (-1.0, 1.0):
            return pixels
        return (pixels - low) * (2.0 / (high - low)) - 1.0

    def discriminator_loss(self, inputs: Tensor, reconstruction: Tensor, step: int, *,
                           discriminator: Callable[[Tensor], Tensor] | None = None,
                           ) -> tuple[Tensor | None, dict[str, Tensor]]:
        """Loss of the discriminator's update; ``(None, {})`` before ``disc_start`` (skip the step).

        Args:
            inputs: (b, c, h, w) real images.
            reconstruction: (b, c, h, w) tokenizer output; detached here, so no gradient reaches the tokenizer.
            step: global training step.
            discriminator: what to call instead of ``self.discriminator`` (the same module wrapped
                for data parallelism, so that its gradients are all-reduced).

        Returns:
            ``disc_weight`` times the hinge loss, and detached logs ``"discriminator"``,
            ``"logits_real"`` and ``"logits_fake"`` (mean logits).
        """
        _check_pair(inputs, reconstruction)
        if not self.discriminator_active(step):
            return None, {}
        discriminator = self.discriminator if discriminator is None else discriminator
        real_logits = discriminator(inputs.detach())
        fake_logits = discriminator(reconstruction.detach())
        loss = self.config.disc_weight * hinge_discriminator_loss(real_logits, fake_logits)
        logs = {"discriminator": loss.detach(), "logits_real": real_logits.detach().mean(),
                "logits_fake": fake_logits.detach().mean()}
        return loss, logs


def _check_pair(inputs: Tensor, reconstruction: Tensor) -> None:
    if inputs.shape != reconstruction.shape:
        raise ValueError(
            f"inputs {tuple(inputs.shape)} and reconstruction {tuple(reconstruction.shape)} must have the same shape"
        )
