"""Distilled Decoding of a raster (LlamaGen) generator: causal attention over [class token, x_0 .. x_{l-1}].

Shapes: b batch, l tokens, e code dimension, d width, v vocabulary.

The teacher's sequence is [class, t_0, ..., t_{l-2}] with position i + 1 predicting t_{i+1}; here position
i + 1 holds x_i (noise ε_i or the code q_i) and predicts t_i itself, so with causal attention token i
sees ε_{<=i}, which determines it under the flow-matching sampler. RoPE, blocks, norm and logits head are
the teacher's. The teacher's token embedding table is dropped (``remove_token_embeddings``): inputs
are continuous, through ``input_proj`` (Linear e -> d), initialised by least squares so that a code
vector's projection matches the teacher's embedding of its id (DD1's ``tok_embeddings`` is a new linear layer
with N(0, 0.02) weights; the least-squares start is arvis's choice, DD1 never released its training code). The
regression head is upstream's PixArt final layer (``regression_head="final_layer"``): a LayerNorm without affine
parameters of the trunk's hidden state before its final RMSNorm, modulated by a learned table plus the class
embedding, then a linear map to e. arvis 0.1 used a linear map of the normed state (``"linear"``), which the
folders it saved keep.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import torch
from torch import Tensor, nn

from arvis.generators.base import GENERATORS
from arvis.generators.raster import RasterGenerator
from arvis.nn.adaln import TableModulatedHead
from arvis.nn.attention import causal_mask
from arvis.nn.linear import Linear
from arvis.posttrain.distilled_decoding.model import DistilledConfig, DistilledGenerator, DistilledOutput


@dataclasses.dataclass(frozen=True, kw_only=True)
class DistilledRasterConfig(DistilledConfig):
    """A :class:`DistilledConfig` whose ``split`` counts tokens (DD1: 80 of 256 for LlamaGen-B; codes of 8).

    ``regression_head``: ``"final_layer"`` (upstream's PixArt final layer) or ``"linear"`` (arvis 0.1).
    """

    saved_defaults = {**DistilledConfig.saved_defaults, "regression_head": "linear"}

    code_dim: int = 8
    split: int = 80
    regression_head: Literal["linear", "final_layer"] = "final_layer"


@GENERATORS.register
class DistilledRaster(DistilledGenerator):
    """One- or two-pass generator distilled from a :class:`RasterGenerator`."""

    config_class = DistilledRasterConfig
    teacher_class = RasterGenerator

    def __init__(self, config: DistilledRasterConfig) -> None:
        super().__init__(config)
        self.teacher.remove_token_embeddings()  # inputs are continuous (see the module docstring)
        self.input_proj = Linear(config.code_dim, self.width)
        if config.regression_head == "final_layer":
            self.regression_head = TableModulatedHead(self.width, config.code_dim)
            nn.init.normal_(self.regression_head.linear.weight, std=0.02)
            nn.init.zeros_(self.regression_head.linear.bias)

    timestep_name = "tokens"

    @classmethod
    def units_of(cls, teacher) -> int:
        return teacher.layout.length

    @classmethod
    def default_split(cls, units: int) -> int:
        """5/16 of the tokens (DD1's 80 of LlamaGen's 256)."""
        return max(1, units * 5 // 16)

    def boundary(self, timestep: int) -> int:
        return timestep

    def init_from_teacher(self, teacher: RasterGenerator) -> None:
        """``input_proj`` = the least-squares fit of the teacher's embeddings E (v, d) from [codes, 1] (v, e+1)."""
        super().init_from_teacher(teacher)
        codes = self.code_vectors.double()
        design = torch.cat([codes, codes.new_ones(codes.shape[0], 1)], dim=1)
        table = teacher.embed_tokens(torch.arange(teacher.vocab_size, device=codes.device)).detach()  # (v, d)
        solution = torch.linalg.lstsq(design.cpu(), table.double().cpu()).solution
        with torch.no_grad():
            self.input_proj.weight.copy_(solution[:-1].T)
            self.input_proj.bias.copy_(solution[-1])

    def forward(self, inputs: Tensor, is_data: Tensor, labels: Tensor) -> DistilledOutput:
        self.check_inputs(inputs, is_data, labels)
        teacher = self.teacher
        x = self.input_proj(inputs.to(self.input_proj.weight.dtype)) + self.kind_embedding(is_data.long())
        prefix = teacher.condition_embedding(labels)  # (b, 1, d)
        x = teacher.trunk(torch.cat([prefix + self.prefix_kind(prefix), x], dim=1),
                          mask=causal_mask(x.shape[1] + 1, device=x.device))[:, 1:]
        if self.config.regression_head == "final_layer":
            regression = self.regression_head(x, prefix[:, 0])  # the state before the teacher's RMSNorm
        else:
            regression = self.regression_head(teacher.normed(x))
        return DistilledOutput(logits=teacher.logits(x), regression=regression.float())


GENERATORS.add_preset(
    "dd-raster-tiny",
    DistilledRasterConfig(teacher={"type": "RasterGenerator",
                                   "config": GENERATORS.preset("raster-tiny").replace(class_dropout=0.0).to_dict()},
                          code_dim=4, split=5),
    "distilled raster-tiny for vq-tiny (made by DistilledRaster.from_teacher in practice)")
