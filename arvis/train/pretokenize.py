"""Encode a dataset once with a trained tokenizer and save the tokens as one safetensors file.

``python -m arvis.train.pretokenize --config FILE tokenizer_path=DIR output=tokens.safetensors ...``
(also ``arvis pretokenize ...``). Generator training then reads token sequences instead of
running the tokenizer over the images again. The file format is :mod:`arvis.train.tokens`'s; with
``data.random_flip`` each image is also encoded mirrored. ``store=latents`` keeps each token's latent vector
(``Tokenizer.encode_latents``, float16) instead of its id.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Literal, Sequence

import torch

from arvis.config import Config
from arvis.tokenizers.base import Tokenizer
from arvis.train.loop import build_dataset, check_image_size
from arvis.train.options import DataConfig
from arvis.train.recipe import run_as_script, run_entry_point
from arvis.train.tokens import (FORMAT_NAME, LATENT_DTYPE, TOKEN_DTYPE, check_store, encode_dataset, load_pretokenized,
                                save_token_file)

__all__ = ["PretokenizeConfig", "load_pretokenized", "main", "pretokenize"]  # load_pretokenized: from tokens

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, kw_only=True)
class PretokenizeConfig(Config):
    """What to encode, with which tokenizer, and where to write the tokens.

    ``data.random_flip`` adds each image's mirror (encoded explicitly, never drawn at random). ``store`` is what
    the file keeps per token: ``"ids"`` (int32 token ids) or ``"latents"`` (float16 (l, e) latent vectors of
    ``Tokenizer.encode_latents``; a tokenizer without a vocabulary is then allowed).
    """

    tokenizer_path: str | None = None
    data: DataConfig = DataConfig()
    output: str = "tokens.safetensors"
    batch_size: int = 256
    device: str = "cpu"
    store: Literal["ids", "latents"] = "ids"

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        check_store(self.store)


def pretokenize(config: PretokenizeConfig) -> Path:
    """Encodes the dataset once and writes the token file atomically; returns its path."""
    if config.tokenizer_path is None:
        raise ValueError(
            "tokenizer_path is required: pass tokenizer_path=DIR (a folder saved by the tokenizer trainer)"
        )
    device = torch.device(config.device)
    tokenizer = Tokenizer.from_pretrained(config.tokenizer_path, device=device)
    check_image_size(tokenizer, config.data)
    latents = config.store == "latents"
    if not latents and (tokenizer.vocab_size is None or tokenizer.vocab_size > torch.iinfo(TOKEN_DTYPE).max + 1):
        raise ValueError(
            f"{config.tokenizer_path} has vocabulary size {tokenizer.vocab_size}; pretokenization stores discrete "
            f"token ids as {TOKEN_DTYPE} (store=latents keeps token latents instead)"
        )
    if latents and tokenizer.latent_dim is None:
        raise ValueError(f"{config.tokenizer_path} ({type(tokenizer).__name__}) exposes no token latents; "
                         "pretokenize its token ids with store=ids")
    with_mirrors = config.data.random_flip
    dataset = build_dataset(config.data.replace(random_flip=False, crop="center"))  # mirrors are encoded explicitly
    logger.info("encoding %d images%s with %s", len(dataset), " and their mirrors" if with_mirrors else "",
                config.tokenizer_path)
    encoded = encode_dataset(tokenizer, dataset, config.batch_size, device, with_mirrors=with_mirrors,
                             store=config.store)
    tokens, labels = encoded.tensors  # with mirrors: all images, then all mirrors
    expected = (len(dataset) * (2 if with_mirrors else 1), tokenizer.layout.length,
                *((tokenizer.latent_dim,) if latents else ()))
    if tokens.shape != expected:
        raise ValueError(f"encoding gave tokens of shape {tuple(tokens.shape)}, expected {expected}")
    tokens = _latents_to_store(tokens, config.tokenizer_path) if latents else tokens.to(TOKEN_DTYPE)
    metadata = {
        "format": FORMAT_NAME,
        "tokenizer_path": str(config.tokenizer_path),
        "tokenizer_type": type(tokenizer).__name__,
        "tokenizer_config": json.dumps(tokenizer.config.to_dict()),
        "token_layout": json.dumps([list(shape) for shape in tokenizer.layout.shapes]),
        "vocab_size": str(tokenizer.vocab_size) if tokenizer.vocab_size is not None else "none",
        "class_names": json.dumps(list(dataset.class_names)),
        "num_images": str(len(dataset)),
        "with_mirrors": json.dumps(with_mirrors),
        "token_dtype": str(tokens.dtype).removeprefix("torch."),
        "store": config.store,
        "latent_dim": str(tokenizer.latent_dim) if tokenizer.latent_dim is not None else "none",
        "data_config": json.dumps(config.data.to_dict()),
        "arvis_version": _arvis_version(),
    }
    path = Path(config.output)
    save_token_file({"latents" if latents else "tokens": tokens.contiguous(),
                     "labels": labels.to(torch.int64).contiguous()}, metadata, path)
    logger.info("wrote %d token %s sequences of length %d to %s", len(tokens), config.store, tokens.shape[1], path)
    return path


def _latents_to_store(latents: torch.Tensor, tokenizer_path: str) -> torch.Tensor:
    """(r, l, e) float latents -> the same as float16; ``ValueError`` if a value is not finite or exceeds its range."""
    stored = latents.to(LATENT_DTYPE)
    if not torch.isfinite(stored).all():
        largest = latents.abs().max().item()
        raise ValueError(f"{tokenizer_path} gives latents that float16 cannot hold (largest magnitude {largest:.3g}, "
                         f"float16's limit {torch.finfo(LATENT_DTYPE).max:.3g}); store=latents needs finite latents in "
                         "float16's range, or pretokenize token ids with store=ids")
    return stored


def _arvis_version() -> str:
    from arvis import __version__

    return __version__


def main(argv: Sequence[str] | None = None) -> None:
    run_entry_point(PretokenizeConfig, pretokenize, "Encode a dataset once with a tokenizer into a token file.", argv)


if __name__ == "__main__":
    run_as_script(main)
