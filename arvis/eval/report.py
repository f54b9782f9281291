"""Evaluation results as JSON: the numbers with their protocol, and what produced them."""

from __future__ import annotations

import datetime
import hashlib
import json
import platform
from pathlib import Path
from typing import Any, Sequence

import torch

from arvis.folders import write_file_atomically


def finish_report(result: dict[str, Any], *, command: Sequence[str] | None = None) -> dict[str, Any]:
    """``result`` (``{"metrics", "protocol"}``) plus the arvis and torch versions, time, host and command."""
    from arvis import __version__

    return {
        **result,
        "environment": {
            "arvis": __version__,
            "torch": torch.__version__,
            "python": platform.python_version(),
            "device": torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor() or "cpu",
            "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "command": list(command) if command is not None else None,
        },
    }


def write_report(path: str | Path, report: dict[str, Any]) -> Path:
    """Writes ``report`` as indented JSON, atomically (an interrupted write keeps the previous file)."""
    text = json.dumps(report, indent=2, sort_keys=False) + "\n"
    return write_file_atomically(path, lambda temporary: temporary.write_text(text))


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes (weights and detector files are recorded by hash in every protocol)."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
