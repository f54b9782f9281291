"""Prompt strings -> (ids (b, p) long, key-padding mask (b, p) bool), padded on the left to a fixed length p.

A :class:`TextTokenizer` wraps a Hugging Face ``tokenizers`` tokenizer, stored as its ``tokenizer.json`` (plain
JSON: loading it runs no code). :meth:`TextTokenizer.word_level` builds one over a closed vocabulary of
alphanumeric words (the glyph captions'), lower-casing and splitting on whitespace (punctuation becomes a token of
its own); id 0 is ``[PAD]`` and id 1 ``[UNK]``. A word or punctuation mark outside the vocabulary is an error
naming it, never silently mapped to ``[UNK]``, and so is a prompt longer than p tokens. A loaded file must be
such a word-level tokenizer without truncation or padding of its own (either would bypass those errors). Left padding (the real tokens next to the image tokens) is LlamaGen t2i's default.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
from torch import Tensor

TEXT_TOKENIZER_FILE = "tokenizer.json"
PAD, UNKNOWN = "[PAD]", "[UNK]"


class TextTokenizer:
    """Encodes prompts for a text-conditional generator (see the module docstring)."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        if tokenizer.token_to_id(PAD) != 0 or tokenizer.token_to_id(UNKNOWN) is None:
            raise ValueError(f"a text tokenizer needs {PAD} at id 0 and an {UNKNOWN} token")
        if not isinstance(tokenizer.model, models.WordLevel) or tokenizer.model.unk_token != UNKNOWN \
                or tokenizer.truncation or tokenizer.padding:
            raise ValueError(f"a text tokenizer must be word-level with {UNKNOWN} as its unknown token, without "
                             "truncation or padding of its own (TextTokenizer pads and checks lengths itself)")
        self.tokenizer = tokenizer

    @classmethod
    def word_level(cls, vocabulary: Iterable[str]) -> TextTokenizer:
        """A lower-casing word tokenizer over ``vocabulary`` (ids 2.. in order; 0 pads, 1 is unknown)."""
        words = list(dict.fromkeys(word.lower() for word in vocabulary))
        if not words or not all(word.isalnum() for word in words):
            raise ValueError(f"the vocabulary must be a non-empty list of alphanumeric words, got {words[:10]}")
        table = {PAD: 0, UNKNOWN: 1, **{word: index + 2 for index, word in enumerate(words)}}
        tokenizer = Tokenizer(models.WordLevel(table, unk_token=UNKNOWN))
        tokenizer.normalizer = normalizers.Lowercase()
        tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
        return cls(tokenizer)

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    def encode(self, prompts: Sequence[str], length: int) -> tuple[Tensor, Tensor]:
        """prompts (b strings) -> ids (b, length) long and mask (b, length) bool, padded on the left.

        Raises ``ValueError`` for a word outside the vocabulary or a prompt longer than ``length`` tokens.
        """
        if not isinstance(prompts, (list, tuple)) or not all(isinstance(prompt, str) for prompt in prompts):
            raise ValueError(f"prompts must be a list of strings, got {prompts!r:.80}")
        ids = torch.zeros(len(prompts), length, dtype=torch.long)
        mask = torch.zeros(len(prompts), length, dtype=torch.bool)
        unknown_id = self.tokenizer.token_to_id(UNKNOWN)
        for row, encoding in enumerate(self.tokenizer.encode_batch(list(prompts), add_special_tokens=False)):
            unknown = [prompts[row][start:end] for (start, end), index in zip(encoding.offsets, encoding.ids, strict=True)
                       if index == unknown_id]
            if unknown:
                raise ValueError(f"prompt {prompts[row]!r} has words outside the text vocabulary: {unknown}; "
                                 "use words the generator was trained on")
            count = len(encoding.ids)
            if count > length:
                raise ValueError(f"prompt {prompts[row]!r} has {count} tokens, more than the prompt length "
                                 f"{length}; shorten it")
            if count:
                ids[row, length - count:] = torch.tensor(encoding.ids)
                mask[row, length - count:] = True
        return ids, mask

    def decode(self, ids: Tensor) -> list[str]:
        """ids (b, m) long -> b strings: the words joined by spaces, the padding (id 0) skipped. Raises
        ``ValueError`` for an id outside the vocabulary."""
        if not isinstance(ids, Tensor) or ids.dtype != torch.long or ids.ndim != 2:
            raise ValueError(f"expected (b, m) long word ids, got {getattr(ids, 'dtype', type(ids).__name__)} "
                             f"{tuple(getattr(ids, 'shape', ()))}")
        if ids.numel() and (ids.min() < 0 or ids.max() >= self.vocab_size):
            raise ValueError(f"word ids must lie in [0, {self.vocab_size - 1}], got [{ids.min().item()}, "
                             f"{ids.max().item()}]")
        return [" ".join(self.tokenizer.id_to_token(index) for index in row if index != 0) for row in ids.tolist()]

    def save(self, folder: str | Path) -> Path:
        """Writes ``folder/tokenizer.json``."""
        path = Path(folder) / TEXT_TOKENIZER_FILE
        self.tokenizer.save(str(path))
        return path

    @classmethod
    def load(cls, folder: str | Path) -> TextTokenizer:
        path = Path(folder) / TEXT_TOKENIZER_FILE
        if not path.is_file():
            raise FileNotFoundError(f"missing text tokenizer file {path}; save the pipeline with its text tokenizer")
        try:
            tokenizer = Tokenizer.from_file(str(path))
        except Exception as error:  # tokenizers raises a bare Exception on malformed JSON
            raise ValueError(f"corrupt text tokenizer file {path}: {error}") from error
        try:
            return cls(tokenizer)
        except ValueError as error:
            raise ValueError(f"{path}: {error}") from error
