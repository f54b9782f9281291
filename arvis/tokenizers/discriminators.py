"""Discriminators of the tokenizer GAN objective.

- :class:`PatchDiscriminator`: PatchGAN (Isola et al., 2017) as taming-transformers' ``NLayerDiscriminator``,
  judging images or each frame of a clip (VQGAN, LlamaGen, VAR).
- :class:`VideoTransformerDiscriminator`: LARP's transformer over whole clips, one logit per clip.

The adversarial losses that use them are in :mod:`arvis.tokenizers.adversarial`.

Shapes: b batch, c channels, t frames, h w image size, p q the patch-logit grid, d width.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import torch
from einops import rearrange, repeat
from torch import Tensor, nn

from arvis.config import Config
from arvis.nn.sincos import sincos_3d
from arvis.nn.vit import ViTBlock, xavier_init_vit


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



@dataclasses.dataclass(frozen=True, kw_only=True)
class VideoDiscriminatorConfig(Config):
    """Size of a :class:`VideoTransformerDiscriminator`; the defaults are LARP-L's discriminator.

    Attributes:
        width, depth, num_heads: the ViT (timm blocks, MLP x4, no qkv bias).
        patch_size, temporal_patch_size: its 3D patch (pt, p, p).
        sincos_layout: its 3D sin-cos positions, ``"additive"`` (upstream) or ``"concat"`` (arvis 0.1).
    """

    width: int = 512
    depth: int = 12
    num_heads: int = 8
    patch_size: int = 8
    temporal_patch_size: int = 4
    sincos_layout: Literal["additive", "concat"] = "additive"

    def __post_init__(self) -> None:
        for name in ("width", "depth", "num_heads", "patch_size", "temporal_patch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"VideoDiscriminatorConfig.{name} must be a positive integer, got {getattr(self, name)}")
        position_multiple = 16 if self.sincos_layout == "concat" else 4
        if self.width % self.num_heads or self.width % position_multiple:
            raise ValueError(f"VideoDiscriminatorConfig.width {self.width} must be divisible by num_heads "
                             f"{self.num_heads} and by {position_multiple} ({self.sincos_layout} 3D sin-cos positions)")


class VideoTransformerDiscriminator(nn.Module):
    """Clips (b, c, t, h, w) -> one logit per clip (b, 1): LARP's ``TransformerDiscriminator``.

    Conv3d patches (kernel = stride = (pt, p, p)) plus fixed 3D sin-cos positions, a learned CLS token
    (no position) in front, pre-norm ViT blocks over the whole clip, LayerNorm of the CLS output and a
    linear logit. The clip size is fixed at construction (it sets the position table).

    Args:
        config: width, depth, heads and patch.
        clip_shape: (c, t, h, w) of the clips it judges; t, h, w divisible by the patch.
    """

    def __init__(self, config: VideoDiscriminatorConfig, clip_shape: tuple[int, int, int, int]) -> None:
        super().__init__()
        if len(clip_shape) != 4:
            raise ValueError(f"the video transformer discriminator judges clips (c, t, h, w), got a pixel shape "
                             f"{tuple(clip_shape)}; use discriminator='patch' for image tokenizers")
        channels, frames, height, width = clip_shape
        pt, p = config.temporal_patch_size, config.patch_size
        if frames % pt or height % p or width % p:
            raise ValueError(f"clips of {frames} frames at {height}x{width} are not divisible into "
                             f"({pt}, {p}, {p}) discriminator patches; change loss.video_disc.patch_size or "
                             "temporal_patch_size")
        self.config = config
        self.clip_shape = tuple(clip_shape)
        d = config.width
        self.patch_embed = nn.Conv3d(channels, d, kernel_size=(pt, p, p), stride=(pt, p, p))
        self.register_buffer("positions", sincos_3d(d, frames // pt, height // p, width // p, config.sincos_layout),
                             persistent=False)
        self.cls_token = nn.Parameter(torch.empty(d))
        self.blocks = nn.ModuleList(
            ViTBlock(d, config.num_heads, qk_norm=False, layer_scale_init=None, qkv_bias=False, norm_eps=1e-5)
            for _ in range(config.depth))
        self.norm = nn.LayerNorm(d, eps=1e-6)
        self.head = nn.Linear(d, 1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Upstream's: Xavier-uniform linears and patch embedding (as a linear), zero biases, Xavier CLS token."""
        xavier_init_vit(self, self.patch_embed)
        bound = (3.0 / self.config.width) ** 0.5  # Xavier-uniform of a (1, 1, d) tensor
        nn.init.uniform_(self.cls_token, -bound, bound)

    def forward(self, clips: Tensor) -> Tensor:
        """clips (b, c, t, h, w) -> logits (b, 1)."""
        if tuple(clips.shape[1:]) != self.clip_shape:
            raise ValueError(f"the video transformer discriminator judges clips (b, c, t, h, w) and was built for "
                             f"clips {self.clip_shape}, got {tuple(clips.shape)}; image tokenizers use "
                             "loss.discriminator=patch")
        patches = rearrange(self.patch_embed(clips), "b d t h w -> b (t h w) d") + self.positions
        x = torch.cat([repeat(self.cls_token, "d -> b 1 d", b=len(clips)), patches], dim=1)
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x[:, 0]))
