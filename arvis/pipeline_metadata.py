"""What a pipeline records about itself for the people who use it: class names, how it was trained, how it scored.

Stored in the pipeline folder beside the components, and shown in its model card (:mod:`arvis.model_card`)::

    pipeline.json   "class_names": ["disk", "ring", ...]   names of class ids 0..n-1 (class-conditional generators)
    recipe.json     [{"command": "arvis train generator", "recipe": {...}}, ...]   the training stages, oldest first
    metrics.json    {"glyph_metrics": {"fd_glyphs": 0.41, ...}, ...}   the metrics report of the exported model

All three are optional (None / no stages); a pipeline without them samples exactly as one with them.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from arvis.config import read_json

RECIPE_FILE = "recipe.json"
METRICS_FILE = "metrics.json"


@dataclasses.dataclass(frozen=True)
class TrainingStage:
    """One training run that produced (part of) the pipeline: the command and its full recipe as a JSON object."""

    command: str
    recipe: dict[str, Any]

    def __post_init__(self) -> None:
        if not isinstance(self.command, str) or not self.command:
            raise ValueError(f"a training stage's command must be a non-empty string, got {self.command!r}")
        check_json_object(self.recipe, f"the recipe of {self.command!r}")

    def to_dict(self) -> dict[str, Any]:
        return {"command": self.command, "recipe": self.recipe}


@dataclasses.dataclass(frozen=True)
class PipelineMetadata:
    """Class names, training stages and metrics of a pipeline (see the module docstring for the files)."""

    class_names: tuple[str, ...] | None = None
    training: tuple[TrainingStage, ...] = ()
    metrics: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.class_names is not None:
            if isinstance(self.class_names, str) or not isinstance(self.class_names, Sequence) \
                    or not self.class_names or not all(isinstance(n, str) and n.strip() for n in self.class_names):
                raise ValueError(f"class_names must be a non-empty list of non-empty strings, got "
                                 f"{self.class_names!r:.120}")
            if len(set(self.class_names)) != len(self.class_names):
                repeated = sorted({name for name in self.class_names if self.class_names.count(name) > 1})
                raise ValueError(f"class_names repeats {repeated}; every class needs its own name")
            object.__setattr__(self, "class_names", tuple(self.class_names))
        if not all(isinstance(stage, TrainingStage) for stage in self.training):
            raise ValueError("training must be a sequence of TrainingStage")
        object.__setattr__(self, "training", tuple(self.training))
        if self.metrics is not None:
            check_json_object(self.metrics, "metrics")

    def replace(self, **changes: Any) -> PipelineMetadata:
        return dataclasses.replace(self, **changes)

    def check_serves(self, num_classes: int | None) -> None:
        """Raises ``ValueError`` unless the class names (if any) name exactly the generator's ``num_classes``
        classes (None: a generator without class ids, which takes no names)."""
        if self.class_names is None:
            return
        if num_classes is None:
            raise ValueError("the generator takes no class ids, so the pipeline has no use for class names; "
                             "leave class_names out")
        if len(self.class_names) != num_classes:
            raise ValueError(f"got {len(self.class_names)} class names for a generator of {num_classes} classes; "
                             "give one name per class id")

    def write(self, folder: Path) -> None:
        """Writes ``recipe.json`` and ``metrics.json`` into ``folder`` (those that hold something); the class
        names go into ``pipeline.json``, see :meth:`index_entries`."""
        if self.training:
            text = json.dumps([stage.to_dict() for stage in self.training], indent=2, allow_nan=False)
            (folder / RECIPE_FILE).write_text(text + "\n")
        if self.metrics is not None:
            (folder / METRICS_FILE).write_text(json.dumps(self.metrics, indent=2, allow_nan=False) + "\n")

    def index_entries(self) -> dict[str, Any]:
        """The entries this metadata adds to ``pipeline.json``."""
        return {"class_names": list(self.class_names)} if self.class_names is not None else {}

    @classmethod
    def read(cls, folder: Path, index: dict[str, Any]) -> PipelineMetadata:
        """The metadata of a pipeline folder (its ``pipeline.json`` already read as ``index``); ``ValueError``
        naming the file for a malformed entry."""
        where = folder / "pipeline.json"
        try:
            names = index.get("class_names")
            class_names = cls(class_names=names).class_names if names is not None else None
        except ValueError as error:
            raise ValueError(f"{where}: the 'class_names' entry: {error}") from None
        training: tuple[TrainingStage, ...] = ()
        if (folder / RECIPE_FILE).is_file():
            stages = read_json(folder / RECIPE_FILE)
            if not isinstance(stages, list) or not all(isinstance(s, dict) and set(s) == {"command", "recipe"}
                                                       for s in stages):
                raise ValueError(f"{folder / RECIPE_FILE} must be a list of {{'command': ..., 'recipe': {{...}}}} "
                                 "objects")
            try:
                training = tuple(TrainingStage(**stage) for stage in stages)
            except ValueError as error:
                raise ValueError(f"{folder / RECIPE_FILE}: {error}") from None
        metrics = read_json(folder / METRICS_FILE) if (folder / METRICS_FILE).is_file() else None
        try:
            return cls(class_names=class_names, training=training, metrics=metrics)
        except ValueError as error:
            raise ValueError(f"{folder / METRICS_FILE}: {error}") from None


def final_log(history: Sequence[dict[str, float]]) -> dict[str, Any] | None:
    """The metrics report of a training run: its last logged values (step, losses, throughput), or None."""
    if not history:
        return None
    # A diverged run's NaN or inf loss is kept, as text (JSON has no such numbers), and never stops the export.
    return {"final_training_log": {key: value if not isinstance(value, float) or math.isfinite(value) else str(value)
                                   for key, value in history[-1].items()}}


def check_json_object(value: Any, what: str) -> None:
    """Raises ``ValueError`` unless ``value`` is a JSON object of finite numbers, strings, booleans, null, lists
    and objects with string keys."""
    if not isinstance(value, dict):
        raise ValueError(f"{what} must be a JSON object (a dict), got {type(value).__name__}")
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{what} must hold only JSON values (finite numbers, strings, lists, dicts): {error}") \
            from None
