"""Token files and encoded datasets: the tokens a generator trains on, from images encoded here or from a file.

Shared by generator training (:mod:`arvis.train.generator`) and pre-tokenization (:mod:`arvis.train.pretokenize`),
which both import from here (and not from each other).

File format (shapes: n images, r rows, l tokens per image)::

    tokens   (r, l) int32   token ids (all arvis vocabularies fit; load_pretokenized returns int64)
    labels   (r,)   int64   class ids
    metadata (strings)      format, tokenizer_path, tokenizer_type, tokenizer_config (JSON),
                            token_layout (JSON), vocab_size, class_names (JSON), num_images,
                            with_mirrors, token_dtype, data_config (JSON), arvis_version

With mirrors each image is also encoded mirrored (LlamaGen's flip augmentation of extracted codes), so
r = 2n: rows 0..n-1 are the images in dataset order and rows n..2n-1 their mirrors in the same order.
Without them, r = n.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch.utils.data import DataLoader, Dataset, TensorDataset

from arvis.conditions import Condition
from arvis.folders import write_file_atomically
from arvis.tokenizers.base import Tokenizer

FORMAT_NAME = "arvis-pretokenized-v1"
TOKEN_DTYPE = torch.int32
_JSON_KEYS = ("tokenizer_config", "token_layout", "class_names", "data_config")
_INTEGER_KEYS = ("vocab_size", "num_images")
_REQUIRED_KEYS = ("format", "tokenizer_path", "tokenizer_type", *_JSON_KEYS, *_INTEGER_KEYS, "with_mirrors",
                  "token_dtype", "arvis_version")



class ConditionedTokens(Dataset):
    """Token rows with the condition fields of each: items ``{"tokens": (l,) long, <field>: ...}``, which the
    default collate stacks into a batch dict; :meth:`split` turns it into (tokens, Condition).

    Args:
        tokens: (r, l) long.
        **fields: :class:`arvis.conditions.Condition` fields with r rows each (``labels`` (r,), ``prompt`` and
            ``prompt_mask`` (r, p), ...).
    """

    def __init__(self, tokens: torch.Tensor, **fields: torch.Tensor) -> None:
        rows = {name: len(value) for name, value in fields.items()}
        if not fields or set(rows.values()) != {len(tokens)}:
            raise ValueError(f"every condition field needs one row per token row ({len(tokens)}), got {rows}")
        self.tokens, self.fields = tokens, fields

    def __len__(self) -> int:
        return len(self.tokens)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"tokens": self.tokens[index], **{name: value[index] for name, value in self.fields.items()}}

    @staticmethod
    def split(batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, Condition]:
        """A collated batch -> tokens (b, l) and its condition."""
        fields = dict(batch)
        return fields.pop("tokens"), Condition(**fields)


@torch.inference_mode()
def encode_dataset(tokenizer: Tokenizer, dataset: Dataset, batch_size: int, device: torch.device, *,
                   with_mirrors: bool = False) -> TensorDataset:
    """Encodes every image once -> TensorDataset(tokens (r, l) long, labels (r,) long) on the CPU.

    ``with_mirrors`` also encodes each image's horizontal mirror (LlamaGen's flip augmentation
    of extracted codes): rows 0..n-1 are the images in dataset order, rows n..2n-1 their mirrors.
    """
    tokens, mirror_tokens, labels = [], [], []
    for images, batch_labels in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        pixels = tokenizer.from_unit_range(images.to(device))
        tokens.append(tokenizer.encode(pixels).cpu())
        if with_mirrors:
            mirror_tokens.append(tokenizer.encode(pixels.flip(-1)).cpu())
        labels.append(torch.as_tensor(batch_labels, dtype=torch.long))
    labels = torch.cat(labels)
    if with_mirrors:
        return TensorDataset(torch.cat(tokens + mirror_tokens), torch.cat([labels, labels]))
    return TensorDataset(torch.cat(tokens), labels)


def read_tokens(path: str, tokenizer: Tokenizer) -> tuple[TensorDataset, int]:
    """Loads a pre-tokenised file and checks it was made by a tokenizer like ``tokenizer``."""
    token_data, metadata = load_pretokenized(path)
    layout = [list(shape) for shape in tokenizer.layout.shapes]
    if metadata["vocab_size"] != tokenizer.vocab_size or metadata["token_layout"] != layout:
        raise ValueError(
            f"{path} holds tokens of vocabulary {metadata['vocab_size']} and layout {metadata['token_layout']}, but "
            f"the tokenizer has {tokenizer.vocab_size} and {layout}; pretokenize again with this tokenizer"
        )
    return token_data, len(metadata["class_names"])


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


def save_token_file(tensors: dict[str, torch.Tensor], metadata: dict[str, str], path: Path) -> None:
    """Writes a token file via a temporary sibling renamed into place, so an interrupted run leaves no partial
    file."""
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


