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
import sys
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


USER_ERRORS = (ValueError, FileNotFoundError)  # what a bad recipe, override, path or setting raises


def parse_yaml(text: str, where: str = "YAML text"):
    """Parses ``text``; a syntax error is a one-line ``ValueError`` naming ``where``, the line and the problem."""
    try:
        return yaml.load(text, Loader=_RecipeLoader)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        position = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ValueError(f"{where} is not valid YAML{position}: {problem}") from None


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
        node[leaf] = parse_yaml(raw_value, f"the value of override {override!r}")
    return merged


def load_recipe(config_class: type[RecipeT], path: str | Path | None, overrides: Sequence[str] = ()) -> RecipeT:
    """Reads a YAML recipe (or starts from the defaults when ``path`` is None) and applies overrides."""
    tree: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"recipe file {path} does not exist")
        tree = parse_yaml(path.read_text(), f"recipe {path}") or {}
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


def report_user_error(error: BaseException) -> int:
    """Prints ``arvis: error: <message>`` to stderr (no traceback) and returns the exit status 2."""
    print(f"arvis: error: {error}", file=sys.stderr)
    return 2


def run_as_script(main: Callable[[], Any]) -> None:
    """``if __name__ == "__main__"`` of an entry point (``python -m`` / ``accelerate launch -m``): a bad recipe,
    override, path or setting ends the process with one line and status 2, as the ``arvis`` command does."""
    try:
        main()
    except USER_ERRORS as error:
        sys.exit(report_user_error(error))
