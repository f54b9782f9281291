"""Component base: an ``nn.Module`` that owns one config and saves as ``config.json`` + safetensors.

A saved component is a folder::

    config.json        {"type": <class name>, "kind": "tokenizer"|"generator", "arvis_version", "config": {...}}
    model.safetensors  the state dict (persistent buffers included)

Loading is strict both ways: the config must parse without unknown keys, and every
tensor must be present with the right shape, with none left over. We write this
small mechanism ourselves rather than use ``PyTorchModelHubMixin`` because arvis
needs the class name in the file to rebuild any registered component from a path,
strict loading by default (the mixin defaults to ``strict=False``), and error
messages that name the missing file or tensor.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterator, TypeVar

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_model
from torch import Tensor, nn
from torch.nn.modules.module import register_module_parameter_registration_hook

from arvis.config import Config, read_json
from arvis.folders import json_object_or_none, replace_folder
from arvis.nn.quantized import Int8Linear
from arvis.registry import Registry

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
PICKLED_WEIGHTS = ("*.bin", "*.pt", "*.pth", "*.pkl", "*.pickle", "*.ckpt")

ComponentT = TypeVar("ComponentT", bound="Component")


class Component(nn.Module):
    """Base of tokenizers and generators: holds ``self.config`` and round-trips through a folder."""

    config_class: ClassVar[type[Config]]
    kind: ClassVar[str] = "component"
    registry: ClassVar[Registry]  # set by each kind's base class (Tokenizer, Generator)

    def __init__(self, config: Config) -> None:
        super().__init__()
        if not isinstance(config, self.config_class):
            raise ValueError(
                f"{type(self).__name__} expects a {self.config_class.__name__}, got {type(config).__name__}"
            )
        self.config = config

    def save_pretrained(self, path: str | Path) -> Path:
        """Writes ``config.json`` and ``model.safetensors`` as folder ``path``, atomically.

        An existing arvis save at ``path`` is replaced; a non-empty folder that is not one, or that also holds
        files arvis did not write, is refused (see :mod:`arvis.folders`).
        """
        from arvis import __version__

        if any(isinstance(module, Int8Linear) for module in self.modules()):
            raise ValueError(f"this {type(self).__name__} holds int8 weights, an inference form that cannot be "
                             "saved; save the float model it was quantized from")
        path = Path(path)
        header = {"type": type(self).__name__, "kind": self.kind, "arvis_version": __version__,
                  "config": self.config.to_dict()}
        with replace_folder(path, self.kind, legacy_component_rule(self.kind)) as staging:
            save_model(self, str(staging / WEIGHTS_FILE))
            (staging / CONFIG_FILE).write_text(json.dumps(header, indent=2) + "\n")
        return path

    @classmethod
    def from_pretrained(
        cls: type[ComponentT], path: str | Path, *, device: str | torch.device = "cpu",
        dtype: torch.dtype | None = None,
    ) -> ComponentT:
        """Loads a component folder written by :meth:`save_pretrained` (in eval mode).

        Called on a kind's base class (``Tokenizer.from_pretrained``), the concrete class
        is looked up in that kind's registry by the name in ``config.json``; called on a
        concrete class, the folder must hold that class.
        """
        path = Path(path)
        header = read_component_header(path)
        if header["kind"] != cls.kind:
            raise ValueError(f"{path} holds a {header['kind']}, not a {cls.kind}")
        target = cls.registry.get_class(header["type"])
        if not issubclass(target, cls):
            raise ValueError(f"{path} holds a {header['type']}, which is not a {cls.__name__}")
        config = target.config_class.from_saved(header["config"])
        with parameters_on_meta():  # no random init to throw away; buffers (some not saved) are built as usual
            model = target(config)
        state = target.upgrade_state_dict(load_weights(path / WEIGHTS_FILE))
        load_state_strict(model, state, path / WEIGHTS_FILE, assign=True)
        model.to(device=device, dtype=dtype)
        return model.eval()

    @classmethod
    def upgrade_state_dict(cls, state: dict[str, Tensor]) -> dict[str, Tensor]:
        """The state dict of a folder saved by an earlier version, with the tensors under today's names
        (identity by default; a class whose submodules moved renames them here)."""
        return state

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


@contextmanager
def parameters_on_meta() -> Iterator[None]:
    """Modules built inside get their parameters on the meta device (no storage, no initialisation cost)
    while buffers are built as usual; fill them with ``load_state_strict(..., assign=True)``.

    Unlike ``accelerate.init_empty_weights``, which wraps every registered parameter in a new object,
    a parameter that is already on the meta device is kept, so weights tied by assignment
    (``head.weight = embed.weight``) stay tied. The hook is process-wide while the block runs.
    """
    def to_meta(module: nn.Module, name: str, parameter: nn.Parameter | None) -> nn.Parameter | None:
        if parameter is None or parameter.is_meta:
            return None
        return nn.Parameter(parameter.to("meta"), requires_grad=parameter.requires_grad)

    handle = register_module_parameter_registration_hook(to_meta)
    try:
        yield
    finally:
        handle.remove()


@contextmanager
def eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """Runs the block with ``module`` in eval mode and puts it back in the mode it was in (also on error)."""
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)


def legacy_component_rule(kind: str) -> Callable[[Path], set[str] | None]:
    """Recognises a ``kind`` ("tokenizer", "generator") folder saved before manifests existed: its files
    (``config.json`` with arvis's header of that kind, and ``model.safetensors``), or None if it is not one."""
    def files(folder: Path) -> set[str] | None:
        header = json_object_or_none(folder / CONFIG_FILE)
        if header is None or not {"type", "kind", "config", "arvis_version"} <= set(header) or header["kind"] != kind:
            return None
        return {CONFIG_FILE, WEIGHTS_FILE}

    return files


def read_component_header(path: Path) -> dict[str, Any]:
    """Reads and validates a component folder's ``config.json``."""
    if not path.is_dir():
        raise FileNotFoundError(f"component folder {path} does not exist")
    header = read_json(path / CONFIG_FILE)
    missing = {"type", "kind", "config"} - set(header) if isinstance(header, dict) else {"type"}
    if missing:
        raise ValueError(f"{path / CONFIG_FILE} is not an arvis component config (missing {sorted(missing)})")
    return header


def load_weights(file: Path) -> dict[str, torch.Tensor]:
    if not file.is_file():
        pickles = sorted(path.name for pattern in PICKLED_WEIGHTS for path in file.parent.glob(pattern))
        if pickles:
            raise FileNotFoundError(f"missing weights file {file}; the folder holds {pickles}, pickled weights, which "
                                    "arvis never reads (unpickling can run code): convert them to safetensors "
                                    "(arvis convert, or save_pretrained() of the loaded component)")
        raise FileNotFoundError(f"missing weights file {file}; save the component with save_pretrained()")
    try:
        state = load_file(str(file))
    except (SafetensorError, OSError) as error:
        raise ValueError(f"corrupt weights file {file}: {error}") from error
    return {name: aligned(tensor) for name, tensor in state.items()}


def aligned(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor``, or a copy of it in storage of its own when its data does not start at a 64-byte boundary.

    safetensors hands out tensors at their offsets in the file; the CPU's float32 products
    (:func:`arvis.nn.linear.linear`) sum in an order that depends on where the weights start, so a model loaded
    with unaligned weights would compute other last bits than the model that was saved. The allocator's
    tensors always start at such a boundary.
    """
    return tensor if tensor.data_ptr() % 64 == 0 else tensor.clone()


def raise_on_state_mismatch(what: str, *, missing: list[str], unexpected: list[str], misshapen: list[str],
                            misshapen_label: str = "misshapen tensors") -> None:
    """Raises ``ValueError("<what>: missing tensors [...]; unexpected tensors [...]; <misshapen_label> [...]")``
    naming every non-empty kind of problem; returns when there is none."""
    problems = [f"{label} {names}" for label, names in (("missing tensors", missing),
                                                        ("unexpected tensors", unexpected),
                                                        (misshapen_label, misshapen)) if names]
    if problems:
        raise ValueError(f"{what}: " + "; ".join(problems))


def load_state_strict(model: nn.Module, state: dict[str, torch.Tensor], source: Path | str, *,
                      assign: bool = False) -> None:
    """Loads ``state`` into ``model``, naming every missing, extra or misshapen tensor.

    Tensors that share storage were saved once by ``safetensors.torch.save_model``; they
    are re-tied here by loading into every alias. With ``assign`` the tensors replace the model's own
    (which may be on the meta device); shared parameters are then tied again to one object.
    """
    expected = model.state_dict(keep_vars=True)
    aliases = _shared_aliases(model)
    for name, canonical in aliases.items():
        if name not in state and canonical in state:
            state[name] = state[canonical]
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong_shape = sorted(
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in set(expected) & set(state) if state[k].shape != expected[k].shape
    )
    raise_on_state_mismatch(f"weights in {source} do not match {type(model).__name__}", missing=missing,
                            unexpected=unexpected, misshapen=wrong_shape, misshapen_label="wrong shapes")
    model.load_state_dict(state, strict=True, assign=assign)
    if assign:
        for name, canonical in aliases.items():
            _set_tensor(model, name, _get_tensor(model, canonical))


def _get_tensor(model: nn.Module, name: str) -> torch.Tensor:
    owner, _, attribute = name.rpartition(".")
    return getattr(model.get_submodule(owner) if owner else model, attribute)


def _set_tensor(model: nn.Module, name: str, tensor: torch.Tensor) -> None:
    owner, _, attribute = name.rpartition(".")
    module = model.get_submodule(owner) if owner else model
    if isinstance(tensor, nn.Parameter):
        module.register_parameter(attribute, tensor)
    else:  # a state-dict entry, so a persistent buffer
        module.register_buffer(attribute, tensor)


def _shared_aliases(model: nn.Module) -> dict[str, str]:
    """Maps each parameter name that shares its tensor with an earlier one to that earlier name."""
    seen: dict[int, str] = {}
    aliases = {}
    for name, tensor in model.state_dict(keep_vars=True).items():
        key = id(tensor)
        if key in seen:
            aliases[name] = seen[key]
        else:
            seen[key] = name
    return aliases
