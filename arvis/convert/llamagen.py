"""Converts LlamaGen's released class-conditional checkpoints (Sun et al., 2024, arXiv:2406.06525) to an arvis pipeline.

Upstream: FoundationVision/LlamaGen (checked against commit ce98ec4). Inputs are the VQ tokenizer
(``vq_ds16_c2i.pt`` or ``vq_ds8_c2i.pt``, weights under ``"model"``) and a c2i GPT
(``c2i_{B,L}_{256,384}.pt``, ``c2i_XL_384.pt`` with weights under ``"model"``; the FSDP files
``c2i_XXL_384.pt``, ``c2i_3B_384.pt`` are bare state dicts). Like upstream's ``sample_c2i.py``,
a pickle's weights are taken from ``"model"``, else ``"module"``, else ``"state_dict"``, else the
file itself when it is a flat state dict; ``.safetensors`` files are read as flat state dicts.
Pickles are read with ``weights_only=True`` (``argparse.Namespace``, which upstream's training
checkpoints store under ``"args"``, is the one extra class allowed).

Key mapping (strict: every arvis tensor must be found with its shape, every upstream tensor must
be used or dropped on purpose, else a ``ValueError`` names them):

- VQ: keys are identical (arvis's CNN follows ``vq_model.py`` names) except the codebook,
  ``quantize.embedding.weight`` -> ``quantizer.codebook.weight``; the usage buffer
  ``quantize.codebook_used`` is dropped.
- GPT: keys are identical except the class table, ``cls_embedding.embedding_table.weight`` ->
  ``cls_embedding.embedding.weight``, and the blocks, ``layers.{i}`` -> ``trunk.layers.{i}``; ``freqs_cis``, ``causal_mask`` and KV-cache buffers
  (``layers.{i}.attention.kv_cache.{k,v}_cache``) are dropped (arvis derives RoPE from the config).

Configs are inferred from shapes: codebook size and dim, ``ch`` (``encoder.conv_in``), ``ch_mult``
per level, res blocks per level, ``z_channels``; GPT width, depth (``layers.{i}``), vocabulary,
classes (class-table rows - 1, the last row being the null class), SwiGLU width, KV heads. Head
counts are not in the shapes: they come from LlamaGen's table by width (B 768/12, L 1024/16,
XL 1280/20, XXL 1536/24, XXXL 2560/40, 3B 3200/32) or from ``gpt_preset`` / ``num_heads``.

Sampling defaults: ``NextTokenSettings(cfg_scale=2.0)`` with temperature 1, top-k 0 and top-p 1,
LlamaGen's FID settings (``sample_c2i_ddp.py``). Upstream's recommended CFG per model is 2.0 for
GPT-B and GPT-L, 1.75 for GPT-XL and GPT-XXL, 1.65 for GPT-3B; its demo script uses cfg 4.0 and
top-k 2000. Pass ``cfg_scale=...`` to :func:`arvis.generate` to change it per call.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor

from arvis.convert.common import Source, count_indices, load_checkpoint, load_weights_only, map_state_dict, require
from arvis.generators.base import GENERATORS
from arvis.generators.raster import RasterConfig, RasterGenerator
from arvis.nn.mlp import llama_hidden_dim
from arvis.pipeline import Pipeline
from arvis.samplers import NextTokenSettings
from arvis.tokenizers.vq import VQConfig, VQTokenizer

__all__ = ["convert_llamagen", "convert_llamagen_vq", "convert_llamagen_gpt", "LLAMAGEN_HEADS"]

# LlamaGen's GPT table (autoregressive/models/gpt.py): width -> (arvis preset or None, heads).
LLAMAGEN_HEADS: dict[int, tuple[str | None, int]] = {
    768: ("llamagen-b", 12),
    1024: ("llamagen-l", 16),
    1280: ("llamagen-xl", 20),
    1536: ("llamagen-xxl", 24),
    2560: (None, 40),  # GPT-XXXL (3.9B), no arvis preset
    3200: ("llamagen-3b", 32),
}
DEFAULT_IMAGE_SIZE = 256
DEFAULT_CFG_SCALE = 2.0

_VQ_DROPPED = (r"quantize\.codebook_used",)
_GPT_DROPPED = (r"freqs_cis", r"causal_mask", r"layers\.\d+\.attention\.kv_cache\.(k|v)_cache")
_WRAPPER_KEYS = ("model", "module", "state_dict")  # the order of upstream's sample_c2i.py


def load_llamagen_state(path: str | Path) -> dict[str, Tensor]:
    """A flat upstream state dict from a LlamaGen ``.pt`` (wrapped or bare) or ``.safetensors`` file."""
    path = Path(path)
    if path.suffix == ".safetensors":
        return load_checkpoint(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    state = load_weights_only(path, safe_globals=[argparse.Namespace])  # upstream stores its args with the weights
    if not isinstance(state, Mapping):
        raise ValueError(f"{path} holds a {type(state).__name__}, not a checkpoint dict")
    if not all(isinstance(value, Tensor) for value in state.values()):
        wrapper = next((key for key in _WRAPPER_KEYS if isinstance(state.get(key), Mapping)), None)
        if wrapper is None:
            raise ValueError(
                f"{path} is neither a flat state dict nor a checkpoint with weights under one of "
                f"{list(_WRAPPER_KEYS)}; its entries are {sorted(map(str, state))}"
            )
        state = state[wrapper]
    not_tensors = sorted(str(key) for key, value in state.items() if not isinstance(value, Tensor))
    if not_tensors:
        raise ValueError(f"{path}: entries {not_tensors} of the state dict are not tensors")
    return _strip_wrapper_prefixes(dict(state))


def _strip_wrapper_prefixes(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Removes a ``module.`` (DDP) or ``_orig_mod.`` (torch.compile) prefix shared by every key."""
    for prefix in ("module.", "_orig_mod."):
        if state and all(key.startswith(prefix) for key in state):
            state = {key[len(prefix):]: value for key, value in state.items()}
    return state


def infer_vq_config(state: Mapping[str, Tensor], *, image_size: int, num_groups: int = 32,
                    name: str = "VQ checkpoint") -> VQConfig:
    """A :class:`VQConfig` from the shapes of an upstream ``VQModel`` state dict."""
    codebook = require(state, "quantize.embedding.weight", name, "the codebook size and dimension")
    conv_in = require(state, "encoder.conv_in.weight", name, "the base width ch and input channels")
    conv_out = require(state, "encoder.conv_out.weight", name, "z_channels")
    ch, in_channels = conv_in.shape[0], conv_in.shape[1]
    levels = count_indices(state, "encoder.conv_blocks")
    decoder_levels = count_indices(state, "decoder.conv_blocks")
    if levels == 0 or decoder_levels != levels:
        raise ValueError(f"{name}: the encoder has {levels} resolution levels and the decoder {decoder_levels}; "
                         "expected the same non-zero count")

    def multipliers(prefix: str, order: range) -> tuple[int, ...]:
        found = []
        for level in order:
            width = require(state, f"{prefix}.conv_blocks.{level}.res.0.conv1.weight", name, "ch_mult").shape[0]
            if width % ch:
                raise ValueError(f"{name}: level {level} width {width} is not a multiple of ch {ch}")
            found.append(width // ch)
        return tuple(found)

    ch_mult = multipliers("encoder", range(levels))
    decoder_ch_mult = tuple(reversed(multipliers("decoder", range(levels))))
    num_res_blocks = count_indices(state, "encoder.conv_blocks.0.res")
    decoder_res_blocks = count_indices(state, "decoder.conv_blocks.0.res")
    if decoder_res_blocks != num_res_blocks + 1:
        raise ValueError(f"{name}: the decoder has {decoder_res_blocks} res blocks per level, the encoder "
                         f"{num_res_blocks}; LlamaGen's decoder has one more")
    config = VQConfig(
        image_size=image_size, in_channels=in_channels, ch=ch, ch_mult=ch_mult,
        decoder_ch_mult=None if decoder_ch_mult == ch_mult else decoder_ch_mult, num_res_blocks=num_res_blocks,
        z_channels=conv_out.shape[0], codebook_size=codebook.shape[0], codebook_dim=codebook.shape[1],
        codebook_l2_norm=True, num_groups=num_groups,
    )
    return config


def infer_gpt_config(state: Mapping[str, Tensor], *, token_grid: tuple[int, int], preset: str | None = None,
                     num_heads: int | None = None, num_classes: int | None = None,
                     name: str = "GPT checkpoint") -> RasterConfig:
    """A :class:`RasterConfig` from the shapes of an upstream c2i ``Transformer`` state dict.

    ``num_heads`` (or the heads of ``preset``, or LlamaGen's table by width) sets the head count.
    ``num_classes`` must equal the class-table rows - 1 when given.
    """
    if any(key.startswith("cls_embedding.cap_proj") for key in state):
        raise ValueError(f"{name} is a text-to-image (t2i) GPT; only class-conditional (c2i) checkpoints convert")
    table = require(state, "cls_embedding.embedding_table.weight", name, "the number of classes")
    tokens = require(state, "tok_embeddings.weight", name, "the vocabulary and width")
    vocab_size, dim = tokens.shape
    rows = table.shape[0]
    if num_classes is not None and num_classes != rows - 1:
        raise ValueError(f"{name}: num_classes={num_classes} but the class table has {rows} rows "
                         f"({rows - 1} classes + the null class)")
    num_layers = count_indices(state, "layers")
    if num_layers == 0:
        raise ValueError(f"{name} has no 'layers.{{i}}.' tensors")
    base = GENERATORS.preset(preset) if preset is not None else None
    if base is not None and not isinstance(base, RasterConfig):
        raise ValueError(f"gpt_preset {preset!r} is not a raster (LlamaGen) generator preset")
    if num_heads is None:
        if base is not None:
            num_heads = base.num_heads
        elif dim in LLAMAGEN_HEADS:
            num_heads = LLAMAGEN_HEADS[dim][1]
        else:
            raise ValueError(
                f"{name}: width {dim} is not in LlamaGen's table {sorted(LLAMAGEN_HEADS)}, and head counts cannot be "
                "read from shapes; pass gpt_preset or num_heads"
            )
    if base is not None and (base.dim, base.num_layers) != (dim, num_layers):
        raise ValueError(f"{name} has dim {dim} and {num_layers} layers, but preset {preset!r} has dim {base.dim} "
                         f"and {base.num_layers} layers")
    if dim % num_heads:
        raise ValueError(f"{name}: width {dim} is not divisible by num_heads={num_heads}")
    head_dim = dim // num_heads
    qkv_rows = require(state, "layers.0.attention.wqkv.weight", name, "the KV heads").shape[0]
    kv_dim, remainder = divmod(qkv_rows - dim, 2)
    if remainder or kv_dim <= 0 or kv_dim % head_dim:
        raise ValueError(f"{name}: wqkv has {qkv_rows} rows, not dim + 2 * kv_heads * head_dim for head dim {head_dim}")
    num_kv_heads = kv_dim // head_dim
    hidden = require(state, "layers.0.feed_forward.w1.weight", name, "the SwiGLU width").shape[0]
    multiple_of = next((m for m in (256, hidden) if llama_hidden_dim(dim, m) == hidden), None)
    if multiple_of is None:
        raise ValueError(f"{name}: SwiGLU width {hidden} is smaller than Llama's 2/3 * 4 * {dim}; arvis cannot "
                         "represent an ffn_dim_multiplier below 1")
    fields = dict(vocab_size=vocab_size, token_grid=token_grid, num_classes=rows - 1, dim=dim, num_layers=num_layers,
                  num_heads=num_heads, num_kv_heads=None if num_kv_heads == num_heads else num_kv_heads,
                  ffn_multiple_of=multiple_of, zero_prefix_rope=True)
    return dataclasses.replace(base, **fields) if base is not None else RasterConfig(**fields)


def _vq_rule(key: str) -> Source:
    if key == "quantizer.codebook.weight":
        return Source("quantize.embedding.weight")
    return Source(key)


def _gpt_rule(key: str) -> Source:
    if key == "cls_embedding.embedding.weight":
        return Source("cls_embedding.embedding_table.weight")
    return Source(key.removeprefix("trunk."))  # arvis's blocks live in the trunk: trunk.layers.{i} <- layers.{i}


def _load_into(model: torch.nn.Module, state: Mapping[str, Tensor], rule, ignore, name: str) -> None:
    expected = {key: value.shape for key, value in model.state_dict().items()}
    mapped = map_state_dict(state, expected, rule, ignore=ignore, name=name)
    model.load_state_dict(mapped, strict=True)


def convert_llamagen_vq(state: Mapping[str, Tensor], *, image_size: int, num_groups: int = 32,
                        name: str = "VQ checkpoint") -> VQTokenizer:
    """An eval-mode :class:`VQTokenizer` holding an upstream ``VQModel`` state dict."""
    tokenizer = VQTokenizer(infer_vq_config(state, image_size=image_size, num_groups=num_groups, name=name))
    _load_into(tokenizer, state, _vq_rule, _VQ_DROPPED, name)
    return tokenizer.eval()


def convert_llamagen_gpt(state: Mapping[str, Tensor], *, tokenizer: VQTokenizer, preset: str | None = None,
                         num_heads: int | None = None, num_classes: int | None = None,
                         name: str = "GPT checkpoint") -> RasterGenerator:
    """An eval-mode :class:`RasterGenerator` holding an upstream c2i ``Transformer`` state dict."""
    config = infer_gpt_config(state, token_grid=tokenizer.grid_size, preset=preset, num_heads=num_heads,
                              num_classes=num_classes, name=name)
    if config.vocab_size != tokenizer.vocab_size:
        raise ValueError(f"{name} has a vocabulary of {config.vocab_size}, the tokenizer a codebook of "
                         f"{tokenizer.vocab_size}; pair the GPT with the VQ it was trained on")
    generator = RasterGenerator(config)
    _load_into(generator, state, _gpt_rule, _GPT_DROPPED, name)
    return generator.eval()


def _image_size_from_name(path: Path) -> int | None:
    """256 or 384 from upstream file names such as ``c2i_L_384.pt``; None when the name does not say."""
    match = re.search(r"_(256|384|512)(?:\D|$)", path.stem)
    return int(match.group(1)) if match else None


def convert_llamagen(vq_path: str | Path, gpt_path: str | Path, out_dir: str | Path, *,
                     gpt_preset: str | None = None, image_size: int | None = None, num_classes: int | None = None,
                     num_heads: int | None = None, num_groups: int = 32) -> Path:
    """Converts an upstream LlamaGen VQ + c2i GPT pair into an arvis pipeline folder at ``out_dir``.

    Args:
        vq_path: ``vq_ds16_c2i.pt`` / ``vq_ds8_c2i.pt`` (or a ``.safetensors`` state dict).
        gpt_path: ``c2i_*.pt`` (or a ``.safetensors`` state dict).
        out_dir: the pipeline folder to write (replaced if it exists).
        gpt_preset: arvis preset (``llamagen-b`` ... ``llamagen-3b``) giving the head count and the
            non-architectural fields; checked against the checkpoint's width and depth.
        image_size: pixels per side. Default: read from the GPT file name (``c2i_L_384.pt`` -> 384),
            else 256. The token grid is image_size / downsampling factor (24x24 at 384 with VQ-16);
            the GPT's RoPE grid follows it, so it must be the size the GPT was trained at.
        num_classes: expected classes (1000 for ImageNet); checked against the class table.
        num_heads: head count for widths outside LlamaGen's table (tiny test models).
        num_groups: GroupNorm groups of the VQ (LlamaGen always uses 32; not readable from shapes).

    Returns:
        ``out_dir`` as a :class:`~pathlib.Path`. Sampling defaults: see the module docstring
        (cfg 2.0; upstream recommends 2.0 for B/L, 1.75 for XL/XXL, 1.65 for 3B).
    """
    vq_path, gpt_path = Path(vq_path), Path(gpt_path)
    if image_size is None:
        image_size = _image_size_from_name(gpt_path) or DEFAULT_IMAGE_SIZE
    tokenizer = convert_llamagen_vq(load_llamagen_state(vq_path), image_size=image_size, num_groups=num_groups,
                                    name=str(vq_path))
    generator = convert_llamagen_gpt(load_llamagen_state(gpt_path), tokenizer=tokenizer, preset=gpt_preset,
                                     num_heads=num_heads, num_classes=num_classes, name=str(gpt_path))
    return Pipeline(tokenizer, generator, NextTokenSettings(cfg_scale=DEFAULT_CFG_SCALE)).save_pretrained(out_dir)
