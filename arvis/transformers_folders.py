"""Reading a local transformers folder without running code from it (the frozen T5 text encoder, ControlAR's ViT).

A folder is read only if it holds the files named and nothing that ``from_pretrained`` could execute or unpickle:
no Python files (``auto_map`` code), no pickled weights, no PEFT adapter (whose loader would follow it). The caller
then parses ``config.json`` itself, refuses ``auto_map``, and loads safetensors weights only, offline.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from arvis.modeling import PICKLED_WEIGHTS

REFUSED_PATTERNS = ("*.py", *PICKLED_WEIGHTS, "adapter_config.json")


def check_transformers_folder(folder: str | Path, *, what: str, required: Sequence[str], example: str,
                              keep: str) -> Path:
    """``folder`` as a Path; ``FileNotFoundError`` naming the ``required`` files it lacks (``what`` names the
    folder's role, ``example`` what to put there), ``ValueError`` naming any refused file (``keep`` says what may
    stay)."""
    folder = Path(folder)
    missing = [name for name in required if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{what} folder {folder} lacks {missing}: put {example} there")
    refused = sorted(path.name for pattern in REFUSED_PATTERNS for path in folder.glob(pattern))
    if refused:
        raise ValueError(f"{what} folder {folder} holds {refused}, which could run code when loaded; keep only "
                         f"{keep}")
    return folder
