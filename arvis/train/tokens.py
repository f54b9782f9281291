"""Token files and encoded datasets: the tokens a generator trains on, from images encoded here or from a file.

Shared by generator training (:mod:`arvis.train.generator`), pre-tokenization (:mod:`arvis.train.pretokenize`) and
post-training on real images (:mod:`arvis.posttrain.vapi`), which import from here (and not from each other).

File format (shapes: n images, r rows, l tokens per image, e latent dimension)::

    tokens   (r, l) int32      token ids, with store "ids" (all arvis vocabularies fit; load_pretokenized returns
                               int64)
    latents  (r, l, e) float16 token latents (``Tokenizer.encode_latents``), with store "latents", instead of tokens
                               (float32 is read too; load_pretokenized returns float32)
    labels   (r,)   int64      class ids
    metadata (strings)         format, tokenizer_path, tokenizer_type, tokenizer_config (JSON),
                               token_layout (JSON), vocab_size ("none": a tokenizer without ids, latents only),
                               class_names (JSON), num_images, with_mirrors, token_dtype, data_config (JSON),
                               arvis_version, store ("ids" or "latents"; files without it hold ids),
                               latent_dim (the tokenizer's e, "none" when it has no latents; may be absent in ids files)

With mirrors each image is also encoded mirrored (LlamaGen's flip augmentation of extracted codes), so
r = 2n: rows 0..n-1 are the images in dataset order and rows n..2n-1 their mirrors in the same order.
Without them, r = n.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch.utils.data import DataLoader, Dataset, TensorDataset

from arvis.conditions import Condition
from arvis.folders import write_file_atomically
from arvis.tokenizers.base import Tokenizer

if TYPE_CHECKING:
    from arvis.generators.base import Generator
    from arvis.text import FrozenTextEncoder, TextTokenizer

FORMAT_NAME = "arvis-pretokenized-v1"
TOKEN_DTYPE = torch.int32
LATENT_DTYPE = torch.float16  # how latents are written
LATENT_DTYPES = (torch.float16, torch.float32)  # what a file may hold
STORES = ("ids", "latents")
_TENSOR_NAMES = {"ids": "tokens", "latents": "latents"}
_JSON_KEYS = ("tokenizer_config", "token_layout", "class_names", "data_config")
_INTEGER_KEYS = ("num_images",)
_OPTIONAL_INTEGER_KEYS = ("vocab_size", "latent_dim")  # an integer or "none"
_REQUIRED_KEYS = ("format", "tokenizer_path", "tokenizer_type", *_JSON_KEYS, *_INTEGER_KEYS, "with_mirrors",
                  "token_dtype", "arvis_version")



class ConditionedTokens(Dataset):
    """Token rows with the condition fields of each: items ``{"tokens": (l,) long, <field>: ...}``, which the
    default collate stacks into a batch dict; :meth:`split` turns it into (tokens, Condition).

    Args:
        tokens: (r, l) long ids (or (r, l, e) float latents, which the items then hold).
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
                   with_mirrors: bool = False, store: str = "ids") -> TensorDataset:
    """Encodes every image once -> TensorDataset(tokens, labels (r,) long) on the CPU: tokens (r, l) long ids
    (``store="ids"``, :meth:`Tokenizer.encode`) or (r, l, e) float latents in the tokenizer's dtype
    (``store="latents"``, :meth:`Tokenizer.encode_latents`).

    ``with_mirrors`` also encodes each image's horizontal mirror (LlamaGen's flip augmentation
    of extracted codes): rows 0..n-1 are the images in dataset order, rows n..2n-1 their mirrors.
    """
    check_store(store)
    encode = tokenizer.encode_latents if store == "latents" else tokenizer.encode
    tokens, mirror_tokens, labels = [], [], []
    for images, batch_labels in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        pixels = tokenizer.from_unit_range(images.to(device))
        tokens.append(encode(pixels).cpu())
        if with_mirrors:
            mirror_tokens.append(encode(pixels.flip(-1)).cpu())
        labels.append(torch.as_tensor(batch_labels, dtype=torch.long))
    labels = torch.cat(labels)
    if with_mirrors:
        return TensorDataset(torch.cat(tokens + mirror_tokens), torch.cat([labels, labels]))
    return TensorDataset(torch.cat(tokens), labels)


def check_store(store: str) -> None:
    """Raises ``ValueError`` unless ``store`` is one of :data:`STORES` ("ids" or "latents")."""
    if store not in STORES:
        raise ValueError(f"store must be 'ids' (token ids) or 'latents' (token latent vectors), got {store!r}")


def read_tokens(path: str, tokenizer: Tokenizer, kind: str = "ids") -> tuple[TensorDataset, int]:
    """Loads a pre-tokenised file holding ``kind`` ("ids": tokens (r, l) int64; "latents": (r, l, e) float32) and
    checks it was made by a tokenizer like ``tokenizer``; returns (TensorDataset(tokens, labels), class count)."""
    check_store(kind)
    token_data, metadata = load_pretokenized(path)
    store = metadata["store"]
    if store != kind:
        fix = ("a generator of discrete tokens trains on token ids: pretokenize again with store=ids"
               if kind == "ids" else "pretokenize again with store=latents")
        raise ValueError(f"{path} holds token {store} but token {kind} are needed here; {fix}")
    layout = [list(shape) for shape in tokenizer.layout.shapes]
    if kind == "ids" and (metadata["vocab_size"] != tokenizer.vocab_size or metadata["token_layout"] != layout):
        raise ValueError(
            f"{path} holds tokens of vocabulary {metadata['vocab_size']} and layout {metadata['token_layout']}, but "
            f"the tokenizer has {tokenizer.vocab_size} and {layout}; pretokenize again with this tokenizer"
        )
    if kind == "latents" and (metadata["latent_dim"] != tokenizer.latent_dim or metadata["token_layout"] != layout):
        raise ValueError(
            f"{path} holds latents of dimension {metadata['latent_dim']} and layout {metadata['token_layout']}, but "
            f"the tokenizer has {tokenizer.latent_dim} and {layout}; pretokenize again with this tokenizer"
        )
    return token_data, len(metadata["class_names"])


def load_pretokenized(path: str | Path) -> tuple[TensorDataset, dict[str, Any]]:
    """Reads a token file written by :func:`pretokenize`.

    Returns:
        TensorDataset(tokens, labels (r,) int64) on the CPU, tokens being (r, l) int64 ids (store "ids") or
        (r, l, e) float32 latents (store "latents"), and the metadata with JSON entries parsed, ``num_images`` as an
        int, ``vocab_size`` / ``latent_dim`` as ints or None, ``store`` ("ids" for files that predate it) and
        ``with_mirrors`` as a bool.

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
    name = _TENSOR_NAMES.get(raw.get("store", "ids"), "tokens")
    missing_tensors = sorted({name, "labels"} - set(tensors))
    if missing_tensors:
        raise ValueError(f"token file {path} lacks the tensor(s) {missing_tensors}")
    metadata = _parse_metadata(raw, path)
    tokens, labels = tensors[name], tensors["labels"]
    _check_tensors(tokens, labels, metadata, path)
    if metadata["store"] == "latents":
        return TensorDataset(tokens.float(), labels.long()), metadata
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
        for key in _OPTIONAL_INTEGER_KEYS:
            metadata[key] = None if raw.get(key, "none") == "none" else int(raw[key])
        metadata["with_mirrors"] = json.loads(raw["with_mirrors"])
    except (json.JSONDecodeError, ValueError) as error:
        raise ValueError(f"token file {path} has a malformed metadata entry: {error}") from error
    if not isinstance(metadata["with_mirrors"], bool):
        raise ValueError(f"token file {path}: with_mirrors must be true or false, got {raw['with_mirrors']!r}")
    metadata["store"] = raw.get("store", "ids")
    if metadata["store"] not in STORES:
        raise ValueError(f"token file {path}: store must be 'ids' or 'latents', got {metadata['store']!r}")
    needed = "vocab_size" if metadata["store"] == "ids" else "latent_dim"
    if metadata[needed] is None:
        raise ValueError(f"token file {path} holds token {metadata['store']} but its metadata gives no {needed}")
    return metadata


def _check_tensors(tokens: torch.Tensor, labels: torch.Tensor, metadata: dict[str, Any], path: Path) -> None:
    """Checks the token rows ((r, l) ids or (r, l, e) latents, by ``metadata["store"]``) and labels (r,)."""
    length = sum(torch.Size(shape).numel() for shape in metadata["token_layout"])
    latents = metadata["store"] == "latents"
    expected = (length, metadata["latent_dim"]) if latents else (length,)
    if tokens.ndim != 1 + len(expected) or tuple(tokens.shape[1:]) != expected:
        what = "latents" if latents else "tokens"
        raise ValueError(f"token file {path}: {what} have shape {tuple(tokens.shape)}, expected "
                         f"(rows, {', '.join(map(str, expected))})")
    if labels.ndim != 1 or len(labels) != len(tokens):
        raise ValueError(
            f"token file {path}: {len(tokens)} token rows but labels of shape {tuple(labels.shape)}"
        )
    if labels.is_floating_point() or not latents and tokens.is_floating_point():
        raise ValueError(
            f"token file {path}: tokens and labels must be integers, got {tokens.dtype} and {labels.dtype}"
        )
    if latents:
        _check_latent_values(tokens, path)
    expected_rows = metadata["num_images"] * (2 if metadata["with_mirrors"] else 1)
    if len(tokens) != expected_rows:
        raise ValueError(
            f"token file {path} holds {len(tokens)} rows but its metadata describes {expected_rows} "
            f"({metadata['num_images']} images, with_mirrors={metadata['with_mirrors']})"
        )
    if not latents and tokens.numel() and (tokens.min() < 0 or tokens.max() >= metadata["vocab_size"]):
        raise ValueError(
            f"token file {path}: token ids span [{tokens.min()}, {tokens.max()}], outside the vocabulary "
            f"[0, {metadata['vocab_size'] - 1}]"
        )
    num_classes = len(metadata["class_names"])
    if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"token file {path}: labels span [{labels.min()}, {labels.max()}] but there are "
                         f"{num_classes} class names")


def _check_latent_values(latents: torch.Tensor, path: Path) -> None:
    """Raises ``ValueError`` unless ``latents`` are float16 or float32 and finite."""
    if latents.dtype not in LATENT_DTYPES:
        raise ValueError(f"token file {path}: latents must be float16 or float32, got {latents.dtype}")
    if not torch.isfinite(latents).all():
        raise ValueError(f"token file {path} holds non-finite latents (NaN or inf); pretokenize again")


def with_conditions(token_data, generator: Generator, text_tokenizer: TextTokenizer | FrozenTextEncoder | None,
                    dataset) -> ConditionedTokens:
    """TensorDataset(tokens, labels) -> :class:`ConditionedTokens` with the fields the generator takes (the
    dataset's captions, encoded and padded by ``text_tokenizer`` (or features of a frozen encoder), for a
    text-conditional one)."""
    tokens, labels = token_data.tensors
    if "prompt" not in generator.condition_fields:
        return ConditionedTokens(tokens, labels=labels)
    captions = [dataset.caption(index) for index in range(len(dataset))]
    prompt, mask = text_tokenizer.encode(captions, generator.prompt_length)
    return ConditionedTokens(tokens, prompt=prompt.cpu(), prompt_mask=mask.cpu())  # on the CPU, as the tokens
