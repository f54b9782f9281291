"""Command-line sampling options of ``arvis generate``, ``arvis sample`` and ``arvis eval``, derived from the
registered samplers' settings classes.

Every settings field of every registered sampler becomes one flag (``cfg_scale`` -> ``--cfg-scale``; a bool
becomes ``--more-smooth`` / ``--no-more-smooth``; a ``Literal`` gets its choices), its help naming the samplers
that have it; ``--sampler`` picks another of the generator's samplers. All default to None (keep the pipeline's
stored setting). Which flags apply is known only once the pipeline is loaded: :func:`arvis.samplers.settings_for`
then refuses, by name, a flag the pipeline's sampler does not have.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from typing import Any

from arvis.samplers.base import SAMPLERS
from arvis.samplers.settings import help_of

_PARSED_TYPES = (float, int, str)


def sampling_fields() -> dict[str, tuple[Any, str, list[str]]]:
    """Every settings field of every registered sampler: name -> (annotation, help, sampler names).

    Raises ``TypeError`` if two samplers declare one name with different types (one flag could not serve both).
    """
    fields: dict[str, tuple[Any, str, list[str]]] = {}
    for name in SAMPLERS.names():
        settings_class = SAMPLERS.get_class(name).config_class
        hints = typing.get_type_hints(settings_class)
        for field in dataclasses.fields(settings_class):
            annotation = hints[field.name]
            if field.name in fields:
                known, help_text, owners = fields[field.name]
                if known != annotation:
                    raise TypeError(f"the samplers {owners} and {name!r} declare the setting {field.name!r} with "
                                    f"different types ({known} and {annotation}); rename one")
                owners.append(name)
            else:
                fields[field.name] = (annotation, help_of(field), [name])
    return fields


def add_sampling_arguments(parser: argparse.ArgumentParser, note: str = "") -> None:
    """Adds ``--sampler`` and one flag per sampler setting (all default ``None``: the pipeline's stored value)."""
    group = parser.add_argument_group("sampling", "settings of the pipeline's sampler" + (f" ({note})" if note else ""))
    group.add_argument("--sampler", default=None, choices=SAMPLERS.names(),
                       help="another of the generator's samplers (default: the pipeline's)")
    for name, (annotation, help_text, owners) in sampling_fields().items():
        flag = "--" + name.replace("_", "-")
        help_text = f"{help_text} [{', '.join(owners)}]"
        if annotation is bool:
            group.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        elif typing.get_origin(annotation) is typing.Literal:
            group.add_argument(flag, dest=name, default=None, choices=list(typing.get_args(annotation)),
                               help=help_text)
        elif annotation in _PARSED_TYPES:
            group.add_argument(flag, dest=name, type=annotation, default=None, help=help_text)
        else:
            raise TypeError(f"the setting {name!r} of {owners} has type {annotation}, which has no command-line form; "
                            "use float, int, str, bool or a Literal")


def sampling_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """``sampler`` (None: the pipeline's) and the sampling settings given on the command line, by field name (the
    flags not given are left out), as :func:`arvis.generate` and :func:`arvis.sample.sample_to_folder` take
    them."""
    given = {name: getattr(args, name) for name in sampling_fields() if getattr(args, name) is not None}
    return {"sampler": args.sampler, **given}
