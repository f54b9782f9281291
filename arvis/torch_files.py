"""Reading weight files safely: safetensors, or torch pickles with ``weights_only=True`` (tensors and plain
containers only), so no file arvis is given can run code when it is read.

Every loader of outside weights goes through here: the checkpoint converters, LPIPS's VGG and lin weights,
the Inception weights of the image metrics.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor


def load_weights_only(path: str | Path, safe_globals: Sequence[type] = ()) -> object:
    """``torch.load(path, map_location="cpu", weights_only=True)``, allowing only ``safe_globals`` besides
    tensors and containers; a file that needs other pickled objects, or a corrupt one, raises ``ValueError``."""
    try:
        with torch.serialization.safe_globals(list(safe_globals)):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise ValueError(
            f"{path} needs pickled Python objects beyond tensors, which torch.load(weights_only=True) refuses; "
            f"arvis does not unpickle arbitrary objects. Re-save the file as a plain state dict "
            f"(torch.save(model.state_dict(), ...)) or as safetensors. ({str(error).splitlines()[0]})"
        ) from error
    except (RuntimeError, EOFError, OSError, ValueError, KeyError) as error:
        raise ValueError(f"cannot read weights file {path}: {str(error).splitlines()[0] if str(error) else error!r}") \
            from error


def load_state_dict_file(path: str | Path) -> dict[str, Tensor]:
    """A flat ``{name: tensor}`` state dict from ``.safetensors`` (by suffix) or a torch pickle (``.pth``, ``.pt``,
    ...) read with :func:`load_weights_only`; anything else is a ``ValueError`` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist")
    if path.suffix == ".safetensors":
        try:
            state = load_file(str(path))
        except (SafetensorError, OSError) as error:
            raise ValueError(f"cannot read safetensors file {path}: {error}") from error
    else:
        state = load_weights_only(path)
    if not isinstance(state, Mapping):
        raise ValueError(f"{path} holds a {type(state).__name__}, not a state dict of tensors")
    not_tensors = sorted(str(key) for key, value in state.items() if not isinstance(value, Tensor))
    if not_tensors:
        raise ValueError(f"{path} is not a flat state dict: entries {not_tensors[:5]} are not tensors")
    return dict(state)
