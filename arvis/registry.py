"""The one registry mechanism: named classes and presets per kind.

A :class:`Registry` maps names to classes (components, samplers, post-training methods) and preset names to
config instances. Components are named by their class name; samplers and post-training methods by their
``name`` attribute (``Registry("sampler", key="name")``). Presets are data: ``TOKENIZERS.add_preset("vq-f16", VQConfig(...))``
registers a ready configuration whose component class is found from the config's
type. Each component package registers its presets when it is imported; the
:func:`ensure_registered` helper imports them all, explicitly (no discovery magic).
Cross-kind helpers (``arvis.build``, ``arvis.list_presets``) live in ``arvis.presets``.
"""

from __future__ import annotations

import fnmatch
import importlib
from typing import Any, Generic, TypeVar

from arvis.config import Config

T = TypeVar("T")

_COMPONENT_PACKAGES = ("arvis.tokenizers", "arvis.generators", "arvis.samplers", "arvis.posttrain")


class Registry(Generic[T]):
    """Classes and their named presets for one kind (``"tokenizer"``, ``"generator"``, ``"sampler"``, ...).

    Every registered class declares its ``config_class``; no two classes share one, so a config (a preset, the
    settings stored in a pipeline) names its class. ``key`` is ``"class"`` (the class name) or ``"name"`` (the
    class's ``name`` attribute).
    """

    def __init__(self, kind: str, *, key: str = "class") -> None:
        if key not in ("class", "name"):
            raise ValueError(f"key must be 'class' or 'name', got {key!r}")
        self.kind = kind
        self.key = key
        self._classes: dict[str, type[T]] = {}
        self._class_by_config: dict[type[Config], type[T]] = {}
        self._presets: dict[str, Config] = {}
        self._descriptions: dict[str, str] = {}

    def register(self, cls: type[T]) -> type[T]:
        """Class decorator: registers a class under its class name (or its ``name``, see ``key``)."""
        name = cls.__name__ if self.key == "class" else vars(cls).get("name")
        if not isinstance(name, str) or not name:
            raise TypeError(f"{cls.__name__} must declare its {self.kind} name as a class attribute `name`")
        if name in self._classes:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        config_class = getattr(cls, "config_class", None)
        if config_class is None:
            raise TypeError(f"{cls.__name__} must declare a config_class")
        if config_class in self._class_by_config:
            raise ValueError(f"{cls.__name__} declares {config_class.__name__}, which "
                             f"{self._class_by_config[config_class].__name__} already declares; give each "
                             f"{self.kind} its own config class")
        self._classes[name] = cls
        self._class_by_config[config_class] = cls
        return cls

    def unregister(self, name: str) -> None:
        """Removes the class registered as ``name`` and its presets (for a test or a notebook that registers a
        class for a while)."""
        cls = self.get_class(name)
        del self._classes[name]
        config_class = next(config for config, registered in self._class_by_config.items() if registered is cls)
        del self._class_by_config[config_class]
        for preset in [preset for preset, config in self._presets.items() if type(config) is config_class]:
            del self._presets[preset], self._descriptions[preset]

    def add_preset(self, name: str, config: Config, description: str = "") -> None:
        """Registers ``config`` under ``name``; its component class must already be registered."""
        if name in self._presets:
            raise ValueError(f"{self.kind} preset {name!r} is registered twice")
        self.class_for_config(config)
        self._presets[name] = config
        self._descriptions[name] = description

    def class_for_config(self, config: Config) -> type[T]:
        try:
            return self._class_by_config[type(config)]
        except KeyError:
            raise ValueError(f"no {self.kind} class registered for {type(config).__name__}") from None

    def get_class(self, name: str) -> type[T]:
        ensure_registered()
        if name not in self._classes:
            what = f"{self.kind} class" if self.key == "class" else self.kind
            raise ValueError(f"unknown {what} {name!r}; known: {sorted(self._classes)}")
        return self._classes[name]

    def name_of(self, cls: type) -> str:
        """The name ``cls`` is registered under."""
        for name, registered in self._classes.items():
            if registered is cls:
                return name
        raise ValueError(f"{cls.__name__} is not a registered {self.kind}")

    def names(self) -> list[str]:
        """Every registered name, sorted."""
        ensure_registered()
        return sorted(self._classes)

    def preset(self, name: str) -> Config:
        ensure_registered()
        if name not in self._presets:
            close = fnmatch.filter(self._presets, f"*{name.split('-')[0]}*")
            hint = f" (did you mean one of {close}?)" if close else ""
            raise ValueError(f"unknown {self.kind} preset {name!r}{hint}; run `arvis presets` to list them")
        return self._presets[name]

    def build(self, name: str, **overrides: Any) -> T:
        """Instantiates preset ``name`` with config fields ``overrides`` replaced."""
        config = self.preset(name)
        if overrides:
            config = config.replace(**overrides)
        return self.class_for_config(config)(config)

    def presets(self, pattern: str = "*") -> list[str]:
        ensure_registered()
        return sorted(fnmatch.filter(self._presets, pattern))

    def description(self, name: str) -> str:
        return self._descriptions[name]


def ensure_registered() -> None:
    """Imports every component package so that their presets are registered."""
    for package in _COMPONENT_PACKAGES:
        importlib.import_module(package)
