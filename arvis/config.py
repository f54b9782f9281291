"""Config base: frozen dataclasses with strict, type-checked dict and JSON round trips.

Every component (tokenizer, generator, sampler, training recipe) has exactly one
config dataclass deriving from :class:`Config`. Configs are plain data: presets are
instances of them, ``config.json`` files are their ``to_dict()``, and
``from_dict`` refuses unknown keys and values of the wrong type so that a typo in
a recipe or a corrupt checkpoint is an error instead of a silently ignored field.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from pathlib import Path
from typing import Any, ClassVar, TypeVar, Union

ConfigT = TypeVar("ConfigT", bound="Config")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Config:
    """Base of every arvis config. Subclasses are ``@dataclass(frozen=True, kw_only=True)``.

    ``saved_defaults`` names, per field added after a config was first saved, the value that reproduces the
    behaviour before the field existed; :meth:`from_saved` (used to load ``config.json`` files) fills it in for
    a missing key, while new configs and presets take the dataclass default.
    """

    saved_defaults: ClassVar[dict[str, Any]] = {}

    def to_dict(self) -> dict[str, Any]:
        """Returns a JSON-ready dict (tuples become lists, nested configs become dicts)."""
        return {f.name: _to_jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls: type[ConfigT], data: dict[str, Any]) -> ConfigT:
        """Builds the config from a dict; an unknown key or a mistyped value is a ``ValueError``."""
        return cls._build(data, saved=False)

    @classmethod
    def from_saved(cls: type[ConfigT], data: dict[str, Any]) -> ConfigT:
        """Like :meth:`from_dict`, for a config read back from a file: a key the file lacks takes its
        ``saved_defaults`` value (the behaviour of the version that wrote it), others their defaults; nested
        configs are read the same way."""
        return cls._build(data, saved=True)

    @classmethod
    def _build(cls: type[ConfigT], data: dict[str, Any], *, saved: bool) -> ConfigT:
        if not isinstance(data, dict):
            raise ValueError(f"{cls.__name__} expects a dict of fields, got {type(data).__name__}")
        fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
        unknown = sorted(set(data) - set(fields))
        if unknown:
            raise ValueError(
                f"unknown {cls.__name__} key(s) {unknown}; valid keys are {sorted(fields)}"
            )
        if saved:
            data = {**{key: value for key, value in cls.saved_defaults.items() if key not in data}, **data}
        hints = typing.get_type_hints(cls)
        kwargs = {name: coerce(value, hints[name], f"{cls.__name__}.{name}", saved=saved)
                  for name, value in data.items()}
        return cls(**kwargs)

    def replace(self: ConfigT, **changes: Any) -> ConfigT:
        """Returns a copy with ``changes`` applied, checked like ``from_dict``."""
        merged = self.to_dict()
        merged.update(changes)
        return type(self).from_dict(merged)

    def to_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def from_json(cls: type[ConfigT], path: str | Path) -> ConfigT:
        """Reads a file written by :meth:`to_json` (as a saved config: see :meth:`from_saved`)."""
        return cls.from_saved(read_json(path))


def read_json(path: str | Path) -> Any:
    """Reads a JSON file, turning a missing or corrupt file into a clear error."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"missing file {path}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"corrupt JSON in {path}: {error}") from error


def _to_jsonable(value: Any) -> Any:
    if isinstance(value, Config):
        return value.to_dict()
    if isinstance(value, (tuple, list)):
        return [_to_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _to_jsonable(v) for k, v in value.items()}
    return value


def coerce(value: Any, annotation: Any, where: str, *, saved: bool = False) -> Any:
    """Checks ``value`` against a type annotation, converting lists to tuples and dicts to configs.

    Floats must be finite: NaN and infinities are refused here, once, for every way a config is made
    (presets, recipes, ``key=value`` overrides, ``config.json`` and ``pipeline.json``, the API).

    Only the annotation forms used by arvis configs are supported: builtins, ``X | None``,
    ``tuple[X, ...]``, ``tuple[X, Y]``, ``list[X]``, ``dict[str, X]``, ``Literal[...]`` and
    nested ``Config`` subclasses (read with :meth:`Config.from_saved` when ``saved``).
    """
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if annotation is Any:
        return value
    if origin in (Union, types.UnionType):
        for option in args:
            try:
                return coerce(value, option, where, saved=saved)
            except ValueError:
                continue
        raise ValueError(f"{where}: {value!r} matches none of {annotation}")
    if annotation is type(None):
        if value is None:
            return None
        raise ValueError(f"{where}: expected None, got {value!r}")
    if origin is typing.Literal:
        if value in args:
            return value
        raise ValueError(f"{where}: expected one of {list(args)}, got {value!r}")
    if isinstance(annotation, type) and issubclass(annotation, Config):
        if isinstance(value, annotation):
            return value
        if isinstance(value, dict):
            return annotation.from_saved(value) if saved else annotation.from_dict(value)
        raise ValueError(f"{where}: expected a dict for {annotation.__name__}, got {value!r}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{where}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(coerce(v, args[0], f"{where}[{i}]", saved=saved) for i, v in enumerate(value))
        if len(args) != len(value):
            raise ValueError(f"{where}: expected {len(args)} items, got {len(value)}")
        return tuple(coerce(v, a, f"{where}[{i}]", saved=saved)
                     for i, (v, a) in enumerate(zip(value, args, strict=True)))
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{where}: expected a list, got {value!r}")
        return [coerce(v, args[0], f"{where}[{i}]", saved=saved) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ValueError(f"{where}: expected a mapping, got {value!r}")
        return {k: coerce(v, args[1], f"{where}.{k}", saved=saved) for k, v in value.items()}
    if annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise ValueError(f"{where}: expected a finite number, got {value!r}")
            return float(value)
        raise ValueError(f"{where}: expected a number, got {value!r}")
    if annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ValueError(f"{where}: expected an integer, got {value!r}")
    if annotation in (bool, str):
        if isinstance(value, annotation):
            return value
        raise ValueError(f"{where}: expected {annotation.__name__}, got {value!r}")
    raise TypeError(f"{where}: unsupported config annotation {annotation}")
