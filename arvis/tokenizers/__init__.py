"""Tokenizers: pixels <-> tokens (discrete ids or latent vectors). Importing this package registers every tokenizer
and its presets."""

from arvis.tokenizers import base, larp, restok, var, vq  # noqa: F401  (explicit imports register the classes and presets)
from arvis.tokenizers.base import TOKENIZERS, Tokenizer, TokenizerOutput, TokenLayout, TokenSpec
from arvis.tokenizers.larp import LARPConfig, LARPTokenizer
from arvis.tokenizers.var import VARTokenizer, VARTokenizerConfig
from arvis.tokenizers.vq import VQConfig, VQTokenizer

__all__ = ["LARPConfig", "LARPTokenizer", "TOKENIZERS", "Tokenizer", "TokenizerOutput", "TokenLayout", "TokenSpec",
           "VARTokenizer", "VARTokenizerConfig", "VQConfig", "VQTokenizer"]
