"""A frozen text encoder from a local folder (LlamaGen t2i: FLAN-T5-XL), through transformers.

Prompt strings -> features (b, p, e) float32 and the key-padding mask (b, p) bool, padded on the left to the
generator's prompt length p as LlamaGen t2i pads its T5 features (the real tokens next to the image tokens),
the padding positions zeroed. The folder holds what ``transformers`` saves: ``config.json``, the weights as
``model.safetensors`` and the fast tokenizer's ``tokenizer.json`` (+ ``tokenizer_config.json``). Nothing in it can
run code: the config must be a plain T5 config (``model_type`` "t5", no ``auto_map``), it is parsed here and
handed to the model, only safetensors weights are read, the tokenizer is built from ``tokenizer.json`` alone
(never a tokenizer class the folder names), nothing is downloaded, and a folder holding Python files, pickled
weights or a PEFT adapter is refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from arvis.config import read_json
from arvis.transformers_folders import check_transformers_folder

REQUIRED_FILES = ("config.json", "model.safetensors", "tokenizer.json")


class FrozenTextEncoder:
    """A T5 encoder and its tokenizer, frozen (eval mode, no gradients). ``feature_dim`` is e (2048 for
    FLAN-T5-XL)."""

    def __init__(self, model, tokenizer) -> None:
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.tokenizer.padding_side = "right"  # encode() moves each row's real tokens to the end itself

    @classmethod
    def load(cls, folder: str | Path, *, device: str | torch.device = "cpu") -> FrozenTextEncoder:
        from transformers import PreTrainedTokenizerFast, T5Config, T5EncoderModel

        folder = check_transformers_folder(
            folder, what="text encoder", required=REQUIRED_FILES,
            example="a T5 encoder saved by transformers (save_pretrained(..., safe_serialization=True), e.g. "
                    "google/flan-t5-xl) and its fast tokenizer",
            keep="config.json, model.safetensors and the tokenizer's JSON files")
        header = read_json(folder / "config.json")
        if not isinstance(header, dict) or header.get("model_type") != "t5" or "auto_map" in header:
            raise ValueError(f"{folder / 'config.json'} must be a plain T5 config (model_type 't5', no auto_map)")
        config = T5Config.from_dict(header)
        model = T5EncoderModel.from_pretrained(folder, config=config, use_safetensors=True, local_files_only=True,
                                               trust_remote_code=False)
        settings = read_json(folder / "tokenizer_config.json") if (folder / "tokenizer_config.json").is_file() else {}
        pad = settings.get("pad_token", "<pad>") if isinstance(settings, dict) else "<pad>"
        if not isinstance(pad, str):
            raise ValueError(f"{folder / 'tokenizer_config.json'}: pad_token must be a string, got {pad!r}")
        tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(folder / "tokenizer.json"), pad_token=pad)
        if tokenizer.pad_token_id is None or tokenizer.convert_tokens_to_ids(pad) is None:
            raise ValueError(f"the tokenizer in {folder} has no padding token {pad!r}")
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
        if not isinstance(prompts, (list, tuple)) or not prompts or not all(isinstance(p, str) for p in prompts):
            raise ValueError(f"prompts must be a non-empty list of strings, got {prompts!r:.80}")
        batch = self.tokenizer(list(prompts), padding="longest", return_tensors="pt")
        if batch["input_ids"].shape[1] == 0:  # every prompt empty: the null prompt, nothing to encode
            return (torch.zeros(len(prompts), length, self.feature_dim, device=self.device),
                    torch.zeros(len(prompts), length, dtype=torch.bool, device=self.device))
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
