"""Writing safely: a save either completes or leaves the previous folder or file untouched, and arvis never
deletes what it did not write.

A save is written into a hidden staging sibling and renamed into place only when it is complete, so an
interrupted save never leaves a folder that mixes a new config with old weights. Every folder arvis saves
holds a manifest (``.arvis-manifest.json``) listing the files it wrote. An existing folder is replaced (or
deleted, as old checkpoints are) only if it is empty, or holds a manifest and nothing the manifest does not
list: a folder of a user's own files, or an arvis save into which a user put a file, is refused with a message
naming the file, and nothing is deleted.

Folders saved before manifests existed are recognised by a ``legacy`` rule: a function that returns the files
such a save holds when the folder is one (its marker file written by arvis, e.g. a ``config.json`` with
arvis's header), else None.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Callable, Iterator

PARTIAL_MARKER = ".partial-"  # temporary files are ".{name}.partial-{token}"
MANIFEST_FILE = ".arvis-manifest.json"
MAX_LISTED = 5

LegacyRule = Callable[[Path], "set[str] | None"]


def files_under(folder: Path) -> set[str]:
    """Relative POSIX paths of every file (and link) under ``folder``, recursively."""
    return {path.relative_to(folder).as_posix() for path in folder.rglob("*") if not path.is_dir() or path.is_symlink()}


def json_object_or_none(path: Path) -> dict | None:
    """The JSON object in ``path``, or None if the file is missing, unreadable or holds something else."""
    try:
        value = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return value if isinstance(value, dict) else None


def write_manifest(folder: Path, kind: str) -> None:
    """Records every file now under ``folder`` as written by arvis (call it last, on the complete folder)."""
    manifest = {"written_by": "arvis", "kind": kind, "files": sorted(files_under(folder) - {MANIFEST_FILE})}
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest, indent=1) + "\n")


def manifest_record(folder: Path) -> dict | None:
    """The manifest of ``folder`` if it holds a valid one, else None."""
    record = json_object_or_none(folder / MANIFEST_FILE)
    if record is None or record.get("written_by") != "arvis" or not isinstance(record.get("files"), list) \
            or not isinstance(record.get("kind"), str):
        return None
    return record


def written_by_arvis(folder: Path, kind: str, legacy: LegacyRule | None = None) -> set[str] | None:
    """The files arvis wrote in ``folder`` as a save of ``kind`` (its manifest, or the ``legacy`` rule), or None
    if it is not such a save (a save of another kind, e.g. a tokenizer folder where a pipeline goes, is not)."""
    if (folder / MANIFEST_FILE).exists():
        record = manifest_record(folder)
        if record is None or record["kind"] != kind:
            return None
        return {str(name) for name in record["files"]} | {MANIFEST_FILE}
    return legacy(folder) if legacy is not None else None


def replaceable_problem(path: Path, kind: str, legacy: LegacyRule | None = None) -> str | None:
    """None if arvis may replace or delete ``path`` (absent, an empty folder, or an arvis save of ``kind`` holding
    nothing else), else why not."""
    if not path.exists() and not path.is_symlink():
        return None
    if path.is_symlink() or not path.is_dir():
        return f"{path} is a file, not a folder"
    present = files_under(path)
    if not present:
        return None
    ours = written_by_arvis(path, kind, legacy)
    if ours is None:
        record = manifest_record(path)
        if record is not None:
            return f"{path} is an arvis {record['kind']} folder, not a {kind} folder"
        if (path / MANIFEST_FILE).exists():
            return f"{path} holds files and its {MANIFEST_FILE} is not arvis's (corrupt or foreign)"
        return f"{path} holds files but is not a folder arvis saved (it has no {MANIFEST_FILE}), let alone a {kind}"
    foreign = sorted(present - ours)
    if foreign:
        listed = ", ".join(foreign[:MAX_LISTED]) + (f" and {len(foreign) - MAX_LISTED} more" if len(foreign) > MAX_LISTED else "")
        return f"{path} is an arvis save but also holds files arvis did not write: {listed}"
    return None


def check_replaceable(path: str | Path, kind: str, legacy: LegacyRule | None = None) -> None:
    """Raises ``ValueError`` unless arvis may replace ``path`` (see :func:`replaceable_problem`)."""
    problem = replaceable_problem(Path(path), kind, legacy)
    if problem:
        raise ValueError(f"refusing to replace {path}: {problem}; choose another folder or move those files away")


@contextlib.contextmanager
def replace_folder(path: str | Path, kind: str, legacy: LegacyRule | None = None) -> Iterator[Path]:
    """Yields a staging folder to write into; on success it gets a manifest and becomes ``path``.

    Args:
        path: the folder to (re)write; an existing one must pass :func:`check_replaceable`, checked both before
            writing and again just before the swap.
        kind: what the folder holds (``"component"``, ``"pipeline"``), recorded in the manifest.
        legacy: recognises arvis saves written before manifests (see the module docstring).
    """
    path = Path(path)
    check_replaceable(path, kind, legacy)
    path.parent.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex[:8]
    staging = path.with_name(f".{path.name}.saving-{token}")
    staging.mkdir()
    try:
        yield staging
        write_manifest(staging, kind)
        check_replaceable(path, kind, legacy)  # a user may have put a file there meanwhile
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    swap_into_place(staging, path)


def swap_into_place(staging: Path, path: Path) -> None:
    """Renames the complete ``staging`` folder to ``path``; a folder already at ``path`` (checked replaceable by
    the caller) is renamed aside first and deleted only once the new one is in place."""
    if path.exists():
        retired = path.with_name(f".{path.name}.replaced-{uuid.uuid4().hex[:8]}")
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
