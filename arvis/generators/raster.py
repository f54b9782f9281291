"""LlamaGen: raster-order next-token prediction with a Llama transformer.

Sun et al., "Autoregressive Model Beats Diffusion: Llama for Scalable Image
Generation", 2024, https://arxiv.org/abs/2406.06525 (upstream FoundationVision/LlamaGen).

Shapes: b batch, l tokens in the grid (rows*cols, row-major), n positions in a step,
d model width, v vocabulary.

The sequence is [class token, t_0, ..., t_{l-2}]; position i predicts t_i. The class
embedding is a single prefix token (label dropout 0.1 teaches the null class for
CFG), positions use 2D RoPE over the token grid, and the output head is
zero-initialised as upstream. ``zero_prefix_rope=True`` reproduces upstream's
zeroed RoPE entry for the prefix (its q and k become zero; the class reaches the
image tokens only through V), which the released checkpoints need.
"""

from __future__ import annotations

import dataclasses

from torch import Tensor

from arvis.config import Config
from arvis.generators.base import GENERATORS
from arvis.generators.llama import PREFIX_LENGTH, NextTokenLlama
from arvis.nn.rope import rope_table_2d
from arvis.tokenizers.base import TokenLayout

@dataclasses.dataclass(frozen=True, kw_only=True)
class RasterConfig(Config):
    """LlamaGen GPT configuration; defaults are GPT-B on VQ-16 at 256 px."""

    vocab_size: int = 16384
    token_grid: tuple[int, int] = (16, 16)  # (rows, cols) of the tokenizer's grid
    num_classes: int = 1000
    dim: int = 768
    num_layers: int = 12
    num_heads: int = 12
    num_kv_heads: int | None = None  # grouped-query attention when smaller than num_heads
    ffn_multiple_of: int = 256  # SwiGLU width = 2/3·4·dim rounded up to this
    norm_eps: float = 1e-5
    rope_base: float = 10000.0
    zero_prefix_rope: bool = True  # upstream quirk, see module docstring
    class_dropout: float = 0.1
    token_dropout: float = 0.1  # dropout on input embeddings
    resid_dropout: float = 0.1
    ffn_dropout: float = 0.1
    attn_dropout: float = 0.0
    initializer_range: float = 0.02

    def __post_init__(self) -> None:
        if self.dim % self.num_heads:
            raise ValueError(f"dim ({self.dim}) must be divisible by num_heads ({self.num_heads})")
        if (self.dim // self.num_heads) % 4:
            raise ValueError(f"head dim dim/num_heads ({self.dim // self.num_heads}) must be divisible by 4 for 2D RoPE")
        if min(self.token_grid) < 1 or self.vocab_size < 2 or self.num_classes < 1:
            raise ValueError("token_grid sides, vocab_size (>= 2) and num_classes must be positive")


@GENERATORS.register
class RasterGenerator(NextTokenLlama):
    """Class-conditional raster-order AR transformer (LlamaGen c2i)."""

    config_class = RasterConfig

    def __init__(self, config: RasterConfig) -> None:
        super().__init__(config)
        self.reset_parameters()

    @property
    def layout(self) -> TokenLayout:
        return TokenLayout((tuple(self.config.token_grid),))

    @classmethod
    def fit_config(cls, config: RasterConfig, *, tokenizer, num_classes: int) -> RasterConfig:
        """Returns ``config`` with the grid, vocabulary and classes of a tokenizer and dataset."""
        layout, vocab_size = tokenizer.layout, tokenizer.vocab_size
        if len(layout.shapes) != 1 or len(layout.shapes[0]) != 2:
            raise ValueError(f"the raster generator needs a single 2D token grid, got layout {layout.shapes}")
        return dataclasses.replace(config, token_grid=tuple(layout.shapes[0]), vocab_size=vocab_size,
                                   num_classes=num_classes)

    def build_rope_table(self) -> Tensor:
        """2D RoPE over the token grid after the class prefix (zeroed for the prefix as upstream, by default)."""
        config = self.config
        return rope_table_2d(*config.token_grid, config.dim // config.num_heads, config.rope_base,
                             prefix_length=PREFIX_LENGTH, zero_prefix=config.zero_prefix_rope)


def _llamagen(num_layers: int, num_heads: int, dim: int) -> RasterConfig:
    return RasterConfig(num_layers=num_layers, num_heads=num_heads, dim=dim)


GENERATORS.add_preset("raster-tiny", RasterConfig(vocab_size=64, token_grid=(4, 4), num_classes=10, dim=32,
                                                  num_layers=2, num_heads=2, ffn_multiple_of=32),
                      "2-layer test model for vq-tiny (4x4 grid, 64 codes)")
GENERATORS.add_preset("raster-demo", RasterConfig(vocab_size=256, token_grid=(8, 8), num_classes=10, dim=128,
                                                  num_layers=4, num_heads=4, ffn_multiple_of=64,
                                                  token_dropout=0.0, resid_dropout=0.0, ffn_dropout=0.0),
                      "quickstart model for vq-demo on the built-in glyphs")
GENERATORS.add_preset("llamagen-b", _llamagen(12, 12, 768), "LlamaGen GPT-B, 111M (VQ-16, 256 px)")
GENERATORS.add_preset("llamagen-l", _llamagen(24, 16, 1024), "LlamaGen GPT-L, 343M")
GENERATORS.add_preset("llamagen-xl", _llamagen(36, 20, 1280), "LlamaGen GPT-XL, 775M")
GENERATORS.add_preset("llamagen-xxl", _llamagen(48, 24, 1536), "LlamaGen GPT-XXL, 1.4B")
GENERATORS.add_preset("llamagen-3b", _llamagen(24, 32, 3200), "LlamaGen GPT-3B, 3.1B")
