"""Training recipes: a config dataclass loaded from YAML plus dotted ``key=value`` overrides.

``--config configs/x.yaml optim.learning_rate=3e-4 data.image_size=32``: each value is
parsed as YAML (numbers, booleans, lists), merged into the nested dict, and the
whole tree is checked by ``Config.from_dict``, so an unknown key or a value of the
wrong type is an error that names it.
"""

from __future__ import annotations

import argparse
import copy
import logging
import re
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

import yaml

from arvis.config import Config

RecipeT = TypeVar("RecipeT", bound=Config)


class _RecipeLoader(yaml.SafeLoader):
    """YAML 1.1 reads ``1e-4`` (no dot) as a string; recipes read it as the float it means."""


_RecipeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)$|^[-+]?(?:\d+\.\d*|\.\d+)$"),
    list("-+0123456789."),
)


def parse_yaml(text: str):
    return yaml.load(text, Loader=_RecipeLoader)


def apply_overrides(tree: dict, overrides: Sequence[str]) -> dict:
    """Merges ``a.b=value`` strings into a nested dict (a new dict; ``tree`` is not modified)."""
    merged = copy.deepcopy(tree)
    for override in overrides:
        key, separator, raw_value = override.partition("=")
        if not separator or not key:
            raise ValueError(f"override {override!r} is not of the form key=value (e.g. optim.learning_rate=3e-4)")
        node = merged
        *parents, leaf = key.split(".")
        for part in parents:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ValueError(f"override {override!r}: {part!r} is a value, not a section")
            node = child
        node[leaf] = parse_yaml(raw_value)
    return merged


def load_recipe(config_class: type[RecipeT], path: str | Path | None, overrides: Sequence[str] = ()) -> RecipeT:
    """Reads a YAML recipe (or starts from the defaults when ``path`` is None) and applies overrides."""
    tree: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"recipe file {path} does not exist")
        tree = parse_yaml(path.read_text()) or {}
        if not isinstance(tree, dict):
            raise ValueError(f"recipe {path} must hold a mapping at the top level")
    return config_class.from_dict(apply_overrides(tree, overrides))


def parse_recipe_args(config_class: type[RecipeT], argv: Sequence[str] | None, description: str) -> RecipeT:
    """The shared command line of training entry points: ``--config FILE key=value ...``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", help="YAML recipe (see configs/); defaults are used when omitted")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. optim.learning_rate=3e-4")
    args = parser.parse_intermixed_args(argv)
    return load_recipe(config_class, args.config, args.overrides)


def run_entry_point(config_class: type[RecipeT], train: Callable[[RecipeT], Any], description: str,
                    argv: Sequence[str] | None = None) -> None:
    """``main`` of a training module: logging, the recipe from the command line, then ``train``."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    train(parse_recipe_args(config_class, argv, description))
