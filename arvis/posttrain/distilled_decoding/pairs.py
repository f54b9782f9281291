"""Distilled Decoding's training data: (noise sequence, class, token sequence) pairs from the teacher.

Shapes: n pairs, l tokens, e code dimension.

The teacher pipeline samples with its own policy (guidance, temperature, top-k / top-p), but each draw is
the flow-matching map (:mod:`arvis.samplers.flow_matching`) of a Gaussian noise vector, so a pair's
tokens are a deterministic function of its noise and class. Pair i has class ``i % num_classes`` and
noise from a generator seeded by (seed, i).

Pairs are written in shards ``shard-00000.safetensors`` (``noise`` (n, l, e) float32, ``labels`` (n,),
``tokens`` (n, l)) next to ``pairs.json``, which records the settings. Shards are written atomically and
a rerun with the same settings skips the shards already there (resumable); a folder made with other
settings (or another teacher: the manifest holds a digest of its weights) is refused. Process p of P makes
the shards s with s % P == p; with several processes, pass a ``barrier`` so that process 0 writes the
manifest before the others check it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch.utils.data import TensorDataset

from arvis.config import read_json
from arvis.folders import write_file_atomically
from arvis.pipeline import Pipeline
from arvis.samplers.flow_matching import FlowMatchingDraw
from arvis.samplers.logits import normal_noise, per_sample_generators
from arvis.samplers.base import recorded_settings, sampler_name_of
from arvis.samplers.settings import NextScaleSettings

logger = logging.getLogger(__name__)

MANIFEST = "pairs.json"


def shard_path(folder: Path, shard: int) -> Path:
    return folder / f"shard-{shard:05d}.safetensors"


def pair_settings(pipeline: Pipeline, *, num_pairs: int, shard_size: int, seed: int, ode_steps: int,
                  pipeline_path: str | None) -> dict[str, Any]:
    """What determines the pairs (the manifest's content): the settings, the teacher's weights (a SHA-256 of
    the tokenizer's and generator's tensors) and the device type, whose generators draw different noise."""
    generator = pipeline.generator
    return {"num_pairs": num_pairs, "shard_size": shard_size, "seed": seed, "ode_steps": ode_steps,
            "teacher": type(generator).__name__, "token_length": generator.layout.length,
            "code_dim": int(pipeline.tokenizer.code_vectors().shape[1]), "num_classes": generator.num_classes,
            "sampler": pipeline.sampler_name, "sampling": pipeline.sampling.to_dict(),
            "weights_sha256": weights_digest(pipeline),
            "device": pipeline.device.type, "pipeline": pipeline_path}


def weights_digest(pipeline: Pipeline) -> str:
    """SHA-256 over the names and bytes of the tokenizer's and generator's tensors."""
    digest = hashlib.sha256()
    for prefix, module in (("tokenizer.", pipeline.tokenizer), ("generator.", pipeline.generator)):
        for name, tensor in module.state_dict().items():
            digest.update((prefix + name).encode())
            digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def generate_pairs(pipeline: Pipeline, folder: str | Path, *, num_pairs: int, shard_size: int = 1000, seed: int = 0,
                   ode_steps: int = 128, batch_size: int = 256, process_index: int = 0, num_processes: int = 1,
                   pipeline_path: str | None = None, barrier: Callable[[], None] | None = None) -> Path:
    """Makes this process's missing shards of ``num_pairs`` teacher pairs in ``folder``; returns ``folder``.

    ``barrier`` (e.g. ``accelerator.wait_for_everyone``) is called once every process has computed the settings
    and process 0 has claimed the folder; the other processes check the folder after it.
    """
    if num_pairs < 1 or shard_size < 1 or batch_size < 1 or ode_steps < 1:
        raise ValueError(f"num_pairs, shard_size, batch_size and ode_steps must be >= 1, got {num_pairs}, "
                         f"{shard_size}, {batch_size}, {ode_steps}")
    if isinstance(pipeline.sampling, NextScaleSettings) and pipeline.sampling.more_smooth:
        raise ValueError("the teacher pipeline samples with more_smooth, whose Gumbel mixtures are not a function of "
                         "the pair's noise; save the pipeline with sampling more_smooth=false to make pairs")
    folder = Path(folder)
    settings = pair_settings(pipeline, num_pairs=num_pairs, shard_size=shard_size, seed=seed, ode_steps=ode_steps,
                             pipeline_path=pipeline_path)
    if process_index == 0:
        claim_folder(folder, settings, write=True)
    if barrier is not None:
        barrier()
    if process_index != 0:
        claim_folder(folder, settings, write=False)
    code_vectors = pipeline.tokenizer.code_vectors().detach().float()
    sampler = pipeline.sampler()
    generator, device = pipeline.generator, pipeline.device
    num_shards = math.ceil(num_pairs / shard_size)
    mine = [shard for shard in range(num_shards) if shard % num_processes == process_index]
    pending = [shard for shard in mine if not shard_path(folder, shard).exists()]
    logger.info("pairs: %d of this process's %d shards to make in %s", len(pending), len(mine), folder)
    for shard in pending:
        first, last = shard * shard_size, min(num_pairs, (shard + 1) * shard_size)
        parts: dict[str, list[torch.Tensor]] = {"noise": [], "labels": [], "tokens": []}
        for start in range(first, last, batch_size):
            count = min(batch_size, last - start)
            labels = (torch.arange(start, start + count) % generator.num_classes).to(device)
            rngs = per_sample_generators(seed, start, count, device)
            noise = normal_noise((count, generator.layout.length, code_vectors.shape[1]), rngs, device)
            tokens = sampler(generator, labels, draw=FlowMatchingDraw(code_vectors, noise, ode_steps))
            for name, value in (("noise", noise), ("labels", labels), ("tokens", tokens)):
                parts[name].append(value.cpu())
        tensors = {name: torch.cat(values).contiguous() for name, values in parts.items()}
        write_file_atomically(shard_path(folder, shard),
                              lambda temporary, tensors=tensors: save_file(tensors, str(temporary)))
        logger.info("pairs: wrote shard %d (%d pairs)", shard, last - first)
    return folder


def claim_folder(folder: Path, settings: dict[str, Any], *, write: bool) -> None:
    """Checks that ``folder`` is empty or holds pairs of exactly these ``settings``; writes the manifest."""
    manifest = folder / MANIFEST
    if manifest.exists():
        existing = with_sampler(read_json(manifest), folder / MANIFEST)
        differing = sorted(key for key in set(existing) | set(settings) if existing.get(key) != settings.get(key))
        changed = [key for key in differing if key != "pipeline"]  # where the teacher was read from may differ
        if changed:
            raise ValueError(f"{folder} holds pairs made with other settings (differing: {changed}); use another "
                             "pairs folder or delete this one")
        return
    if folder.is_dir() and any(folder.iterdir()):
        raise ValueError(f"{folder} holds files but no {MANIFEST}; choose an empty or new folder for the pairs")
    if write:
        write_file_atomically(manifest, lambda temporary: temporary.write_text(json.dumps(settings, indent=2) + "\n"))


def with_sampler(manifest: Any, where: Path) -> Any:
    """A manifest's sampler and settings as this version writes them (one written before samplers had their own
    settings holds one ``sampling`` dict of every field and no ``sampler``: the teacher's default sampler's)."""
    if not isinstance(manifest, dict):
        return manifest
    from arvis.generators.base import GENERATORS

    try:
        settings = recorded_settings(GENERATORS.get_class(manifest["teacher"]), manifest, str(where))
    except (KeyError, TypeError, ValueError):
        return manifest  # not readable as this version's settings: compared as recorded (and so refused)
    return {**manifest, "sampler": sampler_name_of(settings), "sampling": settings.to_dict()}


def load_pairs(folder: str | Path) -> tuple[TensorDataset, dict[str, Any]]:
    """All shards of a complete pair folder -> TensorDataset(noise, labels, tokens) and the settings."""
    folder = Path(folder)
    if not (folder / MANIFEST).is_file():
        raise FileNotFoundError(f"{folder} holds no {MANIFEST}; make the pairs first (generate_pairs)")
    settings = read_json(folder / MANIFEST)
    num_shards = math.ceil(settings["num_pairs"] / settings["shard_size"])
    missing = [shard_path(folder, shard).name for shard in range(num_shards) if not shard_path(folder, shard).exists()]
    if missing:
        raise FileNotFoundError(f"{folder} lacks the shards {missing[:5]}{' ...' if len(missing) > 5 else ''}; rerun "
                                "the pair generation to finish them")
    parts: dict[str, list[torch.Tensor]] = {"noise": [], "labels": [], "tokens": []}
    for shard in range(num_shards):
        try:
            tensors = load_file(str(shard_path(folder, shard)))
        except (SafetensorError, OSError) as error:
            raise ValueError(f"corrupt pair shard {shard_path(folder, shard)}: {error}; delete it and rerun the pair "
                             "generation") from error
        if set(tensors) != set(parts):
            raise ValueError(f"{shard_path(folder, shard)} holds {sorted(tensors)}, not {sorted(parts)}")
        for name in parts:
            parts[name].append(tensors[name])
    noise, labels, tokens = (torch.cat(parts[name]) for name in ("noise", "labels", "tokens"))
    if len(noise) != settings["num_pairs"]:
        raise ValueError(f"{folder} holds {len(noise)} pairs, its manifest says {settings['num_pairs']}")
    return TensorDataset(noise, labels, tokens), settings
