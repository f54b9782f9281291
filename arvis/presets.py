"""Preset lookup across component kinds: ``arvis.build(name)`` and ``arvis.list_presets()``."""

from __future__ import annotations

from typing import Any

from arvis.generators.base import GENERATORS
from arvis.registry import Registry
from arvis.tokenizers.base import TOKENIZERS

REGISTRIES: dict[str, Registry] = {"tokenizer": TOKENIZERS, "generator": GENERATORS}


def registry_for(kind: str) -> Registry:
    if kind not in REGISTRIES:
        raise ValueError(f"unknown component kind {kind!r}; expected one of {sorted(REGISTRIES)}")
    return REGISTRIES[kind]


def list_presets(pattern: str = "*") -> dict[str, list[str]]:
    """All preset names matching ``pattern``, grouped by component kind."""
    return {kind: registry.presets(pattern) for kind, registry in REGISTRIES.items()}


def build(name: str, **overrides: Any):
    """Builds a component from a preset name of any kind (``build("vq-tiny")``)."""
    kinds = [kind for kind, registry in REGISTRIES.items() if name in registry.presets()]
    if not kinds:
        raise ValueError(f"unknown preset {name!r}; run `arvis presets` to list them")
    if len(kinds) > 1:
        raise ValueError(f"preset {name!r} names a {' and a '.join(kinds)}; build it from its registry")
    return REGISTRIES[kinds[0]].build(name, **overrides)
