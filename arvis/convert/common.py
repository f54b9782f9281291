"""Shared pieces of the checkpoint converters: safe loading, strict key mapping, shape-based config inference.

A converter reads an upstream state dict, infers the architecture from tensor shapes, builds the
arvis component and fills it through :func:`map_state_dict`. The mapping is written from the
*target's* side: for every arvis tensor a rule names the upstream tensor it comes from (and an
optional transform, e.g. one third of a fused qkv conv), so a missing upstream tensor is named
by its upstream key, every upstream tensor that no rule consumes is reported as unexpected
unless it matches an ``ignore`` pattern (upstream-only buffers), and every shape is checked.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable, Mapping

import torch
from torch import Tensor

from arvis.modeling import raise_on_state_mismatch
from arvis.torch_files import load_state_dict_file, load_weights_only

__all__ = ["Source", "chunk", "count_indices", "load_checkpoint", "load_weights_only", "map_state_dict",
           "require"]

load_checkpoint = load_state_dict_file  # an upstream checkpoint: a flat state dict, read without unpickling code


@dataclasses.dataclass(frozen=True)
class Source:
    """Where one target tensor comes from: upstream ``key``, optionally passed through ``transform``.

    ``what`` describes the transform in error messages (e.g. "q third of the fused qkv").
    """

    key: str
    transform: Callable[[Tensor], Tensor] | None = None
    what: str = ""


def chunk(index: int, parts: int, dim: int = 0) -> Callable[[Tensor], Tensor]:
    """Transform taking part ``index`` of ``parts`` equal chunks along ``dim`` (for fused projections)."""

    def take(tensor: Tensor) -> Tensor:
        if tensor.shape[dim] % parts:
            raise ValueError(f"cannot split dim {dim} of size {tensor.shape[dim]} into {parts} equal parts")
        return tensor.chunk(parts, dim=dim)[index].contiguous()

    return take


def map_state_dict(source: Mapping[str, Tensor], expected: Mapping[str, torch.Size | tuple[int, ...]],
                   rule: Callable[[str], Source], *, ignore: Iterable[str] = (),
                   name: str = "checkpoint") -> dict[str, Tensor]:
    """Builds the target state dict ``{target key: tensor}`` for the keys (and shapes) of ``expected``.

    Args:
        source: upstream state dict.
        expected: target keys and shapes (``model.state_dict()`` or a subset of it).
        rule: target key -> :class:`Source` naming the upstream tensor (and transform) it is built from.
        ignore: regular expressions (full match) of upstream keys that are dropped on purpose.
        name: the checkpoint's name (file) for error messages.

    Raises:
        ValueError naming every missing upstream tensor, every unexpected (unconsumed, not ignored)
        upstream tensor and every tensor whose shape differs from the target's.
    """
    patterns = [re.compile(pattern) for pattern in ignore]
    target: dict[str, Tensor] = {}
    used: set[str] = set()
    missing: list[str] = []
    misshapen: list[str] = []
    for key, shape in expected.items():
        origin = rule(key)
        used.add(origin.key)
        if origin.key not in source:
            missing.append(f"{origin.key!r} (for {key!r})")
            continue
        tensor = source[origin.key]
        label = f"{origin.key!r}" + (f" ({origin.what})" if origin.what else "")
        if origin.transform is not None:
            try:
                tensor = origin.transform(tensor)
            except ValueError as error:
                misshapen.append(f"{label} {tuple(source[origin.key].shape)}: {error}")
                continue
        if tuple(tensor.shape) != tuple(shape):
            misshapen.append(f"{label} gives {tuple(tensor.shape)} but {key!r} needs {tuple(shape)}")
            continue
        target[key] = tensor
    unexpected = sorted(key for key in source
                        if key not in used and not any(pattern.fullmatch(key) for pattern in patterns))
    raise_on_state_mismatch(f"{name} does not map onto the arvis model", missing=missing, unexpected=unexpected,
                            misshapen=misshapen)
    return target


def require(source: Mapping[str, Tensor], key: str, name: str, purpose: str) -> Tensor:
    """``source[key]``, or a ``ValueError`` naming the tensor and what it was needed for."""
    if key not in source:
        raise ValueError(f"{name} lacks the tensor {key!r}, needed to infer {purpose}")
    return source[key]


def count_indices(source: Mapping[str, Tensor], prefix: str) -> int:
    """Number of consecutive integer children ``{prefix}.{i}.`` (0, 1, ...) among the keys; gaps raise."""
    pattern = re.compile(re.escape(prefix) + r"\.(\d+)\.")
    found = {int(match.group(1)) for key in source if (match := pattern.match(key))}
    if found and found != set(range(len(found))):
        raise ValueError(f"the children of {prefix!r} are not numbered 0..{len(found) - 1}: {sorted(found)}")
    return len(found)
