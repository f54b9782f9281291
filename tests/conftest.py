"""Shared fixtures: tiny components and a saved tiny pipeline (tests/ only; no root conftest)."""

from __future__ import annotations

import pytest
import torch

from arvis.generators.base import GENERATORS
from arvis.pipeline import Pipeline
from arvis.samplers import NextScaleSettings, NextTokenSettings
from arvis.testing import randomize_parameters_
from arvis.tokenizers.base import TOKENIZERS


@pytest.fixture
def tiny_pipeline() -> Pipeline:
    torch.manual_seed(0)
    tokenizer = TOKENIZERS.build("vq-tiny").eval()
    generator = randomize_parameters_(GENERATORS.build("raster-tiny")).eval()
    return Pipeline(tokenizer, generator, NextTokenSettings(cfg_scale=2.0, top_k=8))


@pytest.fixture
def var_pipeline() -> Pipeline:
    """var-vae-tiny and var-tiny (16 px, scales 1-4, 30 tokens), random weights, VAR sampling at guidance 2."""
    torch.manual_seed(0)
    tokenizer = TOKENIZERS.build("var-vae-tiny").eval()
    generator = randomize_parameters_(GENERATORS.build("var-tiny"), std=0.05)
    generator.bind_tokenizer(tokenizer)
    return Pipeline(tokenizer, generator.eval(), NextScaleSettings(cfg_scale=2.0))


@pytest.fixture(scope="session")
def tiny_t5_folder(tmp_path_factory):
    """A randomly initialised 2-layer T5 encoder and a word-level tokenizer, saved as transformers saves them
    (built here: nothing is downloaded)."""
    from transformers import PreTrainedTokenizerFast, T5Config, T5EncoderModel

    from arvis.data.captions import caption_vocabulary
    from arvis.text import TextTokenizer

    folder = tmp_path_factory.mktemp("t5") / "tiny-t5"
    torch.manual_seed(0)
    T5EncoderModel(T5Config(vocab_size=40, d_model=16, d_kv=4, d_ff=32, num_layers=2, num_heads=2)) \
        .save_pretrained(folder, safe_serialization=True)
    words = TextTokenizer.word_level(caption_vocabulary()).tokenizer
    PreTrainedTokenizerFast(tokenizer_object=words, pad_token="[PAD]", unk_token="[UNK]").save_pretrained(folder)
    return folder
