"""The package installs under its own import name and never shadows HuggingFace ``tokenizers``."""

from pathlib import Path

import arvis

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_import_tokenizers_finds_huggingface_not_arvis():
    import tokenizers

    location = Path(tokenizers.__file__).resolve()
    assert REPO_ROOT not in location.parents, f"`import tokenizers` found {location}, inside the repository"
    assert hasattr(tokenizers, "Tokenizer") and hasattr(tokenizers, "pre_tokenizers")


def test_transformers_fast_tokenizer_imports():
    from transformers import PreTrainedTokenizerFast  # imports tokenizers.pre_tokenizers by absolute name

    assert PreTrainedTokenizerFast.__module__.startswith("transformers")


def test_public_api_is_explicit():
    assert set(arvis.__all__) == {"Pipeline", "__version__", "build", "caption", "generate", "interleave", "list_presets",
                                  "load"}
    presets = arvis.list_presets()
    assert "vq-tiny" in presets["tokenizer"] and "raster-tiny" in presets["generator"]
