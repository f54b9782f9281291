"""Image sets for evaluation, converted once to what feature extractors take: uint8 (3, h, w).

A source is one of:

- a folder of images (searched recursively, hidden files skipped); every file must be an
  image and all must have one size, or :func:`open_images` names the offending files;
- an ``.npz`` file with ``arr_0`` (n, h, w, 3) uint8, the reference evaluator's format
  (``arvis sample`` writes one); an optional ``labels`` (n,) holds class ids;
- an in-memory tensor or array (n, 3, h, w) or (n, h, w, 3): uint8 in [0, 255], or float in
  [0, 1] or [-1, 1]. Pass ``value_range`` to say which; without it uint8 means [0, 255] and
  floats are read as [0, 1] when all values lie there, else as [-1, 1] when they lie there
  (the choice is logged), else the set is refused;
- samples of a pipeline (:func:`sample_pipeline`).

Shapes: n images, h w height and width.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from einops import rearrange
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from arvis.data.folder import IMAGE_EXTENSIONS
from arvis.data.transforms import as_rgb
from arvis.numpy_files import read_npz

logger = logging.getLogger(__name__)

ImageSource = str | Path | Tensor | np.ndarray
MAX_LISTED = 5


@dataclasses.dataclass(frozen=True)
class ImageSet:
    """Images ready for a feature extractor, and what they are.

    Attributes:
        dataset: items are uint8 tensors (3, h, w).
        description: JSON-ready record of the source (kind, path, number and size of images).
        fingerprint: identifies the data for the feature cache (path, size and modification time
            of files); None for in-memory images, which are never cached.
        labels: (n,) int64 class ids when the source holds them, else None.
    """

    dataset: Dataset
    description: dict[str, Any]
    fingerprint: str | None = None
    labels: Tensor | None = None

    def __len__(self) -> int:
        return len(self.dataset)

    def tensor(self) -> Tensor:
        """All images at once: (n, 3, h, w) uint8."""
        if isinstance(self.dataset, UInt8Images):
            return self.dataset.images
        return torch.stack([self.dataset[index] for index in range(len(self.dataset))])


class UInt8Images(Dataset):
    """Items of an (n, 3, h, w) uint8 tensor."""

    def __init__(self, images: Tensor) -> None:
        self.images = images

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> Tensor:
        return self.images[index]


class ImageFiles(Dataset):
    """Image files read as RGB uint8 tensors (3, h, w)."""

    def __init__(self, paths: Sequence[Path]) -> None:
        self.paths = list(paths)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> Tensor:
        with Image.open(self.paths[index]) as image:
            pixels = np.asarray(as_rgb(image))
        return torch.from_numpy(pixels.copy()).permute(2, 0, 1)


def open_images(source: ImageSource, *, value_range: tuple[float, float] | None = None,
                max_images: int | None = None) -> ImageSet:
    """Opens ``source`` (see the module docstring) and checks it; ``max_images`` keeps the first ones."""
    if max_images is not None and max_images < 1:
        raise ValueError(f"max_images must be >= 1, got {max_images}")
    if isinstance(source, (Tensor, np.ndarray)):
        images = to_uint8_chw(source, value_range)[:max_images]
        return ImageSet(UInt8Images(images), {"kind": "memory", "num_images": len(images),
                                              "size": list(images.shape[-2:])})
    if value_range is not None:
        raise ValueError("value_range applies to in-memory tensors and arrays only; files are read as uint8")
    path = Path(source)
    if path.is_dir():
        return _open_folder(path, max_images)
    if path.suffix == ".npz":
        return _open_npz(path, max_images)
    if not path.exists():
        raise FileNotFoundError(f"image source {str(path)!r} does not exist; pass a folder of images or an .npz file")
    raise ValueError(f"{str(path)!r} is neither a folder of images nor an .npz file (arr_0: (n, h, w, 3) uint8)")


def to_uint8_chw(images: Tensor | np.ndarray, value_range: tuple[float, float] | None = None) -> Tensor:
    """(n, 3, h, w) or (n, h, w, 3) images in a known range -> (n, 3, h, w) uint8 on the CPU (rounded)."""
    tensor = torch.from_numpy(np.asarray(images)) if isinstance(images, np.ndarray) else images.detach().cpu()
    if tensor.ndim != 4:
        raise ValueError(f"expected images (n, 3, h, w) or (n, h, w, 3), got shape {tuple(tensor.shape)}")
    channels_first, channels_last = tensor.shape[1] == 3, tensor.shape[-1] == 3
    if channels_first and channels_last:
        raise ValueError(f"cannot tell channels from width in shape {tuple(tensor.shape)}; pass (n, 3, h, w) "
                         "images wider than 3 pixels")
    if not (channels_first or channels_last):
        raise ValueError(f"expected 3 colour channels, first or last, got shape {tuple(tensor.shape)}")
    if channels_last:
        tensor = rearrange(tensor, "n h w c -> n c h w")
    if tensor.shape[0] == 0:
        raise ValueError("the image set is empty")
    if tensor.dtype == torch.uint8:
        if value_range not in (None, (0, 255)):
            raise ValueError(f"uint8 images are in [0, 255], but value_range={value_range}")
        return tensor.contiguous()
    if not tensor.is_floating_point():
        raise ValueError(f"images must be uint8 or floating point, got {tensor.dtype}")
    tensor = tensor.float()
    if not torch.isfinite(tensor).all():
        raise ValueError("images contain NaN or inf")
    low, high = _value_range(tensor, value_range)
    unit = (tensor - low) / (high - low)
    return (unit * 255).round().to(torch.uint8)


def _value_range(images: Tensor, value_range: tuple[float, float] | None) -> tuple[float, float]:
    minimum, maximum = images.min().item(), images.max().item()
    if value_range is not None:
        low, high = (float(v) for v in value_range)
        if high <= low:
            raise ValueError(f"value_range must be (low, high) with low < high, got {value_range}")
        if minimum < low or maximum > high:
            raise ValueError(f"images span [{minimum:.4g}, {maximum:.4g}], outside value_range {value_range}")
        return low, high
    if minimum >= 0.0 and maximum <= 1.0:
        logger.info("float images read as [0, 1] (pass value_range to say otherwise)")
        return 0.0, 1.0
    if minimum >= -1.0 and maximum <= 1.0:
        logger.info("float images read as [-1, 1] (pass value_range to say otherwise)")
        return -1.0, 1.0
    raise ValueError(
        f"float images span [{minimum:.4g}, {maximum:.4g}], which is neither [0, 1] nor [-1, 1]; "
        "pass value_range=(low, high) or uint8 images"
    )


def _open_folder(folder: Path, max_images: int | None) -> ImageSet:
    files = sorted(path for path in folder.rglob("*")
                   if path.is_file() and not any(part.startswith(".") for part in path.relative_to(folder).parts))
    if not files:
        raise ValueError(f"image folder {str(folder)!r} is empty; expected image files ({', '.join(IMAGE_EXTENSIONS)})")
    others = [path for path in files if path.suffix.lower() not in IMAGE_EXTENSIONS]
    if others:
        raise ValueError(
            f"image folder {str(folder)!r} holds files that are not images: {_listed(others)}; "
            "move them out (an arvis sample folder keeps its images in images/)"
        )
    files = files[:max_images]
    sizes: dict[tuple[int, int], list[Path]] = {}
    for path in files:
        try:
            with Image.open(path) as image:
                sizes.setdefault(image.size, []).append(path)
        except (OSError, SyntaxError, ValueError) as error:
            raise ValueError(f"cannot read image {str(path)!r}: {error}; remove or replace the file") from error
    if len(sizes) > 1:
        found = "; ".join(f"{w}x{h}: {len(paths)} files, e.g. {paths[0].name}" for (w, h), paths in sizes.items())
        raise ValueError(f"images in {str(folder)!r} have different sizes ({found}); resize them to one size first")
    (width, height), = sizes
    stats = [path.stat() for path in files]
    fingerprint = "folder:" + str(folder.resolve()) + ":" + ",".join(
        f"{path.relative_to(folder)}:{stat.st_size}:{stat.st_mtime_ns}" for path, stat in zip(files, stats, strict=True))
    return ImageSet(ImageFiles(files), {"kind": "folder", "path": str(folder), "num_images": len(files),
                                        "size": [height, width]}, fingerprint)


def _open_npz(path: Path, max_images: int | None) -> ImageSet:
    arrays = read_npz(path)
    if "arr_0" not in arrays:
        hint = (" It holds reference statistics (mu, sigma), usable only as --real of fid."
                if {"mu", "sigma"} <= set(arrays) else "")
        raise ValueError(f"{str(path)!r} has no arr_0 (found {sorted(arrays)}); expected arr_0 (n, h, w, 3) "
                         f"uint8.{hint}")
    images = arrays["arr_0"]
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"{str(path)!r}: arr_0 must be (n, h, w, 3) uint8 (the reference evaluator's layout), "
                         f"got {images.shape} {images.dtype}")
    if 0 in images.shape[:3]:
        raise ValueError(f"{str(path)!r}: arr_0 has shape {images.shape}, with no images or no pixels")
    images = torch.from_numpy(images[:max_images])
    labels = None
    if "labels" in arrays:
        labels = torch.from_numpy(np.asarray(arrays["labels"], dtype=np.int64)[:max_images])
        if labels.shape != (images.shape[0],):
            raise ValueError(f"{str(path)!r}: labels must be ({images.shape[0]},), got {tuple(labels.shape)}")
    stat = path.stat()
    return ImageSet(UInt8Images(rearrange(images, "n h w c -> n c h w")),
                    {"kind": "npz", "path": str(path), "num_images": images.shape[0],
                     "size": list(images.shape[1:3])},
                    f"npz:{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}:{max_images}", labels)


def sample_pipeline(pipeline, *, num_samples: int, seed: int = 0, labels: Sequence[int] | None = None,
                    prompts: Sequence[str] | None = None, batch_size: int = 64, progress: bool = False,
                    **sampling_overrides: Any) -> ImageSet:
    """Samples a pipeline (object or folder) into memory, as ``arvis sample`` would into a folder.

    The description records the full sampling protocol (seed, label policy, sampler settings).
    """
    from arvis.sample import sample_in_memory

    images, sample_labels, protocol = sample_in_memory(pipeline, num_samples=num_samples, seed=seed, labels=labels,
                                                       prompts=prompts,
                                                       batch_size=batch_size, progress=progress,
                                                       **sampling_overrides)
    tensor = rearrange(torch.from_numpy(images), "n h w c -> n c h w")
    return ImageSet(UInt8Images(tensor), {"kind": "pipeline", "num_images": num_samples,
                                          "size": list(tensor.shape[-2:]), "sampling_protocol": protocol},
                    labels=None if sample_labels is None else torch.from_numpy(sample_labels))


def _listed(paths: Sequence[Path]) -> str:
    names = ", ".join(str(path) for path in paths[:MAX_LISTED])
    return names + (f" and {len(paths) - MAX_LISTED} more" if len(paths) > MAX_LISTED else "")
