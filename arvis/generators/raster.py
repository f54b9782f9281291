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

Text-to-image (``condition="text"``, LlamaGen t2i): the prefix is the p prompt positions
(:class:`arvis.nn.prompt.PromptEmbedding`; upstream p = 120 FLAN-T5 positions, left-padded so the
real tokens sit next to the image), their RoPE rows zeroed like the class token's, and the
prompt's padding keys are hidden from every position.
"""

from __future__ import annotations

import dataclasses

from arvis.generators.base import GENERATORS
from arvis.generators.llama import (LlamaGeneratorConfig, NextTokenLlama, RotaryConfig, TextConditionConfig,
                                   TokenGridConfig, TokenGridLayout)
from arvis.nn.rope import RotaryTable, rope_table_2d

@dataclasses.dataclass(frozen=True, kw_only=True)
class RasterConfig(LlamaGeneratorConfig, RotaryConfig, TextConditionConfig, TokenGridConfig):
    """LlamaGen GPT configuration (the trunk's, every Llama generator's, the text and the grid fields are
    inherited); the defaults are GPT-B on VQ-16 at 256 px.

    Attributes:
        zero_prefix_rope: upstream's zeroed RoPE entry for the class prefix (see the module docstring).
    """

    zero_prefix_rope: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        self.check_text_fields()
        self.check_grid()


@GENERATORS.register
class RasterGenerator(TokenGridLayout, NextTokenLlama):
    """Raster-order AR transformer, class-conditional (LlamaGen c2i) or text-conditional (t2i)."""

    config_class = RasterConfig

    def __init__(self, config: RasterConfig) -> None:
        super().__init__(config, rope=RotaryTable(lambda: rope_table_2d(
            *config.token_grid, config.head_dim, config.rope_base,
            prefix_length=config.prefix_length, zero_prefix=config.zero_prefix_rope)))
        self.reset_parameters()


def _llamagen(num_layers: int, num_heads: int, dim: int) -> RasterConfig:
    return RasterConfig(num_layers=num_layers, num_heads=num_heads, dim=dim)


GENERATORS.add_preset("raster-tiny", RasterConfig(vocab_size=64, token_grid=(4, 4), num_classes=10, dim=32,
                                                  num_layers=2, num_heads=2, ffn_multiple_of=32),
                      "2-layer test model for vq-tiny (4x4 grid, 64 codes)")
GENERATORS.add_preset("raster-demo", RasterConfig(vocab_size=256, token_grid=(8, 8), num_classes=10, dim=128,
                                                  num_layers=4, num_heads=4, ffn_multiple_of=64,
                                                  token_dropout=0.0, resid_dropout=0.0, ffn_dropout=0.0),
                      "quickstart model for vq-demo on the built-in glyphs")
GENERATORS.add_preset("raster-t2i-tiny", RasterConfig(vocab_size=64, token_grid=(4, 4), dim=32, num_layers=2, num_heads=2,
                                                      ffn_multiple_of=32, condition="text", prompt_length=6,
                                                      text_vocab_size=32, text_feature_dim=16),
                      "2-layer text-to-image test model for vq-tiny (6 prompt positions, 32 text tokens)")
GENERATORS.add_preset("raster-t2i-t5-tiny", RasterConfig(vocab_size=64, token_grid=(4, 4), dim=32, num_layers=2,
                                                         num_heads=2, ffn_multiple_of=32, condition="text",
                                                         prompt_length=6, text_feature_dim=16),
                      "2-layer text-to-image test model taking 16-wide frozen-encoder features (6 positions)")
GENERATORS.add_preset("raster-t2i-demo", RasterConfig(vocab_size=256, token_grid=(8, 8), dim=128, num_layers=4,
                                                      num_heads=4, ffn_multiple_of=64, token_dropout=0.0,
                                                      resid_dropout=0.0, ffn_dropout=0.0, condition="text",
                                                      prompt_length=12, text_vocab_size=31, text_feature_dim=128),
                      "glyph-caption text-to-image model for vq-demo (12 prompt positions, a learned word table)")
GENERATORS.add_preset("llamagen-b", _llamagen(12, 12, 768), "LlamaGen GPT-B, 111M (VQ-16, 256 px)")
GENERATORS.add_preset("llamagen-l", _llamagen(24, 16, 1024), "LlamaGen GPT-L, 343M")
GENERATORS.add_preset("llamagen-xl", _llamagen(36, 20, 1280), "LlamaGen GPT-XL, 775M")
GENERATORS.add_preset("llamagen-xxl", _llamagen(48, 24, 1536), "LlamaGen GPT-XXL, 1.4B")
GENERATORS.add_preset("llamagen-3b", _llamagen(24, 32, 3200), "LlamaGen GPT-3B, 3.1B")
GENERATORS.add_preset("llamagen-t2i-xl", RasterConfig(num_layers=36, num_heads=20, dim=1280, condition="text",
                                                      prompt_length=120, text_feature_dim=2048),
                      "LlamaGen t2i GPT-XL, 775M + caption projection (FLAN-T5-XL features, 120 positions, 256 px)")
