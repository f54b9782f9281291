"""CNN encoder and decoder of VQGAN (Esser et al., 2021, taming-transformers) in LlamaGen's layout.

Shapes: b batch, c image channels, z latent channels, h w image size, f = 2 ** (len(ch_mult) - 1)
the downsampling factor.

Submodule names follow LlamaGen's ``tokenizer_image/vq_model.py`` (``conv_in``,
``conv_blocks.{i}.res`` / ``.attn`` / ``.downsample`` or ``.upsample``, ``mid``,
``norm_out``, ``conv_out``) so that its checkpoints map onto these modules key for key.
Used by the VQ tokenizer and reusable by other CNN tokenizers (VAR).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from arvis.nn.conv import AttnBlock, Downsample, ResnetBlock, Upsample, group_norm


def _check_architecture(ch: int, ch_mult: tuple[int, ...], num_res_blocks: int) -> None:
    if ch < 1:
        raise ValueError(f"ch must be a positive channel count, got {ch}")
    if not ch_mult or any(m < 1 for m in ch_mult):
        raise ValueError(f"ch_mult must be a non-empty tuple of positive multipliers, got {ch_mult}")
    if num_res_blocks < 1:
        raise ValueError(f"num_res_blocks must be at least 1, got {num_res_blocks}")


class ResolutionLevel(nn.Module):
    """One resolution level: res blocks, each followed by attention if ``attention``, then optional resampling.

    ``resample`` is ``"down"`` (a ``downsample`` submodule), ``"up"`` (an ``upsample`` submodule)
    or ``None`` (the last level).
    """

    def __init__(self, in_channels: int, out_channels: int, num_res_blocks: int, *, attention: bool,
                 resample: str | None, dropout: float, num_groups: int) -> None:
        super().__init__()
        widths = [in_channels] + [out_channels] * num_res_blocks
        self.res = nn.ModuleList(
            ResnetBlock(widths[i], widths[i + 1], dropout=dropout, num_groups=num_groups)
            for i in range(num_res_blocks)
        )
        self.attn = nn.ModuleList(
            AttnBlock(out_channels, num_groups=num_groups) for _ in range(num_res_blocks if attention else 0)
        )
        if resample == "down":
            self.downsample = Downsample(out_channels)
        elif resample == "up":
            self.upsample = Upsample(out_channels)
        elif resample is not None:
            raise ValueError(f"resample must be 'down', 'up' or None, got {resample!r}")
        self.resample = resample

    def forward(self, x: Tensor) -> Tensor:
        """x (b, c_in, h, w) -> (b, c_out, h', w') with h' = h/2, 2h or h for down, up, None."""
        for index, block in enumerate(self.res):
            x = block(x)
            if self.attn:
                x = self.attn[index](x)
        if self.resample == "down":
            return self.downsample(x)
        if self.resample == "up":
            return self.upsample(x)
        return x


def _middle(channels: int, dropout: float, num_groups: int) -> nn.ModuleList:
    """Res, attention, res at the lowest resolution (``mid.0``, ``mid.1``, ``mid.2``)."""
    return nn.ModuleList([
        ResnetBlock(channels, channels, dropout=dropout, num_groups=num_groups),
        AttnBlock(channels, num_groups=num_groups),
        ResnetBlock(channels, channels, dropout=dropout, num_groups=num_groups),
    ])


class CNNEncoder(nn.Module):
    """Pixels (b, c, h, w) -> latents (b, z, h/f, w/f).

    Level ``i`` maps ``ch * in_ch_mult[i]`` to ``ch * ch_mult[i]`` channels with
    ``num_res_blocks`` res blocks (``in_ch_mult = (1,) + ch_mult``); attention follows each
    res block only at the last (lowest-resolution) level; every level but the last halves
    the resolution. Then mid (res, attn, res) and GroupNorm, swish, 3x3 conv to ``z_channels``.
    """

    def __init__(self, *, in_channels: int = 3, ch: int = 128, ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4),
                 num_res_blocks: int = 2, z_channels: int = 256, dropout: float = 0.0, num_groups: int = 32) -> None:
        super().__init__()
        _check_architecture(ch, tuple(ch_mult), num_res_blocks)
        self.downsample_factor = 2 ** (len(ch_mult) - 1)
        in_ch_mult = (1,) + tuple(ch_mult)
        last = len(ch_mult) - 1
        self.conv_in = nn.Conv2d(in_channels, ch, 3, padding=1)
        self.conv_blocks = nn.ModuleList(
            ResolutionLevel(ch * in_ch_mult[i], ch * ch_mult[i], num_res_blocks, attention=i == last,
                            resample="down" if i != last else None, dropout=dropout, num_groups=num_groups)
            for i in range(len(ch_mult))
        )
        width = ch * ch_mult[-1]
        self.mid = _middle(width, dropout, num_groups)
        self.norm_out = group_norm(width, num_groups)
        self.conv_out = nn.Conv2d(width, z_channels, 3, padding=1)

    def forward(self, pixels: Tensor) -> Tensor:
        """pixels (b, c, h, w) -> latents (b, z, h/f, w/f)."""
        x = self.conv_in(pixels)
        for level in self.conv_blocks:
            x = level(x)
        for block in self.mid:
            x = block(x)
        return self.conv_out(F.silu(self.norm_out(x)))


class CNNDecoder(nn.Module):
    """Latents (b, z, h/f, w/f) -> pixels (b, c, h, w), mirroring :class:`CNNEncoder`.

    3x3 conv from ``z_channels`` to ``ch * ch_mult[-1]``, mid (res, attn, res), then the levels
    from the lowest resolution up, each with ``num_res_blocks + 1`` res blocks to
    ``ch * ch_mult[i]`` (``i`` counting down), attention only at the first (lowest-resolution)
    level and 2x upsampling after every level but the last; GroupNorm, swish, 3x3 conv out.
    """

    def __init__(self, *, out_channels: int = 3, ch: int = 128, ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4),
                 num_res_blocks: int = 2, z_channels: int = 256, dropout: float = 0.0, num_groups: int = 32) -> None:
        super().__init__()
        _check_architecture(ch, tuple(ch_mult), num_res_blocks)
        self.upsample_factor = 2 ** (len(ch_mult) - 1)
        widths = [ch * m for m in reversed(ch_mult)]
        self.conv_in = nn.Conv2d(z_channels, widths[0], 3, padding=1)
        self.mid = _middle(widths[0], dropout, num_groups)
        in_widths = [widths[0]] + widths[:-1]
        self.conv_blocks = nn.ModuleList(
            ResolutionLevel(in_widths[i], widths[i], num_res_blocks + 1, attention=i == 0,
                            resample="up" if i != len(widths) - 1 else None, dropout=dropout,
                            num_groups=num_groups)
            for i in range(len(widths))
        )
        self.norm_out = group_norm(widths[-1], num_groups)
        self.conv_out = nn.Conv2d(widths[-1], out_channels, 3, padding=1)

    @property
    def last_layer(self) -> nn.Parameter:
        """Weight of the final conv (what taming's adaptive GAN weight differentiates against)."""
        return self.conv_out.weight

    def forward(self, latents: Tensor) -> Tensor:
        """latents (b, z, h/f, w/f) -> pixels (b, c, h, w)."""
        x = self.conv_in(latents)
        for block in self.mid:
            x = block(x)
        for level in self.conv_blocks:
            x = level(x)
        return self.conv_out(F.silu(self.norm_out(x)))
