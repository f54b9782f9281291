"""Sharded, resumable sampling into a folder of PNGs, and its export to an ADM-style ``.npz``.

Evaluation protocols (FID, IS, precision/recall with OpenAI's ADM evaluator) sample a fixed
set of images, e.g. 50,000 with 50 per class. Sample ``i`` of a run is defined by the run
alone: its class is ``labels[i % len(labels)]`` (or ``i % num_classes`` when no labels are
given) and its random stream is seeded by (seed, i), as in :func:`arvis.generate`. So the
set does not depend on batch size, on how many processes share the work, or on how often a
run was interrupted.

Folder layout::

    protocol.json        what defines the samples (seed, labels, sampler and its settings, components,
                         device type and dtype)
    images/000000.png    sample i as images/{i:06d}.png, written atomically
    samples.npz          arr_0 (n, h, w, 3) uint8 in index order, labels (n,) int64 class ids, or with
                         prompts prompt_index (n,) int64 into the protocol's prompts (collect_npz)

Process r of k owns the indices i with i % k == r. A PNG that exists is done: a rerun
skips it, so a killed run resumes where it stopped. This module stays distributed-agnostic;
the ``arvis sample`` command reads the process index and count from accelerate.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from arvis.api import draw_images, to_uint8
from arvis.checks import check_class_ids, check_counts
from arvis.data.transforms import as_rgb
from arvis.folders import PARTIAL_MARKER, write_file_atomically
from arvis.pipeline import Pipeline
from arvis.samplers import SamplerSettings, sampler_for
from arvis.samplers.base import recorded_settings, sampler_name_of
from arvis.samplers.logits import per_sample_generators

logger = logging.getLogger(__name__)

PROTOCOL_FILE = "protocol.json"
IMAGES_FOLDER = "images"
NPZ_FILE = "samples.npz"
_INFORMATIONAL_KEYS = ("arvis_version",)  # recorded but not required to match on resume
# and "sampler", written since samplers have their own settings (older protocols get it from their generator)
_REQUIRED_KEYS = frozenset({"num_samples", "seed", "labels", "sampling", "image_size"})


def sample_to_folder(
    pipeline: Pipeline | str | Path,
    output_dir: str | Path,
    *,
    num_samples: int,
    seed: int = 0,
    labels: Sequence[int] | None = None,
    prompts: Sequence[str] | None = None,
    batch_size: int = 64,
    process_index: int = 0,
    num_processes: int = 1,
    progress: bool = False,
    device: str | torch.device | None = None,
    sampler: str | None = None,
    **sampling_overrides: Any,
) -> Path:
    """Samples this process's share of ``num_samples`` images into ``output_dir/images``.

    Args:
        pipeline: a :class:`Pipeline`, or the path of a saved one (then recorded in the protocol).
        output_dir: the sample folder (created if needed; see the module docstring).
        num_samples: n, the size of the whole set over all processes.
        seed: sample i draws from a ``torch.Generator`` seeded by (seed, i).
        labels: class ids cycled over the indices (sample i has ``labels[i % len(labels)]``);
            ``None`` balances all classes (sample i has class ``i % num_classes``).
        prompts: for a text-conditional pipeline (required there), prompt strings cycled like ``labels``.
        batch_size: images sampled per forward batch.
        process_index, num_processes: this process owns the indices i with
            ``i % num_processes == process_index``.
        progress: show a progress bar over batches.
        device: where to load ``pipeline`` when it is a path (default CPU).
        sampler: another of the generator's samplers than the stored one (see :meth:`Pipeline.settings`).
        **sampling_overrides: the sampler's settings by field name (``cfg_scale``, ``top_k``, ...); ``None``
            keeps the pipeline's stored value; a name the sampler does not have is an error.

    Returns:
        ``output_dir``.

    Raises:
        ValueError: on bad arguments, or if ``output_dir`` holds samples of other settings.
    """
    check_counts(num_samples=num_samples, seed=seed, batch_size=batch_size, num_processes=num_processes)
    if isinstance(process_index, bool) or not isinstance(process_index, int) or not 0 <= process_index < num_processes:
        raise ValueError(f"process_index must be an integer in [0, {num_processes - 1}], got {process_index!r}")
    pipeline, pipeline_path = _resolve_pipeline(pipeline, device)
    _require_images(pipeline)
    sampling, label_policy, protocol = _protocol(pipeline, pipeline_path, num_samples, seed, labels, prompts,
                                                 sampler, sampling_overrides)
    output_dir = Path(output_dir)
    images_dir = output_dir / IMAGES_FOLDER
    _claim_folder(output_dir, protocol)

    owned = range(process_index, num_samples, num_processes)
    _remove_partial_files(images_dir, set(owned))
    pending = [index for index in owned if not _image_path(images_dir, index).exists()]
    logger.info("process %d/%d: %d of its %d samples to draw (%d already in %s)", process_index, num_processes,
                len(pending), len(owned), len(owned) - len(pending), images_dir)
    for indices, images in _draw(pipeline, sampling, label_policy, seed, pending, batch_size, progress):
        for index, image in zip(indices, images, strict=True):
            _write_png_atomically(image, _image_path(images_dir, index))
    return output_dir


def sample_in_memory(
    pipeline: Pipeline | str | Path,
    *,
    num_samples: int,
    seed: int = 0,
    labels: Sequence[int] | None = None,
    prompts: Sequence[str] | None = None,
    batch_size: int = 64,
    progress: bool = False,
    device: str | torch.device | None = None,
    sampler: str | None = None,
    **sampling_overrides: Any,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """The same images as :func:`sample_to_folder` with these arguments, returned instead of written.

    Returns:
        images (n, h, w, 3) uint8, labels (n,) int64 class ids (None with prompts: a prompt is not a class) and
        the protocol record.
    """
    check_counts(num_samples=num_samples, seed=seed, batch_size=batch_size)
    pipeline, pipeline_path = _resolve_pipeline(pipeline, device)
    _require_images(pipeline)
    sampling, label_policy, protocol = _protocol(pipeline, pipeline_path, num_samples, seed, labels, prompts,
                                                 sampler, sampling_overrides)
    images = [batch for _, batch in _draw(pipeline, sampling, label_policy, seed, range(num_samples), batch_size,
                                          progress)]
    sample_labels = class_labels_of(label_policy, num_samples)
    return np.concatenate(images), sample_labels, protocol


def _resolve_pipeline(pipeline: Pipeline | str | Path, device) -> tuple[Pipeline, str | None]:
    """The pipeline (loaded on ``device``, default CPU, when given as a path) and its resolved path."""
    if not isinstance(pipeline, Pipeline):
        return Pipeline.from_pretrained(pipeline, device=device or "cpu"), str(Path(pipeline).resolve())
    if device is not None and torch.device(device) != pipeline.device:
        raise ValueError(
            f"the pipeline is on {pipeline.device}, not {device}; move it with pipeline.to({str(device)!r})"
        )
    return pipeline, None


def _protocol(pipeline: Pipeline, pipeline_path: str | None, num_samples: int, seed: int,
              labels: Sequence[int] | None, prompts: Sequence[str] | None, sampler: str | None,
              overrides: dict[str, Any]) -> tuple[SamplerSettings, dict, dict]:
    """The sampler settings, the condition policy and the record of everything that defines the samples."""
    sampling = pipeline.settings(sampler, **overrides)
    label_policy = _condition_policy(pipeline, labels, prompts)
    protocol = {
        "num_samples": int(num_samples),
        "seed": int(seed),
        "labels": label_policy,
        "sampler": sampler_name_of(sampling),
        "sampling": sampling.to_dict(),
        "pipeline": pipeline_path,
        "tokenizer": _component_summary(pipeline.tokenizer),
        "generator": _component_summary(pipeline.generator),
        "image_size": list(pipeline.tokenizer.image_size),
        # CPU and CUDA generators draw different streams from one seed; precision changes the images too
        "device_type": pipeline.device.type,
        "dtype": str(next(pipeline.generator.parameters()).dtype).removeprefix("torch."),
        "arvis_version": _arvis_version(),
    }
    return sampling, label_policy, protocol


def _draw(pipeline: Pipeline, sampling: SamplerSettings, label_policy: dict[str, Any], seed: int,
          indices: Sequence[int], batch_size: int, progress: bool):
    """Yields (indices, images (b, h, w, 3) uint8) for ``indices`` in batches of ``batch_size``."""
    sampler = sampler_for(pipeline.generator, settings=sampling)
    batches = [indices[start:start + batch_size] for start in range(0, len(indices), batch_size)]
    for batch in tqdm(batches, disable=not progress, desc="sampling"):
        pixels = draw_images(pipeline, sampler, condition_for(pipeline, label_policy, batch),
                             generators_for(seed, batch, pipeline.device))
        yield batch, to_uint8(pixels)


def collect_npz(output_dir: str | Path) -> Path:
    """Writes ``output_dir/samples.npz`` once every sample of the run exists.

    The file holds ``arr_0`` (n, h, w, 3) uint8 in index order, as OpenAI's ADM evaluator
    reads it, and ``labels`` (n,) int64. It is written atomically.

    Raises:
        FileNotFoundError: ``output_dir`` has no ``protocol.json``.
        ValueError: samples are missing (their count and the first indices are named) or an
            image has the wrong size.
    """
    output_dir = Path(output_dir)
    protocol = read_protocol(output_dir)
    num_samples = protocol["num_samples"]
    height, width = protocol["image_size"]
    images_dir = output_dir / IMAGES_FOLDER
    missing = [index for index in range(num_samples) if not _image_path(images_dir, index).is_file()]
    if missing:
        raise ValueError(
            f"{len(missing)} of {num_samples} samples are missing in {images_dir} (first: {missing[:5]}); "
            "run sample_to_folder (or arvis sample) again with the same settings to finish them"
        )
    images = np.empty((num_samples, height, width, 3), dtype=np.uint8)
    for index in range(num_samples):
        path = _image_path(images_dir, index)
        with Image.open(path) as image:
            array = np.asarray(as_rgb(image))
        if array.shape != (height, width, 3):
            raise ValueError(f"{path} is {array.shape[1]}x{array.shape[0]}, not the run's {width}x{height}")
        images[index] = array
    policy = protocol["labels"]
    labels = class_labels_of(policy, num_samples)
    extra = {"labels": labels} if labels is not None else \
        {"prompt_index": np.arange(num_samples, dtype=np.int64) % len(policy["values"])}
    return write_file_atomically(output_dir / NPZ_FILE, lambda temporary: save_npz(temporary, arr_0=images, **extra))


def read_protocol(output_dir: str | Path) -> dict[str, Any]:
    """The ``protocol.json`` of a sample folder."""
    path = Path(output_dir) / PROTOCOL_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; {Path(output_dir)} is not a sample folder written by arvis")
    try:
        protocol = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"corrupt {path}: {error}") from error
    missing = sorted(_REQUIRED_KEYS - set(protocol)) if isinstance(protocol, dict) else sorted(_REQUIRED_KEYS)
    if missing:
        raise ValueError(f"{path} lacks the entries {missing}; it was not written by arvis.sample")
    return protocol


def condition_for(pipeline: Pipeline, policy: dict[str, Any], indices: Sequence[int]):
    """The condition of the samples at ``indices`` under a protocol's ``labels`` entry."""
    if policy["policy"] == "prompts":
        values = policy["values"]
        return pipeline.condition(prompts=[values[index % len(values)] for index in indices])
    return pipeline.condition(class_labels=[label_for(policy, index) for index in indices])


def label_for(label_policy: dict[str, Any], index: int) -> int:
    """The class id of sample ``index`` under a protocol's class ``labels`` entry."""
    if label_policy["policy"] == "balanced":
        return index % label_policy["num_classes"]
    values = label_policy["values"]
    return values[index % len(values)]


def class_labels_of(policy: dict[str, Any], num_samples: int) -> np.ndarray | None:
    """(n,) int64 class ids of samples 0..n-1, or None under the prompt policy."""
    if policy["policy"] == "prompts":
        return None
    return np.array([label_for(policy, index) for index in range(num_samples)], dtype=np.int64)


def generators_for(seed: int, indices: Sequence[int], device: torch.device | str) -> list[torch.Generator]:
    """One generator per sample index (any indices, not only a contiguous run), seeded by (seed, index)."""
    return [per_sample_generators(seed, index, 1, device)[0] for index in indices]


def _condition_policy(pipeline: Pipeline, labels: Sequence[int] | None,
                      prompts: Sequence[str] | None) -> dict[str, Any]:
    """The protocol's ``labels`` entry: balanced or cycled class ids, or cycled prompts for a text pipeline."""
    takes_prompts = "prompt" in pipeline.generator.condition_fields
    if "control" in pipeline.generator.condition_fields:
        raise ValueError("this pipeline's generator takes a control map per sample (ControlAR), which sample sets do "
                         "not draw; sample it with arvis.generate(..., control=maps) or docs/scripts/controlar_toy.py")
    if not takes_prompts:
        if prompts is not None:
            raise ValueError("this pipeline's generator is class-conditional; pass labels, not prompts")
        return _label_policy(labels, pipeline.generator.num_classes)
    if labels is not None or prompts is None:
        raise ValueError("this pipeline's generator is text-conditional; pass prompts (a list of strings), not labels")
    if isinstance(prompts, str) or not prompts or not all(isinstance(prompt, str) for prompt in prompts):
        raise ValueError(f"prompts must be a non-empty list of strings, got {prompts!r:.80}")
    pipeline.condition(prompts=list(prompts))  # every prompt encodes: unknown words and lengths fail here
    return {"policy": "prompts", "values": list(prompts)}


def _label_policy(labels: Sequence[int] | None, num_classes: int) -> dict[str, Any]:
    if labels is None:
        return {"policy": "balanced", "num_classes": num_classes}
    return {"policy": "cycle", "values": check_class_ids(labels, num_classes, "labels")}


def _component_summary(component) -> dict[str, Any]:
    return {"type": type(component).__name__, "config": component.config.to_dict()}


def _with_current_fields(protocol: dict[str, Any]) -> dict[str, Any]:
    """A recorded protocol with the configs read back as saved configs are (``Config.from_saved``), so that a
    folder sampled by an earlier version, whose configs lack later fields, matches the same settings now."""
    from arvis.generators.base import GENERATORS
    from arvis.tokenizers.base import TOKENIZERS

    upgraded = dict(protocol)
    try:
        for key, registry in (("tokenizer", TOKENIZERS), ("generator", GENERATORS)):
            summary = protocol[key]
            config = registry.get_class(summary["type"]).config_class.from_saved(summary["config"])
            upgraded[key] = {**summary, "config": config.to_dict()}
        settings = recorded_settings(GENERATORS.get_class(protocol["generator"]["type"]), protocol, PROTOCOL_FILE)
        upgraded["sampler"] = sampler_name_of(settings)
        upgraded["sampling"] = settings.to_dict()
    except (KeyError, TypeError, ValueError):
        return protocol  # not readable as this version's configs: compared as recorded (and so refused)
    return upgraded


def _arvis_version() -> str:
    from arvis import __version__

    return __version__


def _claim_folder(output_dir: Path, protocol: dict[str, Any]) -> None:
    """Checks ``protocol`` against the folder's, or writes it; samples of two settings never mix.

    Every process writes the (identical) protocol before its first image, so images without
    a protocol are foreign files, not an interrupted run of this module.
    """
    images_dir = output_dir / IMAGES_FOLDER
    has_images = images_dir.is_dir() and any(images_dir.glob("*.png"))  # listed before the protocol is read
    path = output_dir / PROTOCOL_FILE
    if path.is_file():
        existing = _with_current_fields(read_protocol(output_dir))
        differing = sorted(key for key in set(existing) | set(protocol)
                           if key not in _INFORMATIONAL_KEYS and existing.get(key) != protocol.get(key))
        if differing:
            raise ValueError(
                f"{output_dir} holds samples of other settings (differing keys: {differing}, see {path}); "
                "sample into a new folder, or rerun with the recorded settings to resume"
            )
        return
    if has_images:
        raise ValueError(f"{images_dir} holds PNG files but {path} is missing; sample into a new folder")
    images_dir.mkdir(parents=True, exist_ok=True)
    write_file_atomically(path, lambda temporary: temporary.write_text(json.dumps(protocol, indent=2) + "\n"))


def _image_path(images_dir: Path, index: int) -> Path:
    return images_dir / f"{index:06d}.png"


def _write_png_atomically(image: np.ndarray, path: Path) -> None:
    """Writes (h, w, 3) uint8 to ``path`` via a temporary sibling, so a killed run leaves no partial PNG."""
    write_file_atomically(path, lambda temporary: Image.fromarray(np.ascontiguousarray(image)).save(temporary,
                                                                                                   format="PNG"))


def _require_images(pipeline: Pipeline) -> None:
    if len(pipeline.tokenizer.pixel_shape) != 3:
        raise ValueError("this pipeline generates clips; image-set sampling (arvis sample, arvis eval) takes image "
                         "pipelines. Sample clips with arvis generate --npy FILE (or --frames DIR) or "
                         "arvis.generate(..., output_type='np')")


def save_npz(path: Path, **arrays: np.ndarray) -> None:
    """``np.savez`` to exactly ``path`` (numpy would append ``.npz`` to a name without it)."""
    with open(path, "wb") as file:
        np.savez(file, **arrays)


def _remove_partial_files(images_dir: Path, owned: set[int]) -> None:
    """Deletes temporary files that an interrupted run of this process's indices left behind."""
    for path in images_dir.glob(f".*.png{PARTIAL_MARKER}*"):
        stem = path.name[1:].split(".", 1)[0]
        if stem.isdigit() and int(stem) in owned:
            path.unlink(missing_ok=True)
