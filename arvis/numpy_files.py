"""Reading ``.npy`` and ``.npz`` files safely: arrays only, never pickled objects, with errors that say what is wrong.

``numpy.load`` guesses the format from the file's first bytes and takes anything that is neither a ``.npy``
header nor a zip archive for a pickle; with ``allow_pickle=False`` it then complains about pickles, which
misleads for a file that is merely corrupt or of another kind. These readers check the format first.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

NPY_MAGIC = b"\x93NUMPY"


def load_npy(path: str | Path, *, mmap: bool = False) -> np.ndarray:
    """The array of a ``.npy`` file (memory-mapped read-only with ``mmap``); ``ValueError`` if it is not one."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"missing file {path}")
    with path.open("rb") as handle:
        magic = handle.read(len(NPY_MAGIC))
    if magic != NPY_MAGIC:
        raise ValueError(f"cannot read {str(path)!r} as a .npy file: it has no .npy header (write it with numpy.save)")
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (OSError, EOFError, ValueError) as error:
        raise ValueError(f"cannot read {str(path)!r} as a .npy file: {error}") from error


def read_npz(path: str | Path) -> dict[str, np.ndarray]:
    """All arrays of an ``.npz`` file, read into memory; ``ValueError`` if it is not a readable one."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"missing file {path}")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"cannot read {str(path)!r} as an .npz file: it is not a zip archive (write it with "
                         "numpy.savez)")
    try:
        with np.load(path, allow_pickle=False) as data:
            return {name: data[name] for name in data.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError, KeyError) as error:
        raise ValueError(f"cannot read {str(path)!r} as an .npz file: {error}") from error
