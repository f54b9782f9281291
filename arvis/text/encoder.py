"""A frozen text encoder from a local folder (LlamaGen t2i: FLAN-T5-XL), through transformers.

Prompt strings -> features (b, p, e) float32 and the key-padding mask (b, p) bool, padded on the left to the
generator's prompt length p as LlamaGen t2i pads its T5 features (the real tokens next to the image tokens),
the padding positions zeroed. The folder holds what ``transformers`` saves: ``config.json``, the weights as
``model.safetensors`` (only safetensors are read: ``use_safetensors=True``, nothing is downloaded, no remote
code) and the tokenizer files (``tokenizer.json`` ...).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

REQUIRED_FILES = ("config.json", "model.safetensors")


class FrozenTextEncoder:
    """A T5 encoder and its tokenizer, frozen (eval mode, no gradients). ``feature_dim`` is e (2048 for
    FLAN-T5-XL)."""

    def __init__(self, model, tokenizer) -> None:
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.tokenizer.padding_side = "right"  # encode() moves each row's real tokens to the end itself

    @classmethod
    def load(cls, folder: str | Path, *, device: str | torch.device = "cpu") -> FrozenTextEncoder:
        from transformers import AutoTokenizer, T5EncoderModel

        folder = Path(folder)
        missing = [name for name in REQUIRED_FILES if not (folder / name).is_file()]
        if missing:
            raise FileNotFoundError(f"text encoder folder {folder} lacks {missing}: put a T5 encoder saved by "
                                    "transformers (save_pretrained(..., safe_serialization=True), e.g. "
                                    "google/flan-t5-xl) and its tokenizer there")
        model = T5EncoderModel.from_pretrained(folder, use_safetensors=True, local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        return cls(model.to(device), tokenizer)

    @property
    def feature_dim(self) -> int:
        return self.model.config.d_model

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def save(self, folder: str | Path) -> None:
        self.model.save_pretrained(folder, safe_serialization=True)
        self.tokenizer.save_pretrained(folder)

    @torch.inference_mode()
    def encode(self, prompts: Sequence[str], length: int) -> tuple[Tensor, Tensor]:
        """prompts (b strings) -> features (b, length, e) float32 and mask (b, length) bool, left-padded.
        Raises ``ValueError`` for a prompt of more than ``length`` tokens (upstream truncates silently)."""
        if isinstance(prompts, str) or not all(isinstance(prompt, str) for prompt in prompts):
            raise ValueError(f"prompts must be a list of strings, got {prompts!r:.80}")
        batch = self.tokenizer(list(prompts), padding="longest", return_tensors="pt")
        counts = batch["attention_mask"].sum(1)
        too_long = [(prompt, int(count)) for prompt, count in zip(prompts, counts, strict=True) if count > length]
        if too_long:
            raise ValueError(f"prompt {too_long[0][0]!r} has {too_long[0][1]} tokens, more than the prompt length "
                             f"{length}; shorten it")
        ids, attention = batch["input_ids"].to(self.device), batch["attention_mask"].to(self.device)
        hidden = self.model(input_ids=ids, attention_mask=attention).last_hidden_state.float()
        features = hidden.new_zeros(len(prompts), length, hidden.shape[-1])
        mask = torch.zeros(len(prompts), length, dtype=torch.bool, device=hidden.device)
        for row, count in enumerate(counts.tolist()):  # right-padded by the tokenizer -> left-padded
            if count:
                features[row, length - count:] = hidden[row, :count]
                mask[row, length - count:] = True
        return features, mask
