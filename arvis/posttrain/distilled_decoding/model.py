"""The distilled generator of Distilled Decoding (DD1): noise sequence -> whole token sequence in one pass.

Liu et al., "Distilled Decoding 1", ICLR 2025, https://arxiv.org/abs/2412.17153 (upstream
``microsoft/distilled_decoding``, inference code only; see ``shared/reference/posttraining.md`` section 3).

Shapes: b batch, l tokens, e code dimension (= the noise dimension), v vocabulary, d model width.

A distilled generator wraps a copy of its teacher (``self.teacher``: the teacher's class, built from its
config, with the teacher's weights), never editing the teacher's code, and drives it only through its public
seam (its trunk, embeddings and heads). It adds what DD1 adds:

* a continuous input: every position is fed a vector of dimension e, either Gaussian noise ε_i or a code
  vector q_i ("data"), through a linear projection (raster: new, initialised by least squares to
  reproduce the teacher's token embeddings on the codebook; VAR: the teacher's ``word_embed``);
* a learned two-way noise-versus-data embedding added to every position;
* a regression head (code vectors, e) beside the teacher's logits head (v).

Position i's output predicts token i itself, from ε_{<=i} (raster: causal attention) or from the
earlier scales and itself (VAR: an extra start position, then "earlier scales plus self").

A *timestep* t says how many leading units are data: tokens for raster, scales for VAR
(:meth:`DistilledGenerator.boundary` turns it into a token count). One-step sampling runs at t = 0; the
second step runs at t = ``second_step`` (DD1's ``t_list``) with the first ``boundary(second_step)`` positions
fixed to the first step's output and the rest reset to the same noise. Output positions before
``boundary(split)`` (DD1's ``split_t``) are the codes of the logits' argmax, later ones the regression head's
continuous vectors, decoded unquantised. The two settings are separate, as upstream's: LlamaGen-L's published
``split_t`` 130 with ``t_list`` 0, 80 is ``split=130, second_step=80``; ``second_step`` None means ``split``
(the one setting arvis 0.1 had). Every position, the class / start position included, gets the noise-versus-data
embedding; the class / start position is data (``mark_prefix_as_data``; arvis 0.1 gave it none).

The codebook the noise maps onto (``code_vectors``, (v, e)) is copied from the tokenizer
(:meth:`bind_tokenizer`) and saved with the model; pipelines check that it is the tokenizer's.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from arvis.config import Config
from arvis.generators.base import Generator, build_wrapped, wrapped_spec
from arvis.nn.linear import Linear
from arvis.tokenizers.base import TokenLayout, TokenSpec


@dataclasses.dataclass(frozen=True, kw_only=True)
class DistilledConfig(Config):
    """What every distilled generator is made of; each kind subclasses it with its own defaults.

    Attributes:
        teacher: {"type": the teacher's class name, "config": its config as a dict}.
        code_dim: e, the code (and noise) dimension.
        split: the timestep from which the output is the regression head's (before it: the argmax codes;
            DD1's ``split_t``).
        second_step: the timestep of the second sampling step (DD1's second ``t_list`` entry); None: ``split``.
        mark_prefix_as_data: add the "data" noise-versus-data embedding at the class / start position (upstream);
            arvis 0.1 added none there.
    """

    saved_defaults = {"mark_prefix_as_data": False}

    teacher: dict[str, Any] = dataclasses.field(default_factory=dict)
    code_dim: int = 8
    split: int = 1
    second_step: int | None = None
    mark_prefix_as_data: bool = True


@dataclasses.dataclass
class DistilledOutput:
    """logits (b, l, v) float32 and regression (b, l, e) float32; position i is about token i."""

    logits: Tensor
    regression: Tensor


def teacher_spec(teacher: Generator) -> dict[str, Any]:
    """{"type": class name, "config": dict} of a teacher with every dropout and drop-path rate set to 0.

    The distilled model learns a deterministic map (noise and class -> tokens): label dropout would teach an
    unconditional mode it never uses, and dropping features of the noise inputs would make the target
    partly unpredictable. (DD1's released code does not say; this is arvis's choice.)
    """
    spec = wrapped_spec(teacher)
    return {**spec, "config": {key: 0.0 if key.endswith("dropout") or key == "drop_path_rate" else value
                               for key, value in spec["config"].items()}}


class DistilledGenerator(Generator):
    """Base class (not registered) of distilled generators; subclasses define the pass through the teacher."""

    unit = "distilled"
    samplers = ("distilled",)
    teacher_class: type[Generator]
    timestep_name: ClassVar[str]  # what a timestep counts: "tokens" (raster) or "scales" (VAR)

    def __init__(self, config) -> None:
        super().__init__(config)
        self.teacher = build_wrapped(config.teacher, self.teacher_class, type(self).__name__, "teacher")
        if self.teacher.condition_fields != {"labels"}:
            raise ValueError(f"{type(self).__name__} distils class-conditional generators; this teacher is "
                             f"conditioned on {sorted(self.teacher.condition_fields)}")
        units = f"{self.num_units} {self.timestep_name}"
        for name in ("split", "second_step"):
            value = getattr(config, name)
            if value is not None and not 1 <= value < self.num_units:
                raise ValueError(f"{type(self).__name__}: {name} {value} must lie in [1, {self.num_units - 1}] "
                                 f"({units})")
        self.register_buffer("code_vectors", torch.zeros(self.teacher.vocab_size, config.code_dim))
        self.kind_embedding = nn.Embedding(2, self.width)  # 0: noise, 1: data
        self.regression_head = Linear(self.width, config.code_dim)
        nn.init.normal_(self.regression_head.weight, std=0.02)
        nn.init.zeros_(self.regression_head.bias)

    # ---- what the wrapper exposes ------------------------------------------------------------------------

    @property
    def layout(self) -> TokenLayout:
        return self.teacher.layout

    @property
    def token_spec(self) -> TokenSpec:
        """The teacher's ids, and code vectors of width ``code_dim`` (what the sampler returns)."""
        return TokenSpec(self.layout, self.vocab_size, self.config.code_dim)

    @property
    def vocab_size(self) -> int:
        return self.teacher.vocab_size

    @property
    def num_classes(self) -> int:
        return self.teacher.num_classes

    @property
    def width(self) -> int:
        return self.teacher.config.dim

    @property
    def num_units(self) -> int:
        """Timesteps run from 0 to this: tokens (raster) or scales (VAR)."""
        return self.units_of(self.teacher)

    def boundary(self, timestep: int) -> int:
        """The number of leading data tokens at ``timestep``."""
        raise NotImplementedError

    @classmethod
    def default_split(cls, units: int) -> int:
        """The split timestep when the method's config names none, for a teacher of ``units`` timesteps."""
        raise NotImplementedError

    @property
    def second_step(self) -> int:
        """The timestep of the second sampling step (``config.second_step``, else ``config.split``)."""
        return self.config.second_step if self.config.second_step is not None else self.config.split

    def prefix_kind(self, reference: Tensor) -> Tensor:
        """(1, d) to add at the class / start position: the "data" embedding, or zeros for arvis 0.1's models."""
        if not self.config.mark_prefix_as_data:
            return reference.new_zeros(1, self.width)
        return self.kind_embedding.weight[1:2].to(reference.dtype)

    @classmethod
    def fit_config(cls, config, *, tokenizer, num_classes: int):
        raise ValueError(f"{cls.__name__} is made from a trained teacher (DistilledGenerator.from_teacher), "
                         "not trained from a preset")

    @classmethod
    def from_teacher(cls, teacher: Generator, tokenizer, *, split: int,
                     second_step: int | None = None) -> DistilledGenerator:
        """A distilled generator initialised from ``teacher`` (its weights copied) for ``tokenizer``'s codes."""
        if not isinstance(teacher, cls.teacher_class):
            raise ValueError(f"{cls.__name__} distils a {cls.teacher_class.__name__}, got {type(teacher).__name__}")
        codes = tokenizer.code_vectors()
        config = cls.config_class(teacher=teacher_spec(teacher), code_dim=codes.shape[1], split=split,
                                  second_step=second_step)
        model = cls(config).to(next(teacher.parameters()).device)
        result = model.teacher.load_state_dict(teacher.state_dict(), strict=False)  # dropped teacher parts are skipped
        if result.missing_keys:
            raise ValueError(f"the teacher lacks the copy's tensors {result.missing_keys}")
        model.bind_tokenizer(tokenizer)
        model.init_from_teacher(teacher)
        return model

    def no_weight_decay(self) -> set[str]:
        """The teacher copy's exemptions (VAR's position tables), under their names here."""
        exempt = self.teacher.no_weight_decay() if hasattr(self.teacher, "no_weight_decay") else set()
        return {f"teacher.{name}" for name in exempt}

    @classmethod
    def upgrade_state_dict(cls, state: dict[str, Tensor]) -> dict[str, Tensor]:
        """arvis 0.1 named the teacher copy ``trunk``; it is ``teacher`` now, with the teacher's own renames."""
        inner = cls.teacher_class.upgrade_state_dict(
            {key.removeprefix("trunk."): value for key, value in state.items() if key.startswith("trunk.")})
        outer = {key: value for key, value in state.items() if not key.startswith("trunk.")}
        return {**outer, **{f"teacher.{key}": value for key, value in inner.items()}}

    @classmethod
    def units_of(cls, teacher: Generator) -> int:
        """How many timesteps a model distilled from ``teacher`` has (tokens or scales)."""
        raise NotImplementedError

    def init_from_teacher(self, teacher: Generator) -> None:
        """Initialises the new parts from the teacher's weights (after the copy)."""
        nn.init.zeros_(self.kind_embedding.weight)

    def bind_tokenizer(self, tokenizer) -> None:
        """Copies the tokenizer's code vectors (the flow's Dirac locations and the data inputs)."""
        codes = tokenizer.code_vectors().detach()
        if codes.shape != self.code_vectors.shape:
            raise ValueError(f"the tokenizer's codebook is {tuple(codes.shape)}, this model expects "
                             f"{tuple(self.code_vectors.shape)}")
        with torch.no_grad():
            self.code_vectors.copy_(codes)
        self.teacher.bind_tokenizer(tokenizer)

    def check_tokenizer(self, tokenizer) -> None:
        """Raises ``ValueError`` unless the saved code vectors are ``tokenizer``'s (and the teacher copy agrees)."""
        codes = tokenizer.code_vectors().detach()
        if codes.shape != self.code_vectors.shape or not torch.allclose(codes.float().cpu(),
                                                                        self.code_vectors.float().cpu()):
            raise ValueError("the distilled generator's code vectors differ from this tokenizer's; it was distilled "
                             "for another tokenizer")
        self.teacher.check_tokenizer(tokenizer)

    # ---- passes --------------------------------------------------------------------------------------------

    def check_inputs(self, inputs: Tensor, is_data: Tensor, labels: Tensor) -> None:
        expected = (self.layout.length, self.config.code_dim)
        if inputs.ndim != 3 or tuple(inputs.shape[1:]) != expected or not inputs.is_floating_point():
            raise ValueError(f"expected float inputs (batch, {expected[0]}, {expected[1]}) (noise or code vectors), "
                             f"got {tuple(inputs.shape)} {inputs.dtype}")
        if is_data.shape != inputs.shape[:2] or is_data.dtype != torch.bool:
            raise ValueError(f"is_data must be a bool tensor {tuple(inputs.shape[:2])}, got "
                             f"{tuple(is_data.shape)} {is_data.dtype}")
        self.check_labels(labels)

    def forward(self, inputs: Tensor, is_data: Tensor, labels: Tensor) -> DistilledOutput:
        """inputs (b, l, e) noise or code vectors, is_data (b, l) bool, labels (b,) -> :class:`DistilledOutput`."""
        raise NotImplementedError

    def timestep_inputs(self, noise: Tensor, codes: Tensor, timestep: int) -> tuple[Tensor, Tensor]:
        """noise (b, l, e) and codes (b, l, e) -> inputs with the first ``boundary(timestep)`` positions
        taken from ``codes`` and the rest from ``noise``, and is_data (b, l) bool."""
        count = self.boundary(timestep)
        is_data = torch.zeros(noise.shape[:2], dtype=torch.bool, device=noise.device)
        is_data[:, :count] = True
        return torch.where(is_data.unsqueeze(-1), codes.to(noise.dtype), noise), is_data

    def assemble(self, output: DistilledOutput) -> Tensor:
        """-> (b, l, e) codes: the argmax code before ``boundary(split)``, the regression output from there on."""
        count = self.boundary(self.config.split)
        chosen = self.code_vectors[output.logits.argmax(-1)].float()
        return torch.cat([chosen[:, :count], output.regression[:, count:].float()], dim=1)

    def step(self, tokens, labels, cache):
        raise ValueError("a distilled generator has no step-by-step decoding; sample it with DistilledSampler")

    def new_cache(self, batch_size: int):
        raise ValueError("a distilled generator has no KV cache; sample it with DistilledSampler")
