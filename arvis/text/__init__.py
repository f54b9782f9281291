"""Text prompts: tokenizers that turn prompt strings into padded ids (and, later, frozen text encoders)."""

from arvis.text.tokenizer import TEXT_TOKENIZER_FILE, TextTokenizer

__all__ = ["TEXT_TOKENIZER_FILE", "TextTokenizer"]
