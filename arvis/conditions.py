"""The condition of a generation: class ids, a text prompt, a control map and an image, each optional.

Shapes: b batch, p prompt positions (the generator's fixed prompt length), e prompt feature width, c control
channels, H × W pixels.

One :class:`Condition` travels from the dataset (dict items) through batches, ``Generator.forward`` /
``step``, the samplers and guidance, to :class:`arvis.pipeline.Pipeline` and :func:`arvis.generate`. A
generator declares the fields it takes (:attr:`arvis.generators.base.Generator.condition_fields`) and its one
joint null condition for classifier-free guidance (:meth:`arvis.generators.base.Generator.null_condition`).
A bare (b,) long tensor is accepted wherever a condition is, as the class ids (:func:`as_condition`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch
from torch import Tensor

FIELDS = ("labels", "prompt", "control", "image")


@dataclasses.dataclass(frozen=True)
class Condition:
    """What a batch of b samples is conditioned on; ``None`` marks a field the batch does not carry.

    Attributes:
        labels: (b,) long class ids (a generator's null class id allowed).
        prompt: (b, p) long text-token ids, padded on the left to the generator's prompt length, or (b, p, e)
            float features of a frozen text encoder.
        prompt_mask: (b, p) bool, True at the prompt's real tokens; given exactly when ``prompt`` is. A row
            with no real token is the empty prompt (the null prompt of guidance).
        control: (b, c, H, W) float control map (a mask or an edge map, ControlAR).
        image: (b, 3, H, W) float image in [0, 1] (image-to-text, editing).
    """

    labels: Tensor | None = None
    prompt: Tensor | None = None
    prompt_mask: Tensor | None = None
    control: Tensor | None = None
    image: Tensor | None = None

    def __post_init__(self) -> None:
        if (self.prompt is None) != (self.prompt_mask is None):
            raise ValueError("a prompt needs its key-padding mask and a mask its prompt: give both prompt and "
                             "prompt_mask, or neither")
        values = {name: getattr(self, name) for name in (*FIELDS, "prompt_mask")}
        for name, value in values.items():
            if value is not None and not isinstance(value, Tensor):
                raise ValueError(f"condition field {name!r} must be a tensor, got {type(value).__name__}")
        given = {name: value for name, value in values.items() if value is not None}
        if not given:
            raise ValueError(f"a condition needs at least one of the fields {list(FIELDS)}")
        devices = {str(value.device) for value in given.values()}
        if len(devices) > 1:
            raise ValueError(f"every condition field must be on one device, got {sorted(devices)}; move them with "
                             "condition.to(device)")
        sizes = {name: value.shape[0] if value.ndim else None for name, value in given.items()}
        if len(set(sizes.values())) != 1 or None in sizes.values():
            raise ValueError(f"every condition field must hold the same batch of samples along dim 0, got {sizes}")

    @property
    def fields(self) -> frozenset[str]:
        """The names of the fields this condition carries (``prompt`` stands for the prompt and its mask)."""
        return frozenset(name for name in FIELDS if getattr(self, name) is not None)

    @property
    def batch_size(self) -> int:
        return self._tensors()[0][1].shape[0]

    @property
    def device(self) -> torch.device:
        return self._tensors()[0][1].device

    def _tensors(self) -> list[tuple[str, Tensor]]:
        return [(field.name, getattr(self, field.name)) for field in dataclasses.fields(self)
                if getattr(self, field.name) is not None]

    def map(self, function) -> Condition:
        """A condition with ``function`` applied to every tensor it carries."""
        return Condition(**{name: function(value) for name, value in self._tensors()})

    def select(self, rows: slice | Tensor | Sequence[int]) -> Condition:
        """The samples at ``rows`` (a slice, an index tensor or a list of indices)."""
        return self.map(lambda value: value[rows])

    def to(self, device: torch.device | str) -> Condition:
        return self.map(lambda value: value.to(device))

    def replace(self, **changes: Tensor | None) -> Condition:
        return dataclasses.replace(self, **changes)

    @staticmethod
    def cat(conditions: Sequence[Condition]) -> Condition:
        """Concatenates conditions with the same fields along the batch (guidance's [conditional; null])."""
        names = {tuple(name for name, _ in condition._tensors()) for condition in conditions}
        if len(names) != 1:
            raise ValueError(f"can only concatenate conditions carrying the same fields, got {sorted(names)}")
        return Condition(**{name: torch.cat([getattr(condition, name) for condition in conditions])
                            for name in next(iter(names))})


def as_condition(condition: Condition | Tensor) -> Condition:
    """``condition`` itself, or a (b,) long tensor of class ids as ``Condition(labels=...)``."""
    if isinstance(condition, Condition):
        return condition
    if isinstance(condition, Tensor):
        return Condition(labels=condition)
    raise ValueError(f"expected a Condition (or class ids as a (b,) torch.long tensor), got "
                     f"{type(condition).__name__}")

