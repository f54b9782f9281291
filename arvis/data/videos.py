"""Video datasets: embedded moving glyphs and users' folders of clips.

``MovingGlyphDataset`` animates the glyphs of :mod:`arvis.data.glyphs`: one glyph per clip
drifts at a constant velocity, bouncing off the image borders, while it slowly rotates
back and forth. ``VideoFolderDataset`` reads users' clips from frame folders or ``.npy``
files. Both give items (clip (c, t, h, w) float32 in [0, 1], label int), which a
DataLoader batches to (b, c, t, h, w).

Shape legend: n clips, b batch, c = 3 channels, t frames, h w frame height and width.
"""

from __future__ import annotations

import dataclasses
import math
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from PIL import Image
from torch.utils.data import Dataset

from arvis.data.glyphs import (
    MAX_ROTATION_DEGREES,
    RENDER_CHUNK,
    GlyphDataset,
    GlyphParams,
    centre_reach,
    render_glyphs_chw,
    sample_glyph_params,
)
from arvis.data.frames import IMAGE_SUFFIXES, natural_key, read_frames
from arvis.data.image_files import file_end_problem
from arvis.numpy_files import load_npy

MAX_NUM_FRAMES = 64
TRAVEL_RANGE = (0.3, 0.8)  # image units (the image spans 2) travelled over a whole clip, bounces included
ROTATION_SPEED_RANGE = (0.5, 2.5)  # degrees per frame, either sense
MAX_LISTED_PROBLEMS = 10


# ----------------------------------------------------------------------------------------------
# Moving glyphs
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GlyphMotion:
    """How one glyph moves over a clip.

    Attributes:
        velocity: (x, y) image units per frame, before bounces.
        rotation_speed: degrees per frame, before bounces (sign gives the sense).
    """

    velocity: tuple[float, float]
    rotation_speed: float


def sample_glyph_motion(num_frames: int, rng: np.random.Generator) -> GlyphMotion:
    """Draws a random direction, a travel of ``TRAVEL_RANGE`` over the clip and a rotation speed."""
    uniform = rng.random(4)  # one draw; each entry has one use below
    direction = 2.0 * math.pi * uniform[0]
    travel = TRAVEL_RANGE[0] + (TRAVEL_RANGE[1] - TRAVEL_RANGE[0]) * uniform[1]
    speed = travel / (num_frames - 1)
    rotation_speed = ROTATION_SPEED_RANGE[0] + (ROTATION_SPEED_RANGE[1] - ROTATION_SPEED_RANGE[0]) * uniform[2]
    sense = 1.0 if uniform[3] < 0.5 else -1.0
    return GlyphMotion(
        velocity=(float(speed * math.cos(direction)), float(speed * math.sin(direction))),
        rotation_speed=float(sense * rotation_speed),
    )


def _bounce(values: np.ndarray, bound: float) -> np.ndarray:
    """Folds unbounded positions into [-bound, bound] as a point reflecting off both walls."""
    if bound <= 0.0:
        return np.zeros_like(values)
    shifted = np.mod(values + bound, 4.0 * bound)  # one back-and-forth period is 4 * bound
    return bound - np.abs(shifted - 2.0 * bound)


def animate_glyph(params: GlyphParams, motion: GlyphMotion, num_frames: int) -> list[GlyphParams]:
    """Per-frame looks of a glyph starting at ``params`` and moving with ``motion``.

    The centre moves at ``motion.velocity`` and bounces off the walls at ``centre_reach``
    (each axis separately, like a billiard ball), so the whole glyph stays inside the image.
    The rotation likewise bounces between -/+ ``MAX_ROTATION_DEGREES``: an unbounded spin
    would turn a square into a diamond, a plus into a cross or horizontal bars into vertical
    ones, so the class would stop being readable from the shape.
    """
    steps = np.arange(num_frames, dtype=np.float64)
    reach = centre_reach(params.scale)
    xs = _bounce(params.centre[0] + motion.velocity[0] * steps, reach)
    ys = _bounce(params.centre[1] + motion.velocity[1] * steps, reach)
    angles = _bounce(params.rotation_degrees + motion.rotation_speed * steps, MAX_ROTATION_DEGREES)
    return [
        dataclasses.replace(params, centre=(float(x), float(y)), rotation_degrees=float(angle))
        for x, y, angle in zip(xs, ys, angles, strict=True)
    ]


def _render_clips(labels: list[int], size: int, frame_params: list[list[GlyphParams]]) -> np.ndarray:
    """(n, 3, t, size, size) float32 clips, all frames of all clips in one rendering call."""
    num_frames = len(frame_params[0])
    frame_labels = [label for label in labels for _ in range(num_frames)]
    flat_params = [params for clip in frame_params for params in clip]
    frames = render_glyphs_chw(frame_labels, size, flat_params)  # (n * t, 3, h, w)
    return np.ascontiguousarray(rearrange(frames, "(n t) c h w -> n c t h w", t=num_frames))


class MovingGlyphDataset(GlyphDataset):
    """``num_samples`` clips of one moving glyph, with balanced labels ``index % num_classes``
    (a :class:`GlyphDataset` whose items are animated: same checks, labels and first-frame looks).

    Items are (clip (3, num_frames, h, w) float32 in [0, 1], label int). Sample ``index``
    depends only on (seed, index) through ``np.random.default_rng([seed, index])``: the
    glyph's looks come first (``sample_glyph_params``, so frame 0 equals image ``index`` of a
    ``GlyphDataset`` with the same seed), then its motion (``sample_glyph_motion``). The
    glyph travels 0.3-0.8 image units (the image spans 2) over the clip in a straight line,
    bouncing off the borders, and rotates 0.5-2.5 degrees per frame, bouncing within
    +/- 10 degrees; see ``animate_glyph``.

    Args:
        num_samples: number of clips, at least 1.
        image_size: frame side in pixels, in [8, 256].
        num_frames: frames per clip, in [2, 64].
        seed: non-negative dataset seed.
        num_classes: uses the first ``num_classes`` of ``GLYPH_CLASSES``, in [2, 10].
    """

    def __init__(self, num_samples: int, image_size: int = 32, num_frames: int = 16, seed: int = 0,
                 num_classes: int = 10) -> None:
        if not 2 <= num_frames <= MAX_NUM_FRAMES:
            raise ValueError(f"num_frames must be in [2, {MAX_NUM_FRAMES}], got {num_frames}")
        super().__init__(num_samples, image_size=image_size, seed=seed, num_classes=num_classes)
        self.num_frames = int(num_frames)

    # params(index), inherited, is the looks of clip ``index`` in its first frame (the same first draw).

    def _draw(self, index: int) -> tuple[GlyphParams, GlyphMotion]:
        index = self._check_index(index)
        rng = np.random.default_rng([self.seed, index])
        params = sample_glyph_params(index % self.num_classes, rng)
        return params, sample_glyph_motion(self.num_frames, rng)

    def motion(self, index: int) -> GlyphMotion:
        """The velocity and rotation speed of clip ``index``."""
        return self._draw(index)[1]

    def frame_params(self, index: int) -> list[GlyphParams]:
        """The looks of clip ``index`` in each of its ``num_frames`` frames."""
        params, motion = self._draw(index)
        return animate_glyph(params, motion, self.num_frames)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        label = self.label(index)
        clip = _render_clips([label], self.image_size, [self.frame_params(index)])[0]
        return torch.from_numpy(clip), label

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Renders every clip: clips (n, 3, t, h, w) float32 in [0, 1] and labels (n,) long."""
        labels = torch.arange(self.num_samples) % self.num_classes
        clips = torch.empty(self.num_samples, 3, self.num_frames, self.image_size, self.image_size)
        clips_per_chunk = max(1, RENDER_CHUNK // self.num_frames)
        for start in range(0, self.num_samples, clips_per_chunk):
            indices = range(start, min(start + clips_per_chunk, self.num_samples))
            chunk_labels = [index % self.num_classes for index in indices]
            rendered = _render_clips(chunk_labels, self.image_size, [self.frame_params(i) for i in indices])
            clips[start:start + len(indices)] = torch.from_numpy(rendered)
        return clips, labels


# ----------------------------------------------------------------------------------------------
# Users' clips
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VideoClip:
    """One clip found under a ``VideoFolderDataset`` root.

    Attributes:
        path: the clip's frame folder or ``.npy`` file.
        label: class index (0 when the folder has no classes).
        num_frames: frames stored (before any cut to ``num_frames``).
        height, width: frame size stored (before any resize to ``image_size``).
        frames: the frame images in order, or None for a ``.npy`` clip.
    """

    path: Path
    label: int
    num_frames: int
    height: int
    width: int
    frames: tuple[Path, ...] | None = None


def _entries(folder: Path) -> list[Path]:
    """Non-hidden entries of ``folder`` sorted by name, numbers compared numerically."""
    return sorted((path for path in folder.iterdir() if not path.name.startswith(".")), key=natural_key)


def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES


def _is_npy(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() == ".npy"


def _is_clip_level(folder: Path) -> bool:
    """True if ``folder`` holds clips directly: a ``.npy`` file or a sub-folder holding images."""
    for entry in _entries(folder):
        if _is_npy(entry) or (entry.is_dir() and any(_is_image(frame) for frame in _entries(entry))):
            return True
    return False


def _find_clips(root: Path) -> tuple[list[tuple[Path, int]], tuple[str, ...]]:
    """(clip path, label) pairs under ``root`` and the class names (empty when unlabelled)."""
    if _is_clip_level(root):
        return [(path, 0) for path in _clip_entries(root)], ()
    class_folders = _entries(root)
    stray = [path.name for path in class_folders if not path.is_dir()]
    if stray:
        raise ValueError(f"{str(root)!r} holds files {stray[:5]} that are neither .npy clips nor folders")
    clips = []
    for label, folder in enumerate(class_folders):
        found = _clip_entries(folder)
        if not found:
            raise ValueError(
                f"class folder {str(folder)!r} holds no clips; expected .npy files or folders of frame images"
            )
        clips.extend((path, label) for path in found)
    return clips, tuple(folder.name for folder in class_folders)


def _clip_entries(folder: Path) -> list[Path]:
    """The clips directly in ``folder``: ``.npy`` files and frame folders; any other file is an error."""
    entries = _entries(folder)
    stray = [path.name for path in entries if not (_is_npy(path) or path.is_dir())]
    if stray:
        raise ValueError(
            f"{str(folder)!r} holds files {stray[:5]} that are not clips; keep only .npy files and frame folders"
        )
    return entries


def _inspect_frame_folder(folder: Path, label: int) -> VideoClip:
    """Checks every frame's header: readable image, all frames of one size."""
    frames = _entries(folder)
    bad = [path.name for path in frames if not _is_image(path)]
    if bad:
        raise ValueError(f"clip folder {str(folder)!r} holds non-image entries {bad[:5]}; keep only {IMAGE_SUFFIXES}")
    if not frames:
        raise ValueError(f"clip folder {str(folder)!r} is empty; every clip needs its frames as images")
    sizes = [_frame_size(frame) for frame in frames]
    if len(set(sizes)) > 1:
        odd = next(frame for frame, size in zip(frames, sizes, strict=True) if size != sizes[0])
        raise ValueError(
            f"frame {str(odd)!r} is {_size_text(sizes[frames.index(odd)])} but {str(frames[0])!r} is "
            f"{_size_text(sizes[0])}; all frames of a clip must share one size"
        )
    height, width = sizes[0]
    return VideoClip(folder, label, len(frames), height, width, tuple(frames))


def _frame_size(path: Path) -> tuple[int, int]:
    """(height, width) read from the image header; ValueError naming the file if unreadable or cut short."""
    try:
        with Image.open(path) as image:
            width, height = image.size
            image_format = image.format
        problem = file_end_problem(path, image_format)
    except (OSError, SyntaxError, ValueError, struct.error, Image.DecompressionBombError) as error:
        problem = str(error)
    if problem:
        raise ValueError(f"cannot read frame {str(path)!r} as an image: {problem}; remove or replace it")
    return height, width


def _size_text(size: tuple[int, int]) -> str:
    return f"{size[1]}x{size[0]} (width x height)"


def _open_npy(path: Path) -> np.ndarray:
    return load_npy(path, mmap=True)


def _inspect_npy(path: Path, label: int) -> VideoClip:
    """Checks a ``.npy`` clip: (t, h, w, 3), uint8 or float in [0, 1] (the values are read once)."""
    array = _open_npy(path)
    layout = "expected one clip of shape (t, h, w, 3), uint8 or float in [0, 1]"
    if array.ndim != 4 or array.shape[-1] != 3:
        hint = ""
        if array.ndim == 4 and array.shape[1] == 3:
            hint = " (it looks channel-first: use np.moveaxis(x, 1, -1))"
        elif array.ndim == 5:
            hint = " (it looks like many clips: save one .npy per clip)"
        raise ValueError(f"{str(path)!r} has shape {array.shape}; {layout}{hint}")
    if array.dtype != np.uint8 and not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"{str(path)!r} has dtype {array.dtype}; {layout}")
    if np.issubdtype(array.dtype, np.floating) and array.size:
        low, high = float(np.min(array)), float(np.max(array))
        if not (0.0 <= low and high <= 1.0):  # also catches NaN
            raise ValueError(
                f"{str(path)!r} spans [{low:.3g}, {high:.3g}]; float clips must be in [0, 1] "
                "(map [-1, 1] with (x + 1) / 2)"
            )
    if 0 in array.shape[:3]:
        raise ValueError(f"{str(path)!r} has shape {array.shape}, with no frames or no pixels; {layout}")
    num_frames, height, width, _ = array.shape
    return VideoClip(path, label, num_frames, height, width)


def _check_consistent(clips: list[VideoClip], num_frames: int | None, image_size: int | None) -> None:
    """Frame counts: equal, or at least ``num_frames``. Sizes: equal unless ``image_size`` resizes them."""
    first = clips[0]
    for clip in clips:
        if num_frames is None and clip.num_frames != first.num_frames:
            raise ValueError(
                f"clips have different frame counts: {str(first.path)!r} has {first.num_frames}, "
                f"{str(clip.path)!r} has {clip.num_frames}; pass num_frames to cut every clip to its first frames"
            )
        if num_frames is not None and clip.num_frames < num_frames:
            raise ValueError(f"clip {str(clip.path)!r} has {clip.num_frames} frames but num_frames={num_frames}")
        if image_size is None and (clip.height, clip.width) != (first.height, first.width):
            raise ValueError(
                f"clips have different frame sizes: {str(first.path)!r} is {_size_text((first.height, first.width))}, "
                f"{str(clip.path)!r} is {_size_text((clip.height, clip.width))}; pass image_size to resize them"
            )


def _resize_square(clip: torch.Tensor, size: int) -> torch.Tensor:
    """(3, t, h, w) -> (3, t, size, size): shorter side to ``size`` (bicubic, antialiased), centre crop."""
    frames = rearrange(clip, "c t h w -> t c h w")
    height, width = frames.shape[-2:]
    ratio = size / min(height, width)
    new_height, new_width = max(size, round(height * ratio)), max(size, round(width * ratio))
    if (new_height, new_width) != (height, width):
        frames = F.interpolate(frames, size=(new_height, new_width), mode="bicubic", antialias=True,
                               align_corners=False).clamp(0.0, 1.0)
    top, left = (new_height - size) // 2, (new_width - size) // 2
    return rearrange(frames[:, :, top:top + size, left:left + size], "t c h w -> c t h w").contiguous()


class VideoFolderDataset(Dataset):
    """Users' clips as (clip (3, t, h, w) float32 in [0, 1], label int).

    Layout. Each clip is either a folder of frame images (.png/.jpg/.jpeg, sorted by name
    with numbers compared numerically, so frame_2 comes before frame_10) or one ``.npy``
    file holding a (t, h, w, 3) array, uint8 or float in [0, 1]. The two may be mixed.

    Labels. If ``root`` itself holds a clip (a ``.npy`` file, or a sub-folder with images
    directly in it), every sub-folder and ``.npy`` of ``root`` is a clip, every label is 0
    and ``class_names`` is empty. Otherwise the sub-folders of ``root`` are classes, sorted
    by name like torchvision's ImageFolder (``root/<class>/<clip>``), and a clip's label is
    its class's position. Hidden entries (names starting with ".") are ignored.

    Checks. Everything is checked when the dataset is built, and any problem raises a
    ValueError naming the file or folder: a missing root, no clips, an empty class or clip
    folder, stray files, frames that cannot be opened as images or are cut short (their headers
    and last bytes are read, see :mod:`arvis.data.image_files`), frames of
    different sizes within a clip, ``.npy`` files of the wrong shape or dtype, or floats
    outside [0, 1] (float ``.npy`` files are read once for this). Nothing is fixed silently.

    Args:
        root: the folder described above.
        num_frames: None: every clip must have the same frame count. A number: every clip
            needs at least that many frames (fewer is an error) and longer clips are cut to
            their first ``num_frames`` frames.
        image_size: None: every clip must have the same frame size, kept as is. A number:
            frames are resized so their shorter side is ``image_size`` (bicubic, antialiased)
            and centre-cropped to image_size x image_size, so clips may differ in size.
        random_flip: flip each clip (every frame alike) horizontally with probability 0.5 (LARP's
            ``rand_flip``), drawn from torch's global RNG like the image folders' flip.
    """

    def __init__(self, root: str | Path, num_frames: int | None = None, image_size: int | None = None, *,
                 random_flip: bool = False) -> None:
        if num_frames is not None and num_frames < 1:
            raise ValueError(f"num_frames must be a positive number of frames or None, got {num_frames}")
        if image_size is not None and image_size < 1:
            raise ValueError(f"image_size must be a positive number of pixels or None, got {image_size}")
        self.root = Path(root)
        if not self.root.is_dir():
            raise ValueError(f"video folder root {str(self.root)!r} does not exist or is not a folder")
        found, self.class_names = _find_clips(self.root)
        if not found:
            raise ValueError(
                f"{str(self.root)!r} holds no clips; expected .npy files or folders of frame images, "
                f"optionally inside class folders (root/<class>/<clip>)"
            )
        self.clips: list[VideoClip] = [
            _inspect_npy(path, label) if _is_npy(path) else _inspect_frame_folder(path, label) for path, label in found
        ]
        _check_consistent(self.clips, num_frames, image_size)
        self.num_frames = int(num_frames) if num_frames is not None else self.clips[0].num_frames
        self.image_size = image_size
        self.random_flip = random_flip

    def __len__(self) -> int:
        return len(self.clips)

    def label(self, index: int) -> int:
        """Class index of clip ``index`` (0 without classes)."""
        return self.clips[index].label

    def _read(self, clip: VideoClip) -> torch.Tensor:
        """(3, t, h, w) float32 in [0, 1], the first ``self.num_frames`` frames of ``clip``."""
        if clip.frames is None:
            array = np.array(_open_npy(clip.path)[: self.num_frames])  # copy out of the read-only memmap
            pixels = torch.from_numpy(array)
            pixels = pixels.float() / 255.0 if array.dtype == np.uint8 else pixels.float()
        else:
            try:
                array = read_frames(list(clip.frames[: self.num_frames]), (clip.width, clip.height))
            except (OSError, SyntaxError) as error:
                raise ValueError(f"cannot decode a frame of clip {str(clip.path)!r}: {error}") from error
            pixels = torch.from_numpy(array).float() / 255.0
        return rearrange(pixels, "t h w c -> c t h w").contiguous()

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        clip = self.clips[index]
        pixels = self._read(clip)
        if self.image_size is not None:
            pixels = _resize_square(pixels, self.image_size)
        if self.random_flip and torch.rand(()).item() < 0.5:
            pixels = pixels.flip(-1)
        return pixels, clip.label
