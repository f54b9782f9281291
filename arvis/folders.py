"""Writing safely: a save either completes or leaves the previous folder or file untouched.

A save is written into a hidden staging sibling and renamed into place only when
it is complete, so an interrupted save never leaves a folder that mixes a new
config with old weights. An existing folder is replaced only if it is empty or is
itself an arvis save (it holds the ``marker`` file); anything else is refused, so
a user's own files are never deleted.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from pathlib import Path
from typing import Callable, Iterator

PARTIAL_MARKER = ".partial-"  # temporary files are ".{name}.partial-{token}"


@contextlib.contextmanager
def replace_folder(path: str | Path, marker: str) -> Iterator[Path]:
    """Yields a staging folder to write into; on success it becomes ``path``.

    Args:
        path: the folder to (re)write.
        marker: a file name every arvis save of this kind holds (``config.json``, ``pipeline.json``).
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"cannot save to {path}: it is a file, not a folder")
    if path.is_dir() and any(path.iterdir()) and not (path / marker).exists():
        raise ValueError(
            f"refusing to replace {path}: it holds files but is not an arvis save (no {marker}); choose another folder"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex[:8]
    staging = path.with_name(f".{path.name}.saving-{token}")
    staging.mkdir()
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if path.exists():
        retired = path.with_name(f".{path.name}.replaced-{token}")
        os.replace(path, retired)
        os.replace(staging, path)
        shutil.rmtree(retired)
    else:
        os.replace(staging, path)


def write_file_atomically(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Calls ``write(temporary)`` for a hidden sibling of ``path``, then renames it to ``path``.

    An interrupted write leaves ``path`` as it was (absent or the previous file) and removes
    the temporary file. Creates the parent folder. Returns ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}{PARTIAL_MARKER}{uuid.uuid4().hex[:8]}")
    try:
        write(temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path
