"""Command-line sampling overrides shared by ``arvis generate``, ``arvis sample`` and ``arvis eval``."""

from __future__ import annotations

import argparse
from typing import Any

from arvis.samplers.logits import CFG_SCHEDULES

_OPTIONS: tuple[tuple[str, type, str], ...] = (
    ("cfg_scale", float, "classifier-free guidance scale"),
    ("cfg_schedule", str, "guidance schedule: constant, linear (VAR) or step (ResTok)"),
    ("cfg_start", float, "step schedule: guide from this fraction of the steps on"),
    ("cfg_interval", int, "LlamaGen's cfg_interval: guide tokens 0..k+1 only (-1: every step)"),
    ("top_k", int, "keep the k most likely tokens (0: all)"),
    ("top_p", float, "nucleus sampling mass (1: off)"),
    ("temperature", float, "softmax temperature"),
    ("distilled_steps", int, "Distilled Decoding pipelines: 1 or 2 passes"),
)


def add_sampling_arguments(parser: argparse.ArgumentParser, note: str = "") -> None:
    """Adds ``--cfg-scale``, ``--cfg-schedule``, ``--cfg-start``, ``--cfg-interval``, ``--top-k``, ``--top-p``,
    ``--temperature``, ``--distilled-steps`` (all default ``None``: keep the pipeline's stored setting)."""
    for name, kind, help_text in _OPTIONS:
        choices = sorted(CFG_SCHEDULES) if name == "cfg_schedule" else None
        parser.add_argument("--" + name.replace("_", "-"), type=kind, default=None, choices=choices,
                            help=help_text + (f" ({note})" if note else ""))


def sampling_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The sampling overrides given on the command line, by ``SamplingConfig`` field name."""
    return {name: getattr(args, name) for name, _, _ in _OPTIONS}
