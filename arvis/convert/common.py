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
import pickle
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import torch
from torch import Tensor

from arvis.modeling import raise_on_state_mismatch

__all__ = ["Source", "chunk", "count_indices", "load_checkpoint", "load_weights_only", "map_state_dict",
           "require"]


def load_weights_only(path: Path, safe_globals: Sequence[type] = ()) -> object:
    """``torch.load(path, map_location="cpu", weights_only=True)``, allowing only ``safe_globals`` besides
    tensors and containers; a file that needs other pickled objects raises ``ValueError`` saying so."""
    try:
        with torch.serialization.safe_globals(list(safe_globals)):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise ValueError(
            f"{path} needs pickled Python objects beyond tensors, which torch.load(weights_only=True) refuses; "
            f"arvis does not unpickle arbitrary objects. Re-save the file as a plain state dict "
            f"(torch.save(model.state_dict(), ...)) or as safetensors. ({str(error).splitlines()[0]})"
        ) from error
    except (RuntimeError, EOFError, OSError) as error:
        raise ValueError(f"cannot read checkpoint {path}: {error}") from error


def load_checkpoint(path: str | Path) -> dict[str, Tensor]:
    """Reads a flat upstream state dict from ``.safetensors`` (by suffix) or a torch pickle (``.pth``, ``.pt``, ...).

    Pickles are read with ``torch.load(map_location="cpu", weights_only=True)``: a file that needs
    arbitrary pickled objects is refused with a ``ValueError`` (it is never unpickled in full).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            state = load_file(str(path))
        except (SafetensorError, OSError) as error:
            raise ValueError(f"cannot read safetensors checkpoint {path}: {error}") from error
    else:
        state = load_weights_only(path)
    if not isinstance(state, Mapping):
        raise ValueError(f"{path} holds a {type(state).__name__}, not a state dict of tensors")
    not_tensors = sorted(str(key) for key, value in state.items() if not isinstance(value, Tensor))
    if not_tensors:
        raise ValueError(f"{path} is not a flat state dict: entries {not_tensors} are not tensors")
    return dict(state)


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
