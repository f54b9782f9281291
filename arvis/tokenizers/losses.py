"""Tokenizer training objective: VQGAN (Esser et al., 2021) with LlamaGen's defaults
(``tokenizer/tokenizer_image/vq_loss.py``), and LARP's video variant (``models/loss.py``).

Shapes: b batch, c channels, t frames, h w image size. Pixels are in the tokenizer's range; clips
(b, c, t, h, w) get their pixel and perceptual losses per frame (LARP).

Generator step:     l2 * MSE + l1 * L1 + perceptual * LPIPS
                    + disc_weight * G_adv(D(x_hat))          from step ``disc_start`` on
                    + the tokenizer's own losses (codebook, commitment, entropy, LARP's prior).
Discriminator step: disc_weight * (D_adv(D(x), D(sg(x_hat))) + lecam_weight * LeCam), from step ``disc_start``
                    on, every ``disc_every`` steps.

The adversarial weight is fixed (LlamaGen's and LARP's choice; taming's adaptive weight is not used).
The discriminator is a PatchGAN on images or on every frame (``discriminator="patch"``), or LARP's
transformer over whole clips (``"video_transformer"``). G_adv and D_adv are the hinge or non-saturating
losses of :mod:`arvis.tokenizers.adversarial`.

Deviations: LARP multiplies its LeCam term by ``lecam_weight`` twice (an effective 1e-6 for its 0.001), here
it is weighted once. LARP does not scale the discriminator's loss by the generator's adversarial weight and
LlamaGen does; arvis scales it (LlamaGen), which under Adam changes little, and keeps LeCam's weight relative
to the adversarial term as LARP intends.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from arvis.config import Config
from arvis.tokenizers import adversarial
from arvis.tokenizers.discriminators import PatchDiscriminator, VideoDiscriminatorConfig, VideoTransformerDiscriminator
from arvis.tokenizers.lpips import LPIPS, resolve_lpips, to_signed_range

DISCRIMINATORS = ("patch", "video_transformer")


@dataclasses.dataclass(frozen=True, kw_only=True)
class TokenizerLossConfig(Config):
    """Weights and discriminator of the VQGAN objective; defaults follow LlamaGen's VQ training.

    Attributes:
        l2_weight: weight of the pixel MSE.
        l1_weight: weight of the pixel L1 (0 skips it).
        perceptual_weight: weight of LPIPS (0 skips it; it is also off when the weights are missing).
        lpips_vgg_path: torchvision ``vgg16-397923af.pth`` (or ``.safetensors``); None reads ``ARVIS_LPIPS_VGG``.
        lpips_lin_path: LPIPS v0.1 ``vgg.pth`` (or ``.safetensors``); None reads ``ARVIS_LPIPS_LIN``.
        lpips_dropout: LlamaGen's perceptual loss, dropout 0.5 before LPIPS's lin heads, active while training
            (a noisier perceptual gradient); off (default) keeps LPIPS a fixed metric.
        disc_weight: weight of both adversarial losses.
        disc_start: first training step with adversarial losses; the discriminator is idle before it.
        discriminator: ``"patch"`` (PatchGAN on images or frames) or ``"video_transformer"`` (LARP, clips only).
        disc_loss: ``"hinge"``, ``"non_saturating"`` or ``"non_saturating_smooth"`` (LARP's label-smoothed one).
        disc_every: the discriminator is updated every ``disc_every`` steps from ``disc_start`` (LARP: 5).
        lecam_weight: weight of the LeCam regulariser in the discriminator's loss (0 turns it off; LARP 0.001).
        lecam_decay: EMA decay of LeCam's logit averages.
        disc_ndf: PatchGAN base width.
        disc_layers: PatchGAN stride-2 layers (3 needs images of at least 32 px).
        video_disc: size of the video transformer discriminator.
    """

    l2_weight: float = 1.0
    l1_weight: float = 0.0
    perceptual_weight: float = 1.0
    lpips_vgg_path: str | None = None
    lpips_lin_path: str | None = None
    lpips_dropout: bool = False
    disc_weight: float = 0.5
    disc_start: int = 20000
    discriminator: str = "patch"
    disc_loss: str = "hinge"
    disc_every: int = 1
    lecam_weight: float = 0.0
    lecam_decay: float = 0.999
    disc_ndf: int = 64
    disc_layers: int = 3
    video_disc: VideoDiscriminatorConfig = VideoDiscriminatorConfig()

    def __post_init__(self) -> None:
        for name in ("l2_weight", "l1_weight", "perceptual_weight", "disc_weight", "disc_start", "lecam_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"TokenizerLossConfig.{name} must be non-negative, got {getattr(self, name)}")
        for name in ("disc_ndf", "disc_layers", "disc_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"TokenizerLossConfig.{name} must be a positive integer, got {getattr(self, name)}")
        if self.discriminator not in DISCRIMINATORS:
            raise ValueError(f"TokenizerLossConfig.discriminator must be one of {DISCRIMINATORS}, "
                             f"got {self.discriminator!r}")
        if self.disc_loss not in adversarial.GAN_LOSSES:
            raise ValueError(f"TokenizerLossConfig.disc_loss must be one of {adversarial.GAN_LOSSES}, "
                             f"got {self.disc_loss!r}")
        if not 0.0 <= self.lecam_decay < 1.0:
            raise ValueError(f"TokenizerLossConfig.lecam_decay must lie in [0, 1), got {self.lecam_decay}")


class VQGANLoss(nn.Module):
    """Owns the discriminator, the LeCam state and the (optional, frozen) LPIPS network.

    Two optimisers: the generator one over ``tokenizer.parameters()`` plus
    :meth:`generator_parameters` (currently none: LPIPS is frozen), the discriminator one over
    :meth:`discriminator_parameters`. Each iteration: ``generator_loss`` then, only while
    :meth:`discriminator_update` says so, ``discriminator_loss``. The generator backward also leaves
    gradients on the discriminator, so zero them (or freeze it) before the discriminator backward.

    Args:
        config: loss weights and discriminator.
        in_channels: image channels seen by the discriminator.
        lpips: a ready LPIPS network (e.g. random weights in tests); by default it is loaded
            with :func:`resolve_lpips` from the config paths when ``perceptual_weight > 0``.
        pixel_range: the tokenizer's pixel range (its ``pixel_range``); LPIPS is fed the images
            mapped to the [-1, 1] it was trained on (ResTok and LARP work in [0, 1]).
        pixel_shape: the tokenizer's ``pixel_shape``, (c, t, h, w) for clips; needed by the video
            discriminator, whose position table depends on the clip size.
    """

    def __init__(self, config: TokenizerLossConfig, *, in_channels: int = 3, lpips: LPIPS | None = None,
                 pixel_range: tuple[float, float] = (-1.0, 1.0),
                 pixel_shape: tuple[int, ...] | None = None) -> None:
        super().__init__()
        low, high = pixel_range
        if not high > low:
            raise ValueError(f"pixel_range must be (low, high) with high > low, got {pixel_range}")
        self.pixel_range = (float(low), float(high))
        self.config = config
        if config.discriminator == "video_transformer":
            if pixel_shape is None:
                raise ValueError("the video transformer discriminator needs the tokenizer's pixel_shape (c, t, h, w)")
            self.discriminator = VideoTransformerDiscriminator(config.video_disc, tuple(pixel_shape))
        else:
            self.discriminator = PatchDiscriminator(in_channels, ndf=config.disc_ndf, num_layers=config.disc_layers)
        self.lecam = adversarial.LeCamRegularizer(config.lecam_decay) if config.lecam_weight > 0 else None
        if lpips is None and config.perceptual_weight > 0:
            lpips = resolve_lpips(config.lpips_vgg_path, config.lpips_lin_path, train_dropout=config.lpips_dropout)
        self.lpips = lpips if config.perceptual_weight > 0 else None

    def discriminator_active(self, step: int) -> bool:
        """Whether adversarial losses are on at ``step`` (``step >= disc_start``)."""
        return step >= self.config.disc_start

    def discriminator_update(self, step: int) -> bool:
        """Whether the discriminator is updated at ``step``: active, and every ``disc_every`` steps from the start."""
        return self.discriminator_active(step) and (step - self.config.disc_start) % self.config.disc_every == 0

    def num_discriminator_updates(self, max_steps: int) -> int:
        """How many discriminator updates a run of ``max_steps`` makes (its learning-rate schedule's length)."""
        return max(1, math.ceil(max(0, max_steps - self.config.disc_start) / self.config.disc_every))

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
            inputs: (b, c, h, w) original images or (b, c, t, h, w) clips.
            reconstruction: the tokenizer output of the same shape, with gradients.
            tokenizer_losses: the tokenizer's own scalar losses (``TokenizerOutput.losses``), added as is.
            step: global training step (decides the adversarial term).

        Returns:
            The scalar loss and detached scalar logs named after each term plus ``"total"``.
        """
        _check_pair(inputs, reconstruction)
        config = self.config
        real, fake = as_frames(inputs), as_frames(reconstruction)
        terms = {"l2": F.mse_loss(fake, real)}
        weights = {"l2": config.l2_weight}
        if config.l1_weight > 0:
            terms["l1"] = F.l1_loss(fake, real)
            weights["l1"] = config.l1_weight
        if self.lpips is not None:
            terms["perceptual"] = self.lpips(to_signed_range(fake, self.pixel_range),
                                             to_signed_range(real, self.pixel_range)).mean()
            weights["perceptual"] = config.perceptual_weight
        if self.discriminator_active(step):
            logits = self.discriminator(self._judged(reconstruction))
            terms["adversarial"] = adversarial.generator_loss(config.disc_loss, logits)
            weights["adversarial"] = config.disc_weight
        total = sum(weights[name] * value for name, value in terms.items()) + sum(tokenizer_losses.values())
        logs = {name: value.detach() for name, value in {**terms, **tokenizer_losses}.items()}
        logs["total"] = total.detach()
        return total, logs

    def _judged(self, pixels: Tensor) -> Tensor:
        """What the discriminator sees: whole clips (video transformer, which checks their shape) or images and
        frames (PatchGAN)."""
        return pixels if self.config.discriminator == "video_transformer" else as_frames(pixels)

    def discriminator_loss(self, inputs: Tensor, reconstruction: Tensor, step: int, *,
                           discriminator: Callable[[Tensor], Tensor] | None = None,
                           generator: torch.Generator | None = None,
                           ) -> tuple[Tensor | None, dict[str, Tensor]]:
        """Loss of the discriminator's update; ``(None, {})`` before ``disc_start`` (skip the step).

        Args:
            inputs: (b, c, h, w) real images or (b, c, t, h, w) clips.
            reconstruction: the tokenizer output; detached here, so no gradient reaches the tokenizer.
            step: global training step.
            discriminator: what to call instead of ``self.discriminator`` (the same module wrapped
                for data parallelism, so that its gradients are all-reduced).
            generator: randomness of the ``non_saturating_smooth`` labels.

        Returns:
            ``disc_weight`` times (the GAN loss + ``lecam_weight`` times LeCam), and detached logs
            ``"discriminator"``, ``"logits_real"``, ``"logits_fake"`` (mean logits) and ``"lecam"`` if on.
        """
        _check_pair(inputs, reconstruction)
        if not self.discriminator_active(step):
            return None, {}
        config = self.config
        discriminator = self.discriminator if discriminator is None else discriminator
        real_logits = discriminator(self._judged(inputs.detach()))
        fake_logits = discriminator(self._judged(reconstruction.detach()))
        loss = adversarial.discriminator_loss(config.disc_loss, real_logits, fake_logits, generator)
        logs = {"logits_real": real_logits.detach().mean(), "logits_fake": fake_logits.detach().mean()}
        if self.lecam is not None:
            lecam = self.lecam(real_logits, fake_logits)
            loss = loss + config.lecam_weight * lecam
            logs["lecam"] = lecam.detach()
        loss = config.disc_weight * loss
        logs["discriminator"] = loss.detach()
        return loss, logs


def as_frames(pixels: Tensor) -> Tensor:
    """Images (b, c, h, w) as they are; clips (b, c, t, h, w) as frames ((b t), c, h, w)."""
    return rearrange(pixels, "b c t h w -> (b t) c h w") if pixels.ndim == 5 else pixels


def _check_pair(inputs: Tensor, reconstruction: Tensor) -> None:
    if inputs.shape != reconstruction.shape:
        raise ValueError(
            f"inputs {tuple(inputs.shape)} and reconstruction {tuple(reconstruction.shape)} must have the same shape"
        )
