"""Training state that arvis checkpoints itself, as safetensors and JSON: never as pickles.

accelerate stores objects registered with ``register_for_checkpointing`` as full pickles
(``custom_checkpoint_*.pkl``, loaded with ``weights_only=False``), so a crafted checkpoint could run code on
resume. The learning-rate schedules, the EMA and LeCam's averages are instead registered here by name: their
``state_dict()`` is split into tensors (``training_state.safetensors``) and plain values
(``training_state.json``), and read back the same way.

Keys: ``<object>/<path>`` with ``/`` between nested dict keys (dict keys must be strings without ``/``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Protocol

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

TENSORS_FILE = "training_state.safetensors"
VALUES_FILE = "training_state.json"


class Stateful(Protocol):
    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> Any: ...


class TrainingState:
    """Named objects (schedulers, EMA, LeCam) saved with every checkpoint and restored on resume."""

    def __init__(self) -> None:
        self.objects: dict[str, Stateful] = {}

    def register(self, name: str, obj: Stateful | None) -> None:
        """Adds ``obj`` under ``name`` (None is skipped, e.g. a run without EMA)."""
        if obj is None:
            return
        if "/" in name or name in self.objects:
            raise ValueError(f"training state name {name!r} is taken or contains '/'")
        self.objects[name] = obj

    def save(self, folder: Path) -> None:
        """Writes the two files into ``folder`` (main process only). The schedules and the EMA are the same on
        every process; LeCam's logit averages are each process's own (as upstream's, never all-reduced), so with
        several processes a resume gives every process the main process's averages."""
        tensors: dict[str, torch.Tensor] = {}
        values: dict[str, Any] = {}
        for name, obj in self.objects.items():
            values[name] = _split(obj.state_dict(), name, tensors)
        save_file({key: tensor.detach().cpu().contiguous() for key, tensor in tensors.items()},
                  str(folder / TENSORS_FILE))
        (folder / VALUES_FILE).write_text(json.dumps(values, indent=1) + "\n")

    def load(self, folder: Path) -> None:
        """Restores every registered object from ``folder``; a missing or extra object is an error naming it."""
        tensors_file, values_file = folder / TENSORS_FILE, folder / VALUES_FILE
        for file in (tensors_file, values_file):
            if not file.is_file():
                raise ValueError(f"checkpoint {folder} lacks {file.name}: it was not written by this version of "
                                 "arvis; resume from another checkpoint or start over with run.resume=never")
        try:
            tensors = load_file(str(tensors_file))
            values = json.loads(values_file.read_text())
        except (SafetensorError, OSError, json.JSONDecodeError) as error:
            raise ValueError(f"checkpoint {folder}: corrupt training state ({error})") from error
        if not isinstance(values, dict) or set(values) != set(self.objects):
            found = sorted(values) if isinstance(values, dict) else type(values).__name__
            raise ValueError(f"checkpoint {folder} holds the training state of {found}, but this run has "
                             f"{sorted(self.objects)}; it was written by a run with other settings")
        for name, obj in self.objects.items():
            obj.load_state_dict(_join(values[name], name, tensors))


def _split(value: Any, key: str, tensors: dict[str, torch.Tensor]) -> Any:
    """``value`` with every tensor moved into ``tensors`` (under its key path) and replaced by a reference."""
    if isinstance(value, torch.Tensor):
        tensors[key] = value
        return {"__tensor__": key}
    if isinstance(value, dict):
        bad = [k for k in value if not isinstance(k, str) or "/" in k]
        if bad:
            raise ValueError(f"training state {key}: dict keys must be strings without '/', got {bad[:3]}")
        return {k: _split(v, f"{key}/{k}", tensors) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_split(v, f"{key}/{i}", tensors) for i, v in enumerate(value)]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise ValueError(f"training state {key}: cannot store a {type(value).__name__} (only tensors, numbers, strings, "
                     "lists and dicts)")


def _join(value: Any, key: str, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(value, dict) and set(value) == {"__tensor__"}:
        if value["__tensor__"] not in tensors:
            raise ValueError(f"training state {key}: tensor {value['__tensor__']!r} is missing")
        return tensors[value["__tensor__"]]
    if isinstance(value, dict):
        return {k: _join(v, f"{key}/{k}", tensors) for k, v in value.items()}
    if isinstance(value, list):
        return [_join(v, f"{key}/{i}", tensors) for i, v in enumerate(value)]
    return value
