"""LPIPS perceptual distance (Zhang et al., 2018, arXiv:1801.03924), VGG16 variant v0.1, implemented natively.

Shapes: b batch, c channels, h w spatial size.

The VGG16 convolutions keep torchvision's ``features.{i}`` indexing so that its ImageNet
state dict (``vgg16-397923af.pth``) loads directly, and the five 1x1 heads are named
``lin{k}.model.1`` as in LPIPS v0.1's ``vgg.pth`` (the file LlamaGen and taming ship).
Nothing is downloaded: both files are read from local paths, and without them the
perceptual loss is off (:func:`resolve_lpips`).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from torch import Tensor, nn

from arvis.torch_files import load_state_dict_file

logger = logging.getLogger(__name__)

VGG_ENV = "ARVIS_LPIPS_VGG"
LIN_ENV = "ARVIS_LPIPS_LIN"

# torchvision's VGG16 ``features`` configuration; "M" is a 2x2 max-pool.
_VGG16_LAYOUT = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
# Indices in ``features`` of relu1_2, relu2_2, relu3_3, relu4_3, relu5_3.
_TAP_INDICES = (3, 8, 15, 22, 29)
_TAP_CHANNELS = (64, 128, 256, 512, 512)


def _vgg16_features() -> nn.Sequential:
    """torchvision's VGG16 ``features`` up to relu5_3 (indices 0..29, the last max-pool dropped)."""
    layers: list[nn.Module] = []
    channels = 3
    for entry in _VGG16_LAYOUT:
        if entry == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(channels, entry, 3, padding=1), nn.ReLU(inplace=False)]
            channels = entry
    return nn.Sequential(*layers)


class LinearHead(nn.Module):
    """1x1 conv without bias from c channels to 1, stored as ``model.1`` like LPIPS's ``NetLinLayer``; index 0 is
    LPIPS's dropout (0.5) when ``dropout`` is on, else nothing."""

    def __init__(self, channels: int, dropout: bool = False) -> None:
        super().__init__()
        self.model = nn.Sequential(nn.Dropout(0.5) if dropout else nn.Identity(), nn.Conv2d(channels, 1, 1, bias=False))

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)


class LPIPS(nn.Module):
    """Frozen LPIPS-VGG distance between images in [-1, 1]; random weights unless loaded with :meth:`from_files`.

    ``train_dropout`` reproduces LlamaGen's training loss: its LPIPS has dropout 0.5 before every lin head and
    is put in training mode with the loss module, so the perceptual gradient is noisier. Without it (default)
    LPIPS stays in eval mode whatever ``train()`` is told: a fixed metric.
    """

    def __init__(self, train_dropout: bool = False) -> None:
        super().__init__()
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1), persistent=False)
        self.features = _vgg16_features()
        for index, channels in enumerate(_TAP_CHANNELS):
            self.add_module(f"lin{index}", LinearHead(channels, dropout=train_dropout))
        self.train_dropout = train_dropout
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> LPIPS:
        """Follows ``mode`` only with ``train_dropout``; otherwise stays in eval mode."""
        return super().train(mode and self.train_dropout)

    def _taps(self, images: Tensor) -> list[Tensor]:
        """images (b, 3, h, w) -> VGG activations at the five tap layers."""
        x = (images - self.shift) / self.scale
        taps = []
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in _TAP_INDICES:
                taps.append(x)
        return taps

    def forward(self, images: Tensor, references: Tensor) -> Tensor:
        """images, references (b, 3, h, w) in [-1, 1] -> (b,) distances; gradients flow to both inputs."""
        if images.shape != references.shape or images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(
                f"LPIPS expects two (batch, 3, height, width) tensors of equal shape, "
                f"got {tuple(images.shape)} and {tuple(references.shape)}"
            )
        distance = images.new_zeros(images.shape[0])
        for index, tap in enumerate(self._taps(torch.cat([images, references]))):
            image_tap, reference_tap = tap.chunk(2)
            difference = (_unit_channels(image_tap) - _unit_channels(reference_tap)) ** 2
            distance = distance + getattr(self, f"lin{index}")(difference).mean(dim=(1, 2, 3))
        return distance

    @classmethod
    def from_files(cls, vgg_path: str | Path, lin_path: str | Path, *, train_dropout: bool = False) -> LPIPS:
        """Builds LPIPS from torchvision's VGG16 weights and LPIPS v0.1's lin weights.

        Args:
            vgg_path: ``vgg16-397923af.pth`` or a ``.safetensors`` with its ``features.*`` tensors
                (``classifier.*`` tensors are ignored).
            lin_path: LPIPS v0.1 ``vgg.pth`` or a ``.safetensors`` with ``lin{k}.model.1.weight``.
            train_dropout: see the class docstring.
        """
        model = cls(train_dropout=train_dropout)
        backbone = {k: v for k, v in load_state_dict_file(vgg_path).items() if k.startswith("features.")}
        heads = {k: v for k, v in load_state_dict_file(lin_path).items() if k.startswith("lin")}
        state = {**backbone, **heads}
        expected = model.state_dict()
        missing = sorted(set(expected) - set(state))
        unexpected = sorted(set(state) - set(expected))
        wrong_shape = sorted(k for k in set(state) & set(expected) if state[k].shape != expected[k].shape)
        if missing or unexpected or wrong_shape:
            raise ValueError(
                f"LPIPS weights from {vgg_path} and {lin_path} do not match: missing {missing}, "
                f"unexpected {unexpected}, wrong shapes {wrong_shape}; expected torchvision's "
                "vgg16-397923af.pth and LPIPS v0.1 vgg.pth"
            )
        model.load_state_dict(state)
        return model


def to_signed_range(pixels: Tensor, pixel_range: tuple[float, float]) -> Tensor:
    """Pixels in ``pixel_range`` -> the same mapped linearly to [-1, 1], unclamped: LPIPS's input range (the
    identity for [-1, 1] pixels)."""
    low, high = pixel_range
    if (low, high) == (-1.0, 1.0):
        return pixels
    return (pixels - low) * (2.0 / (high - low)) - 1.0


def _unit_channels(features: Tensor) -> Tensor:
    """(b, c, h, w) -> the same with each position's channel vector scaled to unit length."""
    norm = torch.sqrt(torch.sum(features**2, dim=1, keepdim=True))
    return features / (norm + 1e-10)


def resolve_lpips(vgg_path: str | Path | None, lin_path: str | Path | None, *,
                  train_dropout: bool = False) -> LPIPS | None:
    """Loads LPIPS from local files, or returns None (perceptual loss off) after logging why.

    A path left as None is taken from the environment variable ``ARVIS_LPIPS_VGG`` or
    ``ARVIS_LPIPS_LIN``. Files that exist but hold the wrong tensors raise ``ValueError``.
    """
    vgg_path = vgg_path if vgg_path is not None else os.environ.get(VGG_ENV)
    lin_path = lin_path if lin_path is not None else os.environ.get(LIN_ENV)
    status = {
        "VGG16 backbone (torchvision vgg16-397923af.pth)": vgg_path,
        "LPIPS v0.1 lin heads (vgg.pth)": lin_path,
    }
    if all(path is not None and Path(path).is_file() for path in status.values()):
        return LPIPS.from_files(vgg_path, lin_path, train_dropout=train_dropout)
    described = "; ".join(
        f"{what}: {'not set' if path is None else repr(str(path)) + (' found' if Path(path).is_file() else ' missing')}"
        for what, path in status.items()
    )
    logger.warning(
        "LPIPS weights unavailable, so the perceptual loss term is OFF. %s. Put both files on local disk "
        "(.pth or .safetensors) and point to them with the config keys lpips_vgg_path / lpips_lin_path "
        "or the environment variables %s / %s.",
        described, VGG_ENV, LIN_ENV,
    )
    return None
