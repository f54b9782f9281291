"""Distilled Decoding of a VAR generator: an extra start position, then every scale driven by noise.

Shapes: b batch, l = sum(p_k ** 2) tokens, e code dimension (VAR's Cvae), c width, v vocabulary.

The sequence is [start, x_0 .. x_{l-1}] (DD1's extra 1x1 first scale: 1 + l positions). The start
position is the teacher's: class embedding + ``pos_start`` + position 0 + level 0, plus the "data"
noise-versus-data embedding (as upstream marks it; arvis 0.1 did not). Deviation: upstream gives the extra scale
new rows of the position and level tables; here the first scale's token reuses position 0 and level 0 of the
start position. Token position i holds
x_i (noise ε_i or code q_i) through the teacher's ``word_embed`` plus the teacher's position and level
embeddings of token i, plus the noise-versus-data embedding, and predicts token i itself. A position
attends to the start, to every position of strictly earlier scales, and to itself (not to the rest of
its own scale: under the flow-matching sampler a token depends on the earlier scales and its own noise
only). Blocks, AdaLN conditioning and the logits head are the teacher's; the regression head is an AdaLN
final layer (initialised as the teacher's) and a linear map to e. DD1 adds a per-layer projection of the
noise-versus-data embedding; here it is added once at the input.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from arvis.generators.base import GENERATORS
from arvis.generators.var import VARGenerator
from arvis.nn.adaln import AdaLNHead
from arvis.posttrain.distilled_decoding.model import DistilledConfig, DistilledGenerator, DistilledOutput


def earlier_scales_plus_self_mask(levels: Tensor) -> Tensor:
    """levels (l,), the scale of every token -> (1 + l, 1 + l) boolean mask over [start, tokens]: position i
    sees j if j's scale is earlier than i's or j == i; the start counts as scale -1."""
    levels = torch.cat([levels.new_full((1,), -1), levels])
    earlier = levels.unsqueeze(1) > levels.unsqueeze(0)
    return earlier | torch.eye(len(levels), dtype=torch.bool, device=levels.device)


@dataclasses.dataclass(frozen=True, kw_only=True)
class DistilledVARConfig(DistilledConfig):
    """A :class:`DistilledConfig` whose ``split`` counts scales (DD1: 5 for VAR-d16, 4 for d20 / d24; codes of 32)."""

    code_dim: int = 32
    split: int = 5


@GENERATORS.register
class DistilledVAR(DistilledGenerator):
    """One- or two-pass generator distilled from a :class:`VARGenerator`."""

    config_class = DistilledVARConfig
    teacher_class = VARGenerator

    def __init__(self, config: DistilledVARConfig) -> None:
        super().__init__(config)
        if config.code_dim != self.teacher.config.code_dim:
            raise ValueError(f"DistilledVARConfig.code_dim {config.code_dim} must be the teacher's code_dim "
                             f"{self.teacher.config.code_dim}")
        c = self.width
        self.regression_norm = AdaLNHead(c, c, norm_eps=self.teacher.config.norm_eps)
        self._boundaries = self.teacher.unit_boundaries()
        self._levels = [scale for scale, count in enumerate(self.teacher.unit_lengths()) for _ in range(count)]

    timestep_name = "scales"

    @classmethod
    def units_of(cls, teacher) -> int:
        return len(teacher.layout.shapes)

    @classmethod
    def default_split(cls, units: int) -> int:
        """Half the scales (5 of VAR-d16's 10)."""
        return max(1, units // 2)

    def boundary(self, timestep: int) -> int:
        return self._boundaries[timestep]

    def init_from_teacher(self, teacher: VARGenerator) -> None:
        super().init_from_teacher(teacher)
        self.regression_norm.load_state_dict(teacher.head_nm.state_dict())

    def forward(self, inputs: Tensor, is_data: Tensor, labels: Tensor) -> DistilledOutput:
        self.check_inputs(inputs, is_data, labels)
        teacher = self.teacher
        length, device = self.layout.length, inputs.device
        condition = teacher.condition_embedding(labels)
        start = teacher.start_tokens(condition)[:, :1] + teacher.position_embeddings(0, 1) \
            + teacher.level_embeddings(0, 1, device) + self.prefix_kind(condition)
        tokens = teacher.word_embed(inputs.to(teacher.word_embed.weight.dtype)) + teacher.position_embeddings(0, length) \
            + teacher.level_embeddings(0, length, device) + self.kind_embedding(is_data.long())
        mask = earlier_scales_plus_self_mask(torch.tensor(self._levels, device=device))
        hidden = teacher.trunk(torch.cat([start, tokens], dim=1), condition, mask=mask)[:, 1:]
        regression = self.regression_head(self.regression_norm(hidden.float(), condition.float())).float()
        return DistilledOutput(logits=teacher.logits(hidden, condition), regression=regression)


GENERATORS.add_preset(
    "dd-var-tiny",
    DistilledVARConfig(teacher={"type": "VARGenerator",
                                "config": GENERATORS.preset("var-tiny").replace(class_dropout=0.0).to_dict()},
                       code_dim=8, split=2),
    "distilled var-tiny for var-vae-tiny (made by DistilledVAR.from_teacher in practice)")
