"""Text prompts: a tokenizer that turns prompt strings into padded ids, or a frozen encoder into features."""

from arvis.text.encoder import FrozenTextEncoder
from arvis.text.tokenizer import TEXT_TOKENIZER_FILE, TextTokenizer

__all__ = ["TEXT_TOKENIZER_FILE", "FrozenTextEncoder", "TextTokenizer"]
