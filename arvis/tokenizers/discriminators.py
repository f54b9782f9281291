"""PatchGAN discriminator (Isola et al., 2017) as taming-transformers' ``NLayerDiscriminator``; hinge losses.

Shapes: b batch, c channels, h w image size, p q the patch-logit grid.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class PatchDiscriminator(nn.Module):
    """Images (b, c, h, w) -> patch logits (b, 1, p, q).

    ``num_layers`` stride-2 4x4 convs (the first without normalisation), one stride-1 4x4 conv,
    each with BatchNorm and LeakyReLU(0.2), then a stride-1 4x4 conv to one logit per patch.
    Widths are ``ndf * min(2 ** i, 8)``. Submodules live in ``main`` as in taming and LlamaGen.
    """

    def __init__(self, in_channels: int = 3, *, ndf: int = 64, num_layers: int = 3) -> None:
        super().__init__()
        if ndf < 1 or num_layers < 1:
            raise ValueError(f"ndf and num_layers must be positive, got ndf={ndf}, num_layers={num_layers}")
        widths = [ndf * min(2**i, 8) for i in range(num_layers + 1)]
        layers: list[nn.Module] = [nn.Conv2d(in_channels, ndf, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
        for index in range(1, num_layers + 1):
            stride = 2 if index < num_layers else 1
            layers += [
                nn.Conv2d(widths[index - 1], widths[index], 4, stride=stride, padding=1, bias=False),
                nn.BatchNorm2d(widths[index]),
                nn.LeakyReLU(0.2),
            ]
        layers.append(nn.Conv2d(widths[-1], 1, 4, stride=1, padding=1))
        self.main = nn.Sequential(*layers)
        self.num_layers = num_layers
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Conv weights N(0, 0.02); BatchNorm weights N(1, 0.02) and biases 0 (DCGAN initialisation)."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, 0.0, 0.02)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.normal_(module.weight, 1.0, 0.02)
                nn.init.zeros_(module.bias)

    def forward(self, images: Tensor) -> Tensor:
        """images (b, c, h, w) -> logits (b, 1, p, q)."""
        if min(self.logit_grid(images.shape[-2]), self.logit_grid(images.shape[-1])) < 1:
            raise ValueError(
                f"images of size {tuple(images.shape[-2:])} are too small for a {self.num_layers}-layer "
                f"PatchDiscriminator (it needs at least {3 * 2 ** self.num_layers} pixels per side); "
                "use fewer disc_layers or larger images"
            )
        return self.main(images)

    def logit_grid(self, size: int) -> int:
        """Side of the logit grid for an image side of ``size`` pixels."""
        for _ in range(self.num_layers):
            size //= 2  # 4x4 conv, stride 2, padding 1
        return size - 2  # two 4x4 convs, stride 1, padding 1


def hinge_discriminator_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """0.5 * (mean relu(1 - D(x)) + mean relu(1 + D(x_hat))), a scalar."""
    return 0.5 * (F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean())


def hinge_generator_loss(fake_logits: Tensor) -> Tensor:
    """-mean D(x_hat), a scalar."""
    return -fake_logits.mean()
