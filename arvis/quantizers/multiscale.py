"""Multi-scale residual vector quantizer of VAR (Tian et al., 2024, arXiv:2404.02905), ``VectorQuantizer2``.

Shapes: b batch, c code dimension (VAR's ``Cvae``), h w latent grid (square, h = w = ``patch_nums[-1]``),
p side of one scale's token grid, k number of scales, v codebook size, l = sum(p_k ** 2) tokens.

A latent f (b, c, h, w) is quantized coarse to fine. Starting from f_rest = sg(f) and f_hat = 0,
scale k area-downsamples f_rest to p_k x p_k (not at the last scale), picks the nearest code of
one codebook shared by all scales (plain L2 by default, cosine with ``l2_norm``), bicubically
upsamples the codes back to h x w (not at the last scale), refines them with a phi conv
``(1 - r) * x + r * conv3x3(x)`` and adds them to f_hat while subtracting them from f_rest.

The ``num_phi`` phi convs are shared over scales as in VAR's ``PhiPartiallyShared``: scale k sits at
position k / (K - 1) and uses the conv with the nearest tick (see :func:`phi_assignment`).

Unlike upstream, nothing here touches ``torch.distributed``: the usage metric is per batch.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from arvis.quantizers.vq import QuantizerOutput


def phi_assignment(num_scales: int, num_phi: int) -> tuple[int, ...]:
    """Index of the phi conv each scale uses, exactly as VAR's ``PhiPartiallyShared``.

    Scale k gets the position k / (num_scales - 1) (0 for a single scale) and the conv whose tick
    is nearest, ticks = linspace(1/3/n, 1 - 1/3/n, n) for n = 4 convs and
    linspace(1/2/n, 1 - 1/2/n, n) otherwise; ties go the way upstream's float64 numpy resolves them.
    For 10 scales and 4 convs this is (0, 0, 1, 1, 1, 2, 2, 3, 3, 3).
    """
    if num_scales < 1 or num_phi < 1:
        raise ValueError(f"num_scales and num_phi must be positive, got {num_scales} and {num_phi}")
    n = num_phi
    ticks = np.linspace(1 / 3 / n, 1 - 1 / 3 / n, n) if n == 4 else np.linspace(1 / 2 / n, 1 - 1 / 2 / n, n)
    positions = [k / (num_scales - 1) if num_scales > 1 else 0.0 for k in range(num_scales)]
    return tuple(int(np.argmin(np.abs(ticks - position))) for position in positions)


class Phi(nn.Conv2d):
    """VAR's residual refiner: x (b, c, h, w) -> (1 - ratio) * x + ratio * conv3x3(x)."""

    def __init__(self, dim: int, ratio: float) -> None:
        super().__init__(dim, dim, kernel_size=3, padding=1)
        self.ratio = ratio

    def forward(self, x: Tensor) -> Tensor:
        return x * (1.0 - self.ratio) + super().forward(x) * self.ratio


@dataclasses.dataclass
class MultiScaleQuantizerOutput(QuantizerOutput):
    """:class:`QuantizerOutput` of :class:`MultiScaleQuantizer`.

    ``quantized`` is the straight-through f_hat (b, c, h, w); ``indices`` the flat tokens (b, l),
    scales concatenated coarse to fine, each in raster order; ``losses`` is ``{"vq": ...}``;
    ``usage`` the mean of ``scale_usage``, the (k,) fraction of the codebook each scale hit in this batch.
    """

    scale_usage: Tensor


class MultiScaleQuantizer(nn.Module):
    """VAR's multi-scale residual quantizer with one shared codebook and partially shared phi convs.

    Args:
        codebook_size: number of codes v (shared by every scale).
        dim: code dimension c (the latent channels).
        patch_nums: token-grid side of each scale, coarse to fine; the last one is the latent side.
        commitment_beta: weight of the commitment term ||sg(f_hat) - f||^2.
        l2_norm: nearest code by cosine similarity (VAR's ``using_znorm``); the codes added to f_hat
            stay unnormalised, as upstream.
        quant_resi: phi blend ratio r; 0 makes phi the identity (no convs).
        share_quant_resi: number of phi convs; 0 means one per scale, 1 a single shared conv.
    """

    def __init__(self, codebook_size: int, dim: int, patch_nums: tuple[int, ...], *, commitment_beta: float = 0.25,
                 l2_norm: bool = False, quant_resi: float = 0.5, share_quant_resi: int = 4) -> None:
        super().__init__()
        patch_nums = tuple(int(p) for p in patch_nums)
        if codebook_size < 1 or dim < 1:
            raise ValueError(f"codebook_size and dim must be positive, got {codebook_size} and {dim}")
        if not patch_nums or any(p < 1 or p > patch_nums[-1] for p in patch_nums):
            raise ValueError(
                f"patch_nums must be positive sides no larger than the last (the latent side), got {patch_nums}"
            )
        if not 0.0 <= quant_resi <= 1.0:
            raise ValueError(f"quant_resi must be in [0, 1], got {quant_resi}")
        if share_quant_resi < 0:
            raise ValueError(f"share_quant_resi must be >= 0 (0 = one phi per scale), got {share_quant_resi}")
        self.codebook_size = codebook_size
        self.dim = dim
        self.patch_nums = patch_nums
        self.commitment_beta = commitment_beta
        self.l2_norm = l2_norm
        self.codebook = nn.Embedding(codebook_size, dim)
        with torch.no_grad():
            self.codebook.weight.uniform_(-1.0 / codebook_size, 1.0 / codebook_size)
        num_phi = share_quant_resi or len(patch_nums)
        self.phis = nn.ModuleList(
            Phi(dim, quant_resi) if abs(quant_resi) > 1e-6 else nn.Identity() for _ in range(num_phi)
        )
        self.phi_indices = phi_assignment(len(patch_nums), num_phi)

    @property
    def num_scales(self) -> int:
        return len(self.patch_nums)

    @property
    def latent_size(self) -> int:
        return self.patch_nums[-1]

    @property
    def token_count(self) -> int:
        return sum(p * p for p in self.patch_nums)

    # ---- small pieces -------------------------------------------------------------------------------------

    def phi(self, scale_index: int, codes: Tensor) -> Tensor:
        """Applies the phi conv assigned to ``scale_index`` to codes (b, c, h, w) -> float32 (b, c, h, w).

        The conv runs in its weights' dtype (float32, or lower when the model was cast with ``.to(dtype)``);
        the result is float32, in which f_hat accumulates over the scales."""
        conv = self.phis[self.phi_indices[scale_index]]
        weight = getattr(conv, "weight", None)  # None for a replaced refiner (nn.Identity in tests)
        return conv(codes if weight is None else codes.to(weight.dtype)).float()

    def lookup(self, indices: Tensor) -> Tensor:
        """indices (b, p, p) long -> raw codes (b, c, p, p)."""
        return rearrange(self.codebook(indices), "b h w c -> b c h w")

    def _to_latent_size(self, scale_index: int, codes: Tensor) -> Tensor:
        """Bicubic upsampling of (b, c, p, p) to (b, c, h, w); the last scale is already full size."""
        if scale_index == self.num_scales - 1:
            return codes
        return F.interpolate(codes, size=(self.latent_size, self.latent_size), mode="bicubic")

    def _downsample(self, scale_index: int, latents: Tensor) -> Tensor:
        """Area downsampling of (b, c, h, w) to scale ``scale_index``; the last scale is left as is."""
        if scale_index == self.num_scales - 1:
            return latents
        side = self.patch_nums[scale_index]
        return F.interpolate(latents, size=(side, side), mode="area")

    @torch.no_grad()
    def nearest_indices(self, latents: Tensor) -> Tensor:
        """latents (b, c, p, p) -> (b, p, p) long nearest codes (L2, or cosine with ``l2_norm``), in float32."""
        flat = rearrange(latents, "b c h w -> (b h w) c").float()
        codes = self.codebook.weight.float()
        with torch.autocast(device_type=flat.device.type, enabled=False):
            if self.l2_norm:
                indices = (F.normalize(flat, dim=-1) @ F.normalize(codes, dim=-1).t()).argmax(dim=1)
            else:
                distances = flat.pow(2).sum(1, keepdim=True) + codes.pow(2).sum(1)[None, :] - 2.0 * flat @ codes.t()
                indices = distances.argmin(dim=1)
        return rearrange(indices, "(b h w) -> b h w", b=latents.shape[0], h=latents.shape[2])

    def _check_latents(self, latents: Tensor) -> None:
        side = self.latent_size
        if not isinstance(latents, Tensor) or latents.ndim != 4 or tuple(latents.shape[1:]) != (self.dim, side, side):
            shape = tuple(getattr(latents, "shape", ()))
            raise ValueError(f"expected latents of shape (batch, {self.dim}, {side}, {side}), got {shape}")

    # ---- quantization --------------------------------------------------------------------------------------

    def _quantize(self, latents: Tensor, *, with_losses: bool
                  ) -> tuple[list[Tensor], Tensor, Tensor | None, list[Tensor]]:
        """latents (b, c, h, w) -> per-scale indices, f_hat (b, c, h, w) float32, the mean VQ loss, and the
        per-scale residuals (b, c, p_k, p_k) float32 whose nearest codes the indices are."""
        self._check_latents(latents)
        target = latents.float()
        target_detached = target.detach()
        rest = target_detached.clone()
        f_hat = torch.zeros_like(rest)
        indices_list: list[Tensor] = []
        residuals: list[Tensor] = []
        loss = target.new_zeros(()) if with_losses else None
        with torch.autocast(device_type=latents.device.type, enabled=False):
            for scale_index in range(self.num_scales):
                residual = self._downsample(scale_index, rest)
                residuals.append(residual)
                indices = self.nearest_indices(residual)
                indices_list.append(indices)
                codes = self.phi(scale_index, self._to_latent_size(scale_index, self.lookup(indices).float()))
                f_hat = f_hat + codes
                rest = rest - codes.detach()
                if loss is not None:
                    loss = loss + (F.mse_loss(f_hat.detach(), target) * self.commitment_beta
                                   + F.mse_loss(f_hat, target_detached))
        if loss is not None:
            loss = loss / self.num_scales
        return indices_list, f_hat, loss, residuals

    def forward(self, latents: Tensor) -> MultiScaleQuantizerOutput:
        """Quantizes latents (b, c, h, w); see :class:`MultiScaleQuantizerOutput`.

        The VQ loss is the mean over scales of beta * ||sg(f_hat_k) - f||^2 + ||f_hat_k - sg(f)||^2 with the
        accumulated f_hat_k; the codebook and phi learn only through the second term.
        """
        indices_list, f_hat, loss, _ = self._quantize(latents, with_losses=True)
        target = latents.float()
        quantized = (f_hat - target).detach() + target
        with torch.no_grad():
            scale_usage = torch.stack([
                torch.bincount(indices.flatten(), minlength=self.codebook_size).count_nonzero().float()
                / self.codebook_size
                for indices in indices_list
            ])
        return MultiScaleQuantizerOutput(
            quantized=quantized.to(latents.dtype), indices=self.scales_to_indices(indices_list),
            losses={"vq": loss}, usage=scale_usage.mean(), scale_usage=scale_usage,
        )

    @torch.no_grad()
    def latents_to_scales(self, latents: Tensor) -> list[Tensor]:
        """latents (b, c, h, w) -> list of k (b, p_k, p_k) long indices (VAR's ``f_to_idxBl_or_fhat``)."""
        return self._quantize(latents, with_losses=False)[0]

    @torch.no_grad()
    def latents_to_residuals(self, latents: Tensor) -> list[Tensor]:
        """latents (b, c, h, w) -> list of k (b, c, p_k, p_k) float32 residuals: at each scale the input of the
        nearest-code search (f_rest area-downsampled to p_k), so that their nearest codes are
        :meth:`latents_to_scales`'s indices."""
        return self._quantize(latents, with_losses=False)[3]

    # ---- token layouts and decoding ------------------------------------------------------------------------

    def check_scales(self, indices_list: list[Tensor] | tuple[Tensor, ...]) -> None:
        """Raises ``ValueError`` unless ``indices_list`` holds k (b, p_k, p_k) long tensors with ids in range."""
        if not isinstance(indices_list, (list, tuple)) or len(indices_list) != self.num_scales:
            raise ValueError(f"expected a list of {self.num_scales} per-scale index tensors for scales "
                             f"{self.patch_nums}, got {type(indices_list).__name__} of length "
                             f"{len(indices_list) if isinstance(indices_list, (list, tuple)) else '?'}")
        batch = indices_list[0].shape[0] if isinstance(indices_list[0], Tensor) else None
        for side, indices in zip(self.patch_nums, indices_list, strict=True):
            expected = (batch, side, side)
            if not isinstance(indices, Tensor) or indices.dtype != torch.long or tuple(indices.shape) != expected:
                raise ValueError(
                    f"expected (batch, {side}, {side}) long indices at scale {side}, got "
                    f"{getattr(indices, 'dtype', type(indices))} {tuple(getattr(indices, 'shape', ()))}"
                )
            if indices.numel() and (indices.min() < 0 or indices.max() >= self.codebook_size):
                raise ValueError(f"indices at scale {side} lie outside the codebook [0, {self.codebook_size})")

    def indices_to_scales(self, tokens: Tensor) -> list[Tensor]:
        """Flat tokens (b, l) -> list of k (b, p_k, p_k), splitting the concatenated scales."""
        if tokens.ndim != 2 or tokens.shape[1] != self.token_count:
            raise ValueError(f"expected tokens of shape (batch, {self.token_count}), got {tuple(tokens.shape)}")
        chunks = tokens.split([p * p for p in self.patch_nums], dim=1)
        return [rearrange(chunk, "b (h w) -> b h w", h=p) for chunk, p in zip(chunks, self.patch_nums, strict=True)]

    def scales_to_indices(self, indices_list: list[Tensor]) -> Tensor:
        """List of k (b, p_k, p_k) -> flat tokens (b, l), coarse to fine, each scale in raster order."""
        return torch.cat([rearrange(indices, "b h w -> b (h w)") for indices in indices_list], dim=1)

    def scales_to_fhat(self, indices_list: list[Tensor]) -> Tensor:
        """List of k (b, p_k, p_k) indices -> f_hat (b, c, h, w) float32: sum of phi(upsampled codes)."""
        self.check_scales(indices_list)
        return self.code_maps_to_fhat([self.lookup(indices) for indices in indices_list])

    def nearest_scales(self, code_maps: list[Tensor]) -> list[Tensor]:
        """List of k (b, c, p_k, p_k) vectors -> list of k (b, p_k, p_k) long nearest codes (the rule of
        :meth:`nearest_indices`, scale by scale)."""
        return [self.nearest_indices(codes) for codes in code_maps]

    def split_code_vectors(self, codes: Tensor) -> list[Tensor]:
        """(b, l, c) code vectors, scales concatenated -> list of k (b, c, p_k, p_k) code maps."""
        chunks = codes.split([p * p for p in self.patch_nums], dim=1)
        return [rearrange(chunk, "b (h w) c -> b c h w", h=p) for chunk, p in zip(chunks, self.patch_nums, strict=True)]

    def code_maps_to_fhat(self, code_maps: list[Tensor]) -> Tensor:
        """List of k (b, c, p_k, p_k) code maps (any values) -> f_hat (b, c, h, w) float32."""
        f_hat = None
        for scale_index, codes in enumerate(code_maps):
            refined = self.phi(scale_index, self._to_latent_size(scale_index, codes.float()))
            f_hat = refined if f_hat is None else f_hat + refined
        return f_hat

    # ---- next-scale autoregression -------------------------------------------------------------------------

    def teacher_forcing_inputs(self, indices_list: list[Tensor]) -> Tensor:
        """Ground-truth scales -> generator inputs (b, l - p_0 ** 2, c) (VAR's ``idxBl_to_var_input``).

        For every scale k < K - 1 the running f_hat (phi-refined, upsampled codes of scales <= k) is
        area-downsampled to p_{k+1} x p_{k+1} and flattened in raster order; the blocks are concatenated.
        """
        self.check_scales(indices_list)
        batch = indices_list[0].shape[0]
        f_hat = self.codebook.weight.new_zeros(batch, self.dim, self.latent_size, self.latent_size).float()
        inputs = []
        for scale_index in range(self.num_scales - 1):
            f_hat, next_input = self.next_scale_input(scale_index, f_hat, self.lookup(indices_list[scale_index]))
            inputs.append(next_input)
        if not inputs:
            return f_hat.new_zeros(batch, 0, self.dim)
        return torch.cat(inputs, dim=1)

    def next_scale_input(self, scale_index: int, f_hat: Tensor | None, codes: Tensor) -> tuple[Tensor, Tensor | None]:
        """One sampling step (VAR's ``get_next_autoregressive_input``), without mutating ``f_hat``.

        Args:
            scale_index: k, the scale whose codes were just sampled.
            f_hat: (b, c, h, w) running sum of the previous scales, or None (zeros) at k = 0.
            codes: (b, c, p_k, p_k) codebook entries of the sampled indices (see :meth:`lookup`).

        Returns:
            f_hat (b, c, h, w) including scale k, and the next scale's input (b, p_{k+1} ** 2, c),
            or None after the last scale (then f_hat is the latent to decode).
        """
        if not 0 <= scale_index < self.num_scales:
            raise ValueError(f"scale_index must be in [0, {self.num_scales}), got {scale_index}")
        side = self.patch_nums[scale_index]
        if codes.ndim != 4 or tuple(codes.shape[1:]) != (self.dim, side, side):
            raise ValueError(f"expected codes of shape (batch, {self.dim}, {side}, {side}) at scale {scale_index}, "
                             f"got {tuple(codes.shape)}")
        refined = self.phi(scale_index, self._to_latent_size(scale_index, codes.float()))
        f_hat = refined if f_hat is None else f_hat + refined
        if scale_index == self.num_scales - 1:
            return f_hat, None
        next_side = self.patch_nums[scale_index + 1]
        next_input = F.interpolate(f_hat, size=(next_side, next_side), mode="area")
        return f_hat, rearrange(next_input, "b c h w -> b (h w) c")
