"""Converts VAR's released checkpoints (FoundationVision/VAR at 78b9539) into an arvis pipeline folder.

Inputs are upstream's own files: the VQ-VAE (``vae_ch160v4096z32.pth``, ``VQVAE.state_dict()``) and
one transformer (``var_d16.pth`` ... ``var_d30.pth``, ``VAR.state_dict()``), as ``.pth`` (read with
``weights_only=True``) or ``.safetensors`` with upstream's keys.

Architecture inference (from tensor shapes; nothing is read from file names):

* VAE: ``ch`` = out channels of ``encoder.conv_in``, ``in_channels`` = its in channels; one
  ``ch_mult`` entry per ``encoder.down.{i}`` (out channels of its first res block / ch);
  ``num_res_blocks`` = res blocks of ``encoder.down.0``; ``z_channels`` = ``quant_conv`` out channels;
  ``codebook_size`` = rows of ``quantize.embedding``; ``share_quant_resi`` = number of phi convs
  (``qresi_ls.{k}``: k+1; a single ``qresi``: 1; ``quant_resi.{k}`` (non-shared): k+1, which selects
  the same convs since upstream's ticks are the same). Not stored in the weights, so fixed at
  upstream's released values: ``quant_resi`` 0.5, plain-L2 codes (``using_znorm=False``), GroupNorm
  with ``num_groups`` (32) groups. ``image_size`` = ``patch_nums[-1]`` x 2 ** (levels - 1).
* VAR: ``depth`` = number of ``blocks.{i}``; ``dim`` and ``code_dim`` from ``word_embed``; ``vocab_size``
  from ``head``; ``num_classes`` = rows of ``class_emb`` - 1; ``attn_l2_norm`` iff ``scale_mul_1H11``
  exists, and then ``num_heads`` = its size, else dim / 64 (``build_vae_var``'s head dim);
  ``mlp_ratio`` = ``fc1`` rows / dim; ``shared_adaln`` iff ``shared_ada_lin.1.weight`` exists.
* Scales (``patch_nums``), unless given: the 512 px schedule (1, 2, 3, 4, 6, 9, 13, 18, 24, 32) when
  the transformer uses shared AdaLN (VAR-d36-s, the only released 512 px model), else the 256 px
  schedule (1, 2, 3, 4, 5, 6, 8, 10, 13, 16) of the released d16..d30. The choice is checked against
  ``lvl_embed`` (number of scales), ``pos_1LC`` (sum of squares) and ``pos_start`` (first scale);
  other models must pass ``patch_nums``.

Key mapping (target arvis key <- upstream key):

* VAE ``encoder.down.{i}.block.{j}`` -> ``encoder.conv_blocks.{i}.res.{j}``; ``.attn.{j}`` ->
  ``.attn.{j}``; ``.downsample`` -> ``.downsample``. ``decoder.up.{i}`` -> ``decoder.conv_blocks.{n-1-i}``
  (upstream indexes decoder levels by resolution, arvis in execution order), ``block`` -> ``res``.
  ``mid.block_1 / attn_1 / block_2`` -> ``mid.0 / 1 / 2``. Each fused attention ``qkv`` 1x1 conv
  (3C, C) is split into arvis's ``q``, ``k``, ``v`` convs (rows [0, C), [C, 2C), [2C, 3C), as upstream's
  ``reshape(B, 3, C, H, W)``). ``quantize.embedding.weight`` -> ``quantizer.codebook.weight``;
  ``quantize.quant_resi.qresi_ls.{k}.*`` -> ``quantizer.phis.{k}.*``. Dropped:
  ``quantize.ema_vocab_hit_SV`` (a training statistic).
* VAR ``class_emb.weight`` -> ``class_emb.embedding.weight``; ``blocks.{i}`` -> ``trunk.blocks.{i}``;
  ``shared_ada_lin.1.*`` -> ``trunk.shared_ada_lin.linear.*``; everything else keeps its name. Dropped: ``lvl_1L``,
  ``attn_bias_for_masking`` (recomputed) and ``blocks.{i}.attn.zero_k_bias`` (checked to be zero).
  ``quantizer.*`` of the generator is the tokenizer's codebook and phi convs (``bind_tokenizer``).

The pipeline gets VAR's FID sampling settings: VAR's cfg 1.5 with its linear ramp (arvis
``cfg_scale=2.5, cfg_schedule="linear"``), top-k 900, top-p 0.96.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import Tensor

from arvis.convert.common import (
    Source,
    chunk,
    count_indices,
    load_checkpoint,
    map_state_dict,
    require,
)
from arvis.generators.var import PATCH_NUMS_512, VARConfig, VARGenerator
from arvis.modeling import load_state_strict
from arvis.pipeline import Pipeline
from arvis.samplers import NextScaleSettings
from arvis.tokenizers.var import VARTokenizer, VARTokenizerConfig

__all__ = [
    "PATCH_NUMS_256",
    "PATCH_NUMS_512",
    "VAR_FID_SAMPLING",
    "convert_var",
    "convert_var_generator",
    "convert_var_tokenizer",
]

PATCH_NUMS_256 = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)
VAR_FID_SAMPLING = NextScaleSettings(cfg_scale=2.5, cfg_schedule="linear", top_k=900, top_p=0.96)

VAE_IGNORED = (r"quantize\.ema_vocab_hit_SV",)
VAR_IGNORED = (r"lvl_1L", r"attn_bias_for_masking", r"blocks\.\d+\.attn\.zero_k_bias")


# ---- tokenizer --------------------------------------------------------------------------------------------

def _phi_layout(state: Mapping[str, Tensor]) -> tuple[str, int]:
    """(upstream prefix of phi conv k with ``{k}`` placeholder, number of convs); (..., 0) if phi is off."""
    shared = count_indices(state, "quantize.quant_resi.qresi_ls")
    if shared:
        return "quantize.quant_resi.qresi_ls.{k}", shared
    if "quantize.quant_resi.qresi.weight" in state:
        return "quantize.quant_resi.qresi", 1
    separate = count_indices(state, "quantize.quant_resi")
    return "quantize.quant_resi.{k}", separate


def infer_tokenizer_config(state: Mapping[str, Tensor], patch_nums: Sequence[int], *, num_groups: int = 32,
                           name: str = "VAE checkpoint") -> VARTokenizerConfig:
    """:class:`VARTokenizerConfig` of an upstream ``VQVAE.state_dict()`` (see the module docstring)."""
    conv_in = require(state, "encoder.conv_in.weight", name, "ch and in_channels")
    ch, in_channels = conv_in.shape[0], conv_in.shape[1]
    levels = count_indices(state, "encoder.down")
    if not levels:
        raise ValueError(f"{name} has no 'encoder.down.{{i}}' levels; is it a VAR VQVAE state dict?")
    ch_mult = []
    for level in range(levels):
        width = require(state, f"encoder.down.{level}.block.0.conv1.weight", name, f"ch_mult[{level}]").shape[0]
        if width % ch:
            raise ValueError(f"{name}: width {width} of encoder level {level} is not a multiple of ch {ch}")
        ch_mult.append(width // ch)
    num_res_blocks = count_indices(state, "encoder.down.0.block")
    z_channels = require(state, "quant_conv.weight", name, "z_channels").shape[0]
    codebook_size = require(state, "quantize.embedding.weight", name, "codebook_size").shape[0]
    _, num_phi = _phi_layout(state)
    patch_nums = tuple(int(p) for p in patch_nums)
    return VARTokenizerConfig(
        image_size=patch_nums[-1] * 2 ** (levels - 1), in_channels=in_channels, ch=ch, ch_mult=tuple(ch_mult),
        num_res_blocks=num_res_blocks, z_channels=z_channels, codebook_size=codebook_size, patch_nums=patch_nums,
        quant_resi=0.5 if num_phi else 0.0, share_quant_resi=num_phi or 4, num_groups=num_groups,
    )


def _vae_rule(num_levels: int, phi_prefix: str):
    def cnn(prefix: str, rest: str) -> Source:
        if prefix == "decoder":
            rest = re.sub(r"^conv_blocks\.(\d+)\.", lambda m: f"up.{num_levels - 1 - int(m.group(1))}.", rest)
        else:
            rest = re.sub(r"^conv_blocks\.(\d+)\.", r"down.\1.", rest)
        rest = re.sub(r"^(up|down)\.(\d+)\.res\.", r"\1.\2.block.", rest)
        rest = re.sub(r"^mid\.0\.", "mid.block_1.", rest)
        rest = re.sub(r"^mid\.1\.", "mid.attn_1.", rest)
        rest = re.sub(r"^mid\.2\.", "mid.block_2.", rest)
        fused = re.fullmatch(r"(.*)\.([qkv])\.(weight|bias)", rest)
        if fused:
            part = "qkv".index(fused.group(2))
            return Source(f"{prefix}.{fused.group(1)}.qkv.{fused.group(3)}", chunk(part, 3),
                          f"{fused.group(2)} third of the fused qkv conv")
        return Source(f"{prefix}.{rest}")

    def rule(key: str) -> Source:
        prefix, _, rest = key.partition(".")
        if prefix in ("encoder", "decoder"):
            return cnn(prefix, rest)
        if key == "quantizer.codebook.weight":
            return Source("quantize.embedding.weight")
        phi = re.fullmatch(r"quantizer\.phis\.(\d+)\.(weight|bias)", key)
        if phi:
            return Source(f"{phi_prefix.format(k=phi.group(1))}.{phi.group(2)}")
        return Source(key)  # quant_conv, post_quant_conv

    return rule


def convert_var_tokenizer(state: Mapping[str, Tensor], *, patch_nums: Sequence[int] = PATCH_NUMS_256,
                          num_groups: int = 32, name: str = "VAE checkpoint") -> VARTokenizer:
    """An upstream ``VQVAE.state_dict()`` -> :class:`VARTokenizer` with the same weights (eval mode)."""
    config = infer_tokenizer_config(state, patch_nums, num_groups=num_groups, name=name)
    tokenizer = VARTokenizer(config)
    phi_prefix, _ = _phi_layout(state)
    expected = {key: value.shape for key, value in tokenizer.state_dict().items()}
    mapped = map_state_dict(state, expected, _vae_rule(len(config.ch_mult), phi_prefix), ignore=VAE_IGNORED,
                            name=name)
    load_state_strict(tokenizer, mapped, name)
    return tokenizer.eval()


# ---- generator --------------------------------------------------------------------------------------------

def infer_generator_config(state: Mapping[str, Tensor], tokenizer: VARTokenizer, *,
                           patch_nums: Sequence[int] | None = None, depth: int | None = None,
                           name: str = "VAR checkpoint") -> VARConfig:
    """:class:`VARConfig` of an upstream ``VAR.state_dict()`` for ``tokenizer`` (see the module docstring)."""
    inferred_depth = count_indices(state, "blocks")
    if not inferred_depth:
        raise ValueError(f"{name} has no 'blocks.{{i}}' transformer blocks; is it a VAR state dict?")
    if depth is not None and depth != inferred_depth:
        raise ValueError(f"{name} has {inferred_depth} blocks, but depth={depth} was requested")
    dim, code_dim = require(state, "word_embed.weight", name, "the width").shape
    vocab_size = require(state, "head.weight", name, "the vocabulary").shape[0]
    num_classes = require(state, "class_emb.weight", name, "the number of classes").shape[0] - 1
    scale_mul = state.get("blocks.0.attn.scale_mul_1H11")
    num_heads = scale_mul.shape[1] if scale_mul is not None else max(1, dim // 64)
    mlp_ratio = require(state, "blocks.0.ffn.fc1.weight", name, "mlp_ratio").shape[0] / dim
    shared_adaln = "shared_ada_lin.1.weight" in state
    if patch_nums is None:
        patch_nums = tokenizer.patch_nums
    patch_nums = tuple(int(p) for p in patch_nums)
    if code_dim != tokenizer.config.z_channels or vocab_size != tokenizer.vocab_size:
        raise ValueError(
            f"{name} expects codes of dimension {code_dim} and {vocab_size} tokens, but the VAE has "
            f"{tokenizer.config.z_channels} and {tokenizer.vocab_size}; the two files do not belong together"
        )
    config = VARConfig(
        depth=inferred_depth, dim=dim, num_heads=num_heads, mlp_ratio=mlp_ratio, shared_adaln=shared_adaln,
        attn_l2_norm=scale_mul is not None, drop_path_rate=0.1 * inferred_depth / 24,
    )
    return VARGenerator.fit_config(config, tokenizer=tokenizer, num_classes=num_classes)


def check_patch_nums(state: Mapping[str, Tensor], patch_nums: Sequence[int], name: str) -> None:
    """Raises ``ValueError`` unless ``patch_nums`` fits ``lvl_embed``, ``pos_1LC`` and ``pos_start``."""
    num_scales = require(state, "lvl_embed.weight", name, "the number of scales").shape[0]
    length = require(state, "pos_1LC", name, "the token count").shape[1]
    first = require(state, "pos_start", name, "the first scale").shape[1]
    if (len(patch_nums), sum(p * p for p in patch_nums), patch_nums[0] ** 2) != (num_scales, length, first):
        raise ValueError(
            f"{name} has {num_scales} scales, {length} tokens and {first} start tokens, which the scales "
            f"{tuple(patch_nums)} ({len(patch_nums)} scales, {sum(p * p for p in patch_nums)} tokens) do not fit; "
            "pass patch_nums= explicitly"
        )


def convert_var_generator(state: Mapping[str, Tensor], tokenizer: VARTokenizer, *, depth: int | None = None,
                          name: str = "VAR checkpoint") -> VARGenerator:
    """An upstream ``VAR.state_dict()`` -> :class:`VARGenerator` bound to ``tokenizer`` (eval mode)."""
    check_patch_nums(state, tokenizer.patch_nums, name)
    config = infer_generator_config(state, tokenizer, depth=depth, name=name)
    nonzero = [key for key, value in state.items() if key.endswith("attn.zero_k_bias") and value.any()]
    if nonzero:
        raise ValueError(f"{name}: {nonzero} are non-zero; arvis's attention has no k bias")
    with torch.device("meta"):
        generator = VARGenerator(config)
    expected = {key: value.shape for key, value in generator.state_dict().items() if not key.startswith("quantizer.")}

    def rule(key: str) -> Source:
        if key == "class_emb.embedding.weight":
            return Source("class_emb.weight")
        key = key.removeprefix("trunk.")  # arvis's blocks and shared AdaLN live in the trunk
        if key.startswith("shared_ada_lin.linear."):
            return Source("shared_ada_lin.1." + key.removeprefix("shared_ada_lin.linear."))
        return Source(key)

    mapped = map_state_dict(state, expected, rule, ignore=VAR_IGNORED, name=name)
    mapped.update({f"quantizer.{key}": value for key, value in tokenizer.quantizer.state_dict().items()})
    generator = generator.to_empty(device="cpu")
    load_state_strict(generator, {key: value.float() for key, value in mapped.items()}, name)
    generator.bind_tokenizer(tokenizer)
    return generator.eval()


# ---- both -------------------------------------------------------------------------------------------------

def default_patch_nums(var_state: Mapping[str, Tensor]) -> tuple[int, ...]:
    """The released schedule a VAR state dict implies: 512 px with shared AdaLN (d36-s), else 256 px."""
    return PATCH_NUMS_512 if "shared_ada_lin.1.weight" in var_state else PATCH_NUMS_256


def convert_var(vae_path: str | Path, var_path: str | Path, out_dir: str | Path, *, depth: int | None = None,
                patch_nums: Sequence[int] | None = None, num_groups: int = 32) -> Path:
    """Converts upstream VAR's VAE + transformer files into an arvis pipeline folder at ``out_dir``.

    Args:
        vae_path: ``vae_ch160v4096z32.pth`` (or a ``.safetensors`` with upstream's keys).
        var_path: ``var_d{16,20,24,30}.pth`` (or ``.safetensors``).
        out_dir: the pipeline folder to write (replaced if it holds a pipeline).
        depth: expected number of blocks; a mismatch raises (None: whatever the file has).
        patch_nums: token-grid sides per scale; None picks the released schedule (see the module docstring),
            which must fit the checkpoint.
        num_groups: the VAE's GroupNorm groups (32 in every released VAE; not recoverable from the weights).

    Returns:
        ``out_dir`` as a Path; load it with ``Pipeline.from_pretrained``.
    """
    vae_path, var_path = Path(vae_path), Path(var_path)
    vae_state = load_checkpoint(vae_path)
    var_state = load_checkpoint(var_path)
    patch_nums = tuple(patch_nums) if patch_nums is not None else default_patch_nums(var_state)
    check_patch_nums(var_state, patch_nums, str(var_path))
    tokenizer = convert_var_tokenizer(vae_state, patch_nums=patch_nums, num_groups=num_groups, name=str(vae_path))
    generator = convert_var_generator(var_state, tokenizer, depth=depth, name=str(var_path))
    return Pipeline(tokenizer, generator, VAR_FID_SAMPLING).save_pretrained(out_dir)
