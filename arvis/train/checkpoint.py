"""Training checkpoints: ``checkpoint-{step}/`` folders of accelerate state plus ``metadata.json``.

A checkpoint is written into a hidden staging folder; ``metadata.json`` is written
last and the folder is then renamed into place, so an interrupted save never leaves a
folder that :func:`latest_checkpoint` would pick. Names carry the optimiser step
explicitly (accelerate's automatic naming does not restore its counter on resume).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

from accelerate import Accelerator

METADATA_FILE = "metadata.json"
_NAME = re.compile(r"^checkpoint-(\d+)$")


def complete_checkpoints(folder: str | Path) -> list[tuple[int, Path]]:
    """(step, path) of every complete checkpoint in ``folder``, oldest first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = []
    for path in folder.iterdir():
        match = _NAME.match(path.name)
        if match and (path / METADATA_FILE).is_file():
            found.append((int(match.group(1)), path))
    return sorted(found)


def latest_checkpoint(folder: str | Path) -> Path | None:
    checkpoints = complete_checkpoints(folder)
    return checkpoints[-1][1] if checkpoints else None


def read_metadata(checkpoint: str | Path) -> dict:
    path = Path(checkpoint) / METADATA_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{checkpoint} is not a complete checkpoint: {METADATA_FILE} is missing")
    return json.loads(path.read_text())


def save_checkpoint(accelerator: Accelerator, folder: str | Path, step: int, metadata: dict, keep_last: int) -> Path:
    """Saves accelerate state (every process) as ``folder/checkpoint-{step}``; keeps the newest ``keep_last``."""
    folder = Path(folder)
    final = folder / f"checkpoint-{step}"
    staging = folder / f".checkpoint-{step}.saving"
    if accelerator.is_main_process:
        shutil.rmtree(staging, ignore_errors=True)  # a save that died earlier
        staging.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(staging), safe_serialization=True)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (staging / METADATA_FILE).write_text(json.dumps({"step": step, **metadata}, indent=2) + "\n")
        if final.exists():
            shutil.rmtree(final)
        os.replace(staging, final)
        for _, old in complete_checkpoints(folder)[:-keep_last] if keep_last > 0 else []:
            shutil.rmtree(old)
    accelerator.wait_for_everyone()
    return final
