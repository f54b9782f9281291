"""Users' images in ImageNet layout: ``root/<class_name>/<image>``, one folder per class."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal

import torch
from PIL import Image
from torch.utils.data import Dataset

from arvis.data.image_files import image_file_problem
from arvis.data.transforms import as_rgb, center_crop_resize, random_crop_resize, to_unit_tensor

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
VerifyMode = Literal["none", "header", "decode"]
MAX_LISTED_FILES = 10


class ImageFolderDataset(Dataset):
    """Class-labelled images from ``root/<class_name>/**/<image>``.

    Classes are the sub-folders of ``root`` sorted alphabetically; their positions are the
    labels. Images (searched recursively, hidden files skipped) are converted to RGB,
    resized so the shorter side is ``image_size`` (box-halved, then bicubic, as ADM and LlamaGen) and
    centre-cropped, or randomly cropped (``crop="random"``). Items are (image (3, image_size, image_size)
    float32 in [0, 1], label int).

    Args:
        root: folder holding one sub-folder per class.
        image_size: output side in pixels.
        random_flip: flip horizontally with probability 0.5, drawn from torch's global RNG
            so that ``torch.manual_seed`` and DataLoader worker seeding control it.
        crop: ``"center"`` or ``"random"`` (LlamaGen's VQ training augmentation: the shorter side resized to
            1.0-1.25x ``image_size``, then a random square; :func:`arvis.data.transforms.random_crop_resize`),
            drawn from torch's global RNG as the flip.
        extensions: accepted file suffixes, case-insensitive.
        verify: checks every file once, here, so that a broken file stops a run before training
            rather than hours into it: ``"header"`` (default) opens each file, reads its header and
            checks that it is not cut short (the JPEG end-of-image marker, PNG's ``IEND`` chunk, GIF's
            trailer, the BMP/WebP declared size; see :mod:`arvis.data.image_files`), which catches files
            that are not images, empty or truncated without decoding them; ``"decode"`` also decodes the
            pixels, which catches corrupt data inside a complete file but reads the whole dataset;
            ``"none"`` skips the check (a broken file then fails when it is loaded).
        verify_threads: threads reading files during the check.
    """

    def __init__(self, root: str | Path, image_size: int, *, random_flip: bool = False, crop: str = "center",
                 extensions: tuple[str, ...] = IMAGE_EXTENSIONS, verify: VerifyMode = "header",
                 verify_threads: int = 8) -> None:
        if image_size < 1:
            raise ValueError(f"image_size must be a positive number of pixels, got {image_size}")
        if crop not in ("center", "random"):
            raise ValueError(f"crop must be 'center' or 'random', got {crop!r}")
        self.crop = crop
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"image folder root {str(self.root)!r} does not exist or is not a folder")
        self.image_size = int(image_size)
        self.random_flip = random_flip
        self.extensions = tuple(sorted({("." + suffix.lstrip(".")).lower() for suffix in extensions}))
        class_folders = sorted(path for path in self.root.iterdir() if path.is_dir() and not path.name.startswith("."))
        if not class_folders:
            raise ValueError(
                f"{str(self.root)!r} has no class sub-folders; expected root/<class_name>/<image> "
                f"with images ending in {self.extensions}"
            )
        self.class_names: tuple[str, ...] = tuple(folder.name for folder in class_folders)
        self.class_to_index: dict[str, int] = {name: index for index, name in enumerate(self.class_names)}
        self.samples: list[tuple[Path, int]] = []
        for label, folder in enumerate(class_folders):
            images = [path for path in sorted(folder.rglob("*")) if self._is_image(path, folder)]
            if not images:
                logger.warning("class folder %s has no images ending in %s", folder, self.extensions)
            self.samples.extend((path, label) for path in images)
        if not self.samples:
            raise ValueError(
                f"found no images under {str(self.root)!r}; accepted extensions are {self.extensions} "
                f"in root/<class_name>/<image>"
            )
        if verify != "none":
            self.verify(decode=verify == "decode", num_threads=verify_threads)

    def verify(self, *, decode: bool = False, num_threads: int = 8) -> None:
        """Raises ``ValueError`` naming every file (up to ten) that cannot be read as an image."""
        if num_threads < 1:
            raise ValueError(f"num_threads must be >= 1, got {num_threads}")
        paths = [path for path, _ in self.samples]
        with ThreadPoolExecutor(max_workers=num_threads) as pool:
            problems = [problem for problem in pool.map(lambda path: image_file_problem(path, decode=decode), paths)
                        if problem]
        if problems:
            listed = "\n  ".join(problems[:MAX_LISTED_FILES])
            more = f"\n  ... and {len(problems) - MAX_LISTED_FILES} more" if len(problems) > MAX_LISTED_FILES else ""
            raise ValueError(
                f"{len(problems)} of {len(paths)} files under {str(self.root)!r} cannot be read as images:\n  "
                f"{listed}{more}\nremove or replace them, or move them out of the class folders"
            )
        logger.info("checked %d images under %s (%s)", len(paths), self.root, "decoded" if decode else "headers")

    def _is_image(self, path: Path, folder: Path) -> bool:
        hidden = any(part.startswith(".") for part in path.relative_to(folder).parts)
        return path.suffix.lower() in self.extensions and path.is_file() and not hidden

    def __len__(self) -> int:
        return len(self.samples)

    def _load(self, path: Path) -> Image.Image:
        try:
            with Image.open(path) as image:
                return as_rgb(image)
        except (OSError, SyntaxError, ValueError) as error:
            raise ValueError(f"cannot read image {str(path)!r}: {error}; remove or replace the file") from error

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[index]
        resize = random_crop_resize if self.crop == "random" else center_crop_resize
        image = to_unit_tensor(resize(self._load(path), self.image_size))
        if self.random_flip and torch.rand(()).item() < 0.5:
            image = image.flip(-1)
        return image, label
