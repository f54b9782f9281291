"""Training checkpoints: ``checkpoint-{step}/`` folders of accelerate state, arvis's own training state and
``metadata.json``; what a checkpoint may hold, and how each file is read.

A checkpoint is written into a hidden staging folder (marked as arvis's); the training state, ``metadata.json``
and the folder's manifest are written last and the folder is then renamed into place, so an interrupted save
never leaves a folder that :func:`latest_checkpoint` would pick. Names carry the optimiser step explicitly
(accelerate's automatic naming does not restore its counter on resume). An existing folder is replaced, and old
checkpoints are pruned, only when they are arvis checkpoints holding nothing else (:mod:`arvis.folders`).

Resuming reads only the files of :data:`ALLOWED_FILES`, each in a way that cannot run code: accelerate's model
weights as safetensors, its optimizer, GradScaler and random-state files with ``torch.load(weights_only=True)``
(the small ones checked here first, so a bad file is an error naming it, not a silent skip), arvis's state as
safetensors and JSON. Any other file, notably the ``custom_checkpoint_*.pkl`` pickles of arvis before 0.2 (loaded by
accelerate with ``weights_only=False``), makes the checkpoint refused before anything is loaded.
"""

from __future__ import annotations

import json
import logging
import pickle
import re
import shutil
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import load as weights_only_load  # torch.load(weights_only=True) with numpy's safe globals
from safetensors import SafetensorError

from arvis.folders import (MANIFEST_FILE, files_under, json_object_or_none, replaceable_problem, swap_into_place,
                           write_manifest, written_by_arvis)
from arvis.train.state import TENSORS_FILE, VALUES_FILE, TrainingState

logger = logging.getLogger(__name__)

METADATA_FILE = "metadata.json"
KIND = "checkpoint"  # the kind in a checkpoint's manifest
STAGING_MARKER = ".arvis-staging"  # a staging folder arvis made (so a leftover one may be removed)
_NAME = re.compile(r"^checkpoint-(\d+)$")
# the files a checkpoint may hold (as names, N a number), each with its pattern and how resume reads it
ALLOWED_FILES: dict[str, tuple[str, str]] = {
    "model.safetensors, model_N.safetensors": (r"model(_\d+)?\.safetensors", "safetensors (accelerate)"),
    "optimizer.bin, optimizer_N.bin": (r"optimizer(_\d+)?\.bin", "torch.load(weights_only=True) (accelerate)"),
    "scaler.pt": (r"scaler\.pt", "torch.load(weights_only=True) (accelerate)"),
    "random_states_N.pkl": (r"random_states_\d+\.pkl", "torch.load(weights_only=True) (accelerate)"),
    TENSORS_FILE: (re.escape(TENSORS_FILE), "safetensors (arvis)"),
    VALUES_FILE: (re.escape(VALUES_FILE), "JSON (arvis)"),
    METADATA_FILE: (re.escape(METADATA_FILE), "JSON (arvis)"),
    MANIFEST_FILE: (re.escape(MANIFEST_FILE), "JSON (arvis)"),
}
PRECHECKED_PICKLES = re.compile(r"^(scaler\.pt|random_states_\d+\.pkl)$")  # small; accelerate skips bad RNG files
_ALLOWED = re.compile("^(" + "|".join(pattern for pattern, _ in ALLOWED_FILES.values()) + ")$")
_LEGACY = re.compile("^(" + "|".join(pattern for pattern, _ in ALLOWED_FILES.values())
                     + r"|custom_checkpoint_\d+\.pkl|" + re.escape(STAGING_MARKER) + ")$")


def random_state_keys() -> set[str]:
    """The entries accelerate's random-state file must hold for this machine's devices (it restores the CUDA
    generators when CUDA is present, and only logs a missing entry)."""
    keys = {"random_state", "numpy_random_seed", "torch_manual_seed"}
    if torch.cuda.is_available():
        keys.add("torch_cuda_manual_seed")
    return keys


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
    metadata = json_object_or_none(path)
    if metadata is None or not isinstance(metadata.get("step"), int):
        raise ValueError(f"{path} is corrupt: expected a JSON object with the integer 'step'")
    return metadata


def legacy_checkpoint_files(folder: Path) -> set[str] | None:
    """The files of a checkpoint written before manifests (accelerate's state, its pickles included, and
    ``metadata.json`` with the step), or None if ``folder`` is not one; a file of another name is left out (it is
    foreign)."""
    metadata = json_object_or_none(folder / METADATA_FILE)
    if metadata is None or not isinstance(metadata.get("step"), int):
        return None
    return {name for name in files_under(folder) if _LEGACY.match(name)}


def staging_is_ours(staging: Path) -> bool:
    """Whether a leftover staging folder is one arvis made: it holds the staging marker or an arvis checkpoint
    manifest (a save that died just before its rename), or only files of checkpoint names (arvis 0.1's)."""
    return (staging / STAGING_MARKER).is_file() or written_by_arvis(staging, KIND) is not None \
        or all(_LEGACY.match(name) for name in files_under(staging))


def check_checkpoint_files(checkpoint: Path) -> None:
    """Raises ``ValueError`` naming every file of ``checkpoint`` that resume would not read safely, and the small
    accelerate pickles (GradScaler, random states) that ``torch.load(weights_only=True)`` refuses or that are
    corrupt. (accelerate only logs a random-state file it cannot read, which would make resume silently
    inexact.) The optimizer files, large, are read once, by accelerate, also with ``weights_only=True``."""
    names = sorted(files_under(checkpoint))
    refused = [name for name in names if not _ALLOWED.match(name)]
    if refused:
        pickles = [name for name in refused if name.startswith("custom_checkpoint_")]
        why = (f" ({', '.join(pickles)}: full pickles, which arvis before 0.2 wrote for the schedules and EMA; "
               "unpickling them could run code)" if pickles else "")
        raise ValueError(
            f"refusing to resume from {checkpoint}: it holds files arvis does not read{why}: {', '.join(refused)}. "
            f"A checkpoint may hold only the files arvis and accelerate write ({'; '.join(ALLOWED_FILES)}); "
            "remove the checkpoint (or those files) or start over with run.resume=never"
        )
    for name in names:
        if PRECHECKED_PICKLES.match(name):
            try:
                value = weights_only_load(checkpoint / name, map_location="cpu")
            except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, AttributeError) as error:
                raise ValueError(f"refusing to resume from {checkpoint}: {name} cannot be read with "
                                 f"torch.load(weights_only=True) ({str(error).splitlines()[0]}); it is corrupt or "
                                 "holds objects beyond tensors. Resume from another checkpoint or start over with "
                                 "run.resume=never") from error
            missing = random_state_keys() - set(value) if isinstance(value, dict) else random_state_keys()
            if name.startswith("random_states_") and missing:
                raise ValueError(f"refusing to resume from {checkpoint}: {name} does not hold accelerate's random "
                                 f"states for this machine (missing {sorted(missing)}; a checkpoint saved without "
                                 "CUDA lacks the CUDA generators), so the run would not continue exactly; resume "
                                 "from another checkpoint or start over with run.resume=never")


def load_checkpoint(accelerator: Accelerator, checkpoint: Path, state: TrainingState) -> int:
    """Checks ``checkpoint`` (:func:`check_checkpoint_files`), restores accelerate's state and ``state``;
    returns its optimiser step."""
    checkpoint = Path(checkpoint)
    if not checkpoint.is_dir():
        raise FileNotFoundError(f"checkpoint folder {checkpoint} does not exist")
    step = read_metadata(checkpoint)["step"]
    check_checkpoint_files(checkpoint)
    random_states = checkpoint / f"random_states_{accelerator.process_index}.pkl"
    if not random_states.is_file():
        raise ValueError(f"refusing to resume from {checkpoint}: {random_states.name} is missing, so this process's "
                         "random state cannot be restored; resume with as many processes as the run was saved with")
    try:
        accelerator.load_state(str(checkpoint))
    except (pickle.UnpicklingError, EOFError, RuntimeError, SafetensorError, KeyError) as error:
        # an optimizer file refused by weights_only=True or cut short, a corrupt weights file, a state of another
        # model: the checkpoint cannot be resumed as it is
        raise ValueError(f"refusing to resume from {checkpoint}: accelerate's model or optimizer state cannot be "
                         f"read (with torch.load(weights_only=True) for the optimizer) or does not fit this run: "
                         f"{str(error).splitlines()[0] if str(error) else type(error).__name__}; resume from "
                         "another checkpoint or start over with run.resume=never") from error
    state.load(checkpoint)
    return step


def save_checkpoint(accelerator: Accelerator, folder: str | Path, step: int, metadata: dict, keep_last: int,
                    state: TrainingState) -> Path:
    """Saves accelerate state (every process) and ``state`` as ``folder/checkpoint-{step}``; keeps the newest
    ``keep_last`` arvis checkpoints (a folder holding other files is kept, with a warning)."""
    folder = Path(folder)
    final = folder / f"checkpoint-{step}"
    staging = folder / f".checkpoint-{step}.saving"
    # Every process checks (read only), so that all raise together rather than leave the others at the barrier.
    problem = replaceable_problem(final, KIND, legacy_checkpoint_files)
    if problem is None and staging.exists() and not staging_is_ours(staging):
        problem = f"{staging} exists and holds files arvis did not write"
    if problem:
        raise ValueError(f"cannot save checkpoint {final}: {problem}; move those files away")
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if staging.exists():  # a save that died earlier
            shutil.rmtree(staging)
        staging.mkdir(parents=True)
        (staging / STAGING_MARKER).touch()
    accelerator.wait_for_everyone()
    accelerator.save_state(str(staging), safe_serialization=True)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        state.save(staging)
        (staging / METADATA_FILE).write_text(json.dumps({"step": step, **metadata}, indent=2) + "\n")
        (staging / STAGING_MARKER).unlink()
        write_manifest(staging, KIND)
        swap_into_place(staging, final)
        for _, old in complete_checkpoints(folder)[:-keep_last] if keep_last > 0 else []:
            problem = replaceable_problem(old, KIND, legacy_checkpoint_files)
            if problem:
                logger.warning("keeping old checkpoint %s: %s", old, problem)
            else:
                shutil.rmtree(old)
    accelerator.wait_for_everyone()
    return final
