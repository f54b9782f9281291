"""Encode a dataset once with a trained tokenizer and save the tokens as one safetensors file.

``python -m arvis.train.pretokenize --config FILE tokenizer_path=DIR output=tokens.safetensors ...``
(also ``arvis pretokenize ...``). Generator training then reads token sequences instead of
running the tokenizer over the images again.

File format (shapes: n images, r rows, l tokens per image)::

    tokens   (r, l) int32   token ids (all arvis vocabularies fit; load_pretokenized returns int64)
    labels   (r,)   int64   class ids
    metadata (strings)      format, tokenizer_path, tokenizer_type, tokenizer_config (JSON),
                            token_layout (JSON), vocab_size, class_names (JSON), num_images,
                            with_mirrors, token_dtype, data_config (JSON), arvis_version

With ``data.random_flip`` each image is also encoded mirrored (LlamaGen's flip augmentation of
extracted codes), so r = 2n: rows 0..n-1 are the images in dataset order and rows n..2n-1
their mirrors in the same order. Without it, r = n.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any, Sequence

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch.utils.data import TensorDataset

from arvis.config import Config
from arvis.folders import write_file_atomically
from arvis.tokenizers.base import Tokenizer
from arvis.train.generator import encode_dataset
from arvis.train.loop import build_dataset, check_image_size
from arvis.train.options import DataConfig
from arvis.train.recipe import run_as_script, run_entry_point

logger = logging.getLogger(__name__)

FORMAT_NAME = "arvis-pretokenized-v1"
TOKEN_DTYPE = torch.int32
_JSON_KEYS = ("tokenizer_config", "token_layout", "class_names", "data_config")
_INTEGER_KEYS = ("vocab_size", "num_images")
_REQUIRED_KEYS = ("format", "tokenizer_path", "tokenizer_type", *_JSON_KEYS, *_INTEGER_KEYS, "with_mirrors",
                  "token_dtype", "arvis_version")


@dataclasses.dataclass(frozen=True, kw_only=True)
class PretokenizeConfig(Config):
    """What to encode, with which tokenizer, and where to write the tokens.

    ``data.random_flip`` adds each image's mirror (encoded explicitly, never drawn at random).
    """

    tokenizer_path: str | None = None
    data: DataConfig = DataConfig()
    output: str = "tokens.safetensors"
    batch_size: int = 256
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")


def pretokenize(config: PretokenizeConfig) -> Path:
    """Encodes the dataset once and writes the token file atomically; returns its path."""
    if config.tokenizer_path is None:
        raise ValueError(
            "tokenizer_path is required: pass tokenizer_path=DIR (a folder saved by the tokenizer trainer)"
        )
    device = torch.device(config.device)
    tokenizer = Tokenizer.from_pretrained(config.tokenizer_path, device=device)
    check_image_size(tokenizer, config.data)
    if tokenizer.vocab_size is None or tokenizer.vocab_size > torch.iinfo(TOKEN_DTYPE).max + 1:
        raise ValueError(
            f"{config.tokenizer_path} has vocabulary size {tokenizer.vocab_size}; pretokenization stores discrete "
            f"token ids as {TOKEN_DTYPE}"
        )
    with_mirrors = config.data.random_flip
    dataset = build_dataset(config.data.replace(random_flip=False, crop="center"))  # mirrors are encoded explicitly
    logger.info("encoding %d images%s with %s", len(dataset), " and their mirrors" if with_mirrors else "",
                config.tokenizer_path)
    encoded = encode_dataset(tokenizer, dataset, config.batch_size, device, with_mirrors=with_mirrors)
    tokens, labels = encoded.tensors  # with mirrors: all images, then all mirrors
    expected_rows = len(dataset) * (2 if with_mirrors else 1)
    if tokens.shape != (expected_rows, tokenizer.layout.length):
        raise ValueError(
            f"encoding gave tokens of shape {tuple(tokens.shape)}, "
            f"expected ({expected_rows}, {tokenizer.layout.length})"
        )
    metadata = {
        "format": FORMAT_NAME,
        "tokenizer_path": str(config.tokenizer_path),
        "tokenizer_type": type(tokenizer).__name__,
        "tokenizer_config": json.dumps(tokenizer.config.to_dict()),
        "token_layout": json.dumps([list(shape) for shape in tokenizer.layout.shapes]),
        "vocab_size": str(tokenizer.vocab_size),
        "class_names": json.dumps(list(dataset.class_names)),
        "num_images": str(len(dataset)),
        "with_mirrors": json.dumps(with_mirrors),
        "token_dtype": str(TOKEN_DTYPE).removeprefix("torch."),
        "data_config": json.dumps(config.data.to_dict()),
        "arvis_version": _arvis_version(),
    }
    path = Path(config.output)
    _save_atomically({"tokens": tokens.to(TOKEN_DTYPE).contiguous(), "labels": labels.to(torch.int64).contiguous()},
                     metadata, path)
    logger.info("wrote %d token sequences of length %d to %s", len(tokens), tokens.shape[1], path)
    return path


def load_pretokenized(path: str | Path) -> tuple[TensorDataset, dict[str, Any]]:
    """Reads a token file written by :func:`pretokenize`.

    Returns:
        TensorDataset(tokens (r, l) int64, labels (r,) int64) on the CPU, and the metadata with
        JSON entries parsed, ``vocab_size`` / ``num_images`` as ints and ``with_mirrors`` as a bool.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is corrupt, lacks a tensor or metadata entry, or its parts disagree.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"token file {path} does not exist; write it with python -m arvis.train.pretokenize")
    try:
        with safe_open(str(path), framework="pt") as file:
            raw = file.metadata() or {}
            tensors = {name: file.get_tensor(name) for name in file.keys()}
    except (SafetensorError, OSError) as error:
        raise ValueError(f"corrupt token file {path}: {error}") from error
    missing_tensors = sorted({"tokens", "labels"} - set(tensors))
    if missing_tensors:
        raise ValueError(f"token file {path} lacks the tensor(s) {missing_tensors}")
    metadata = _parse_metadata(raw, path)
    tokens, labels = tensors["tokens"], tensors["labels"]
    _check_tensors(tokens, labels, metadata, path)
    return TensorDataset(tokens.long(), labels.long()), metadata


def _save_atomically(tensors: dict[str, torch.Tensor], metadata: dict[str, str], path: Path) -> None:
    """Writes via a temporary sibling renamed into place, so an interrupted run leaves no partial file."""
    write_file_atomically(path, lambda temporary: save_file(tensors, str(temporary), metadata=metadata))


def _parse_metadata(raw: dict[str, str], path: Path) -> dict[str, Any]:
    missing = [key for key in _REQUIRED_KEYS if key not in raw]
    if missing:
        raise ValueError(f"token file {path} lacks the metadata entries {missing}; write it again with pretokenize")
    if raw["format"] != FORMAT_NAME:
        raise ValueError(f"token file {path} has format {raw['format']!r}, expected {FORMAT_NAME!r}")
    metadata: dict[str, Any] = dict(raw)
    try:
        for key in _JSON_KEYS:
            metadata[key] = json.loads(raw[key])
        for key in _INTEGER_KEYS:
            metadata[key] = int(raw[key])
        metadata["with_mirrors"] = json.loads(raw["with_mirrors"])
    except (json.JSONDecodeError, ValueError) as error:
        raise ValueError(f"token file {path} has a malformed metadata entry: {error}") from error
    if not isinstance(metadata["with_mirrors"], bool):
        raise ValueError(f"token file {path}: with_mirrors must be true or false, got {raw['with_mirrors']!r}")
    return metadata


def _check_tensors(tokens: torch.Tensor, labels: torch.Tensor, metadata: dict[str, Any], path: Path) -> None:
    length = sum(torch.Size(shape).numel() for shape in metadata["token_layout"])
    if tokens.ndim != 2 or tokens.shape[1] != length:
        raise ValueError(f"token file {path}: tokens have shape {tuple(tokens.shape)}, expected (rows, {length})")
    if labels.ndim != 1 or len(labels) != len(tokens):
        raise ValueError(
            f"token file {path}: {len(tokens)} token rows but labels of shape {tuple(labels.shape)}"
        )
    if tokens.is_floating_point() or labels.is_floating_point():
        raise ValueError(
            f"token file {path}: tokens and labels must be integers, got {tokens.dtype} and {labels.dtype}"
        )
    expected_rows = metadata["num_images"] * (2 if metadata["with_mirrors"] else 1)
    if len(tokens) != expected_rows:
        raise ValueError(
            f"token file {path} holds {len(tokens)} rows but its metadata describes {expected_rows} "
            f"({metadata['num_images']} images, with_mirrors={metadata['with_mirrors']})"
        )
    if tokens.numel() and (tokens.min() < 0 or tokens.max() >= metadata["vocab_size"]):
        raise ValueError(
            f"token file {path}: token ids span [{tokens.min()}, {tokens.max()}], outside the vocabulary "
            f"[0, {metadata['vocab_size'] - 1}]"
        )
    num_classes = len(metadata["class_names"])
    if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"token file {path}: labels span [{labels.min()}, {labels.max()}] but there are "
                         f"{num_classes} class names")


def _arvis_version() -> str:
    from arvis import __version__

    return __version__


def main(argv: Sequence[str] | None = None) -> None:
    run_entry_point(PretokenizeConfig, pretokenize, "Encode a dataset once with a tokenizer into a token file.", argv)


if __name__ == "__main__":
    run_as_script(main)
