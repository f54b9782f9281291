"""Video inputs for FVD: folders of frame folders, ``.npy``/``.npz`` arrays and in-memory tensors.

Every source is read lazily as batches of clips (b, c, t, h, w) uint8 in [0, 255], the
layout and range StyleGAN-V's I3D detector takes. Accepted sources:

    folder     one subfolder per clip, holding that clip's frames as .png/.jpg/.jpeg
               images, sorted by name with numbers compared numerically (frame_2 before
               frame_10). Clips are sorted the same way. Hidden files are ignored; any
               other file is an error. All clips must have the same frame count and size.
    .npy/.npz  one uint8 array (n, t, h, w, 3), "NTHWC", the video version of the ADM
               image ``.npz`` (n, h, w, 3); an ``.npz`` holds it as ``arr_0`` or as its only
               array. Float arrays and channel-first layouts are refused, not guessed.
    ndarray    the same uint8 (n, t, h, w, 3) layout as the files.
    Tensor     (n, c, t, h, w) with c = 3 (torch's channel-first video layout), uint8, or
               float in [0, 1] (quantized like arvis samples: ``round(x * 255)``).
    iterable   of such tensors, one batch each: e.g. a generator that samples videos.

Clip selection takes frames 0, s, 2s, ..., (num_frames - 1) s of each clip (s the frame
stride), so a clip needs at least (num_frames - 1) s + 1 frames.

Shapes: n clips, b batch, t frames, c channels, h w frame height and width.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import torch
from einops import rearrange
from PIL import Image
from torch import Tensor

from arvis.data.frames import IMAGE_SUFFIXES, natural_key, read_frames
from arvis.numpy_files import load_npy, read_npz

LAYOUT_HINT = "expected uint8 videos of shape (n, t, h, w, 3) (NTHWC, like the image .npz convention)"

VideoSource = str | Path | np.ndarray | Tensor | Iterable[Tensor]


def video_batches(
    source: VideoSource,
    *,
    num_frames: int,
    frame_stride: int = 1,
    batch_size: int = 16,
    max_videos: int | None = None,
) -> Iterator[Tensor]:
    """Iterates over the selected clips of ``source`` as uint8 batches (b, 3, num_frames, h, w).

    Folder and array sources are checked when this is called, before any frame is decoded.

    Args:
        source: see the module docstring.
        num_frames: frames per clip after selection.
        frame_stride: take every ``frame_stride``-th frame, starting from the first.
        batch_size: clips per yielded batch (an iterable source keeps its own batches).
        max_videos: stop after this many clips (the first ones, in order); None takes all.
    """
    if num_frames < 1 or frame_stride < 1 or batch_size < 1:
        raise ValueError(
            f"num_frames, frame_stride and batch_size must be >= 1, got {num_frames}, {frame_stride}, {batch_size}"
        )
    if max_videos is not None and max_videos < 1:
        raise ValueError(f"max_videos must be >= 1 or None, got {max_videos}")
    needed = (num_frames - 1) * frame_stride + 1
    batches = _raw_batches(source, needed, batch_size)  # folders and arrays are checked here, eagerly

    def select() -> Iterator[Tensor]:
        remaining = max_videos
        for clips in batches:  # (b, 3, t, h, w) uint8, t >= needed
            if remaining is not None:
                clips = clips[:remaining]
                remaining -= clips.shape[0]
            if clips.shape[0]:
                yield clips[:, :, :needed:frame_stride]
            if remaining == 0:
                return

    return select()


def load_videos(source: VideoSource, *, num_frames: int, frame_stride: int = 1, max_videos: int | None = None) -> Tensor:
    """All selected clips of ``source`` at once: uint8 (n, 3, num_frames, h, w)."""
    batches = list(video_batches(source, num_frames=num_frames, frame_stride=frame_stride, max_videos=max_videos))
    if not batches:
        raise ValueError(f"no videos in {_describe(source)}")
    return torch.cat(batches)


def _raw_batches(source: VideoSource, needed: int, batch_size: int) -> Iterator[Tensor]:
    if isinstance(source, (str, Path)):
        path = Path(source)
        if path.is_dir():
            return _folder_batches(path, needed, batch_size)
        if path.suffix in (".npy", ".npz"):
            return _array_batches(read_video_array(path), str(path), needed, batch_size)
        if not path.exists():
            raise FileNotFoundError(f"no video source at {path}; pass a folder of frame folders or a .npy/.npz file")
        raise ValueError(f"cannot read videos from {path}: expected a folder of frame folders or a .npy/.npz file")
    if isinstance(source, np.ndarray):
        return _array_batches(_check_array(source, "the array"), "the array", needed, batch_size)
    if isinstance(source, Tensor):
        return _tensor_batches(source.split(batch_size), needed, whole=True)
    if isinstance(source, Iterable):
        return _tensor_batches(source, needed, whole=False)
    raise ValueError(f"cannot read videos from a {type(source).__name__}; pass a folder, a .npy/.npz file or a tensor")


def read_video_array(path: Path) -> np.ndarray:
    """Reads a (n, t, h, w, 3) uint8 array from ``.npy`` (memory-mapped) or ``.npz`` (``arr_0`` or only array)."""
    if not path.is_file():
        raise FileNotFoundError(f"missing video file {path}")
    try:
        if path.suffix == ".npy":
            return _check_array(load_npy(path, mmap=True), str(path))
        arrays = read_npz(path)
    except ValueError as error:
        raise ValueError(f"{error}; {LAYOUT_HINT}") from error
    keys = list(arrays)
    key = "arr_0" if "arr_0" in keys else keys[0] if len(keys) == 1 else None
    array = None if key is None else arrays[key]
    if array is None:
        raise ValueError(f"{path} holds arrays {keys}; store the videos as arr_0 ({LAYOUT_HINT})")
    return _check_array(array, str(path))


def _check_array(array: np.ndarray, where: str) -> np.ndarray:
    if array.dtype != np.uint8:
        raise ValueError(
            f"{where} has dtype {array.dtype}; {LAYOUT_HINT}. Convert [0, 1] floats with "
            "np.round(x * 255).astype(np.uint8)"
        )
    if array.ndim != 5 or array.shape[-1] != 3:
        hint = " (it looks channel-first: use np.moveaxis(x, 2, -1))" if array.ndim == 5 and array.shape[2] == 3 else ""
        raise ValueError(f"{where} has shape {array.shape}; {LAYOUT_HINT}{hint}")
    return array


def _array_batches(array: np.ndarray, where: str, needed: int, batch_size: int) -> Iterator[Tensor]:
    if array.shape[0] and array.shape[1] < needed:
        raise ValueError(f"clips in {where} have {array.shape[1]} frames but {needed} are needed; {_fix(needed)}")

    def generate() -> Iterator[Tensor]:
        for start in range(0, array.shape[0], batch_size):
            chunk = torch.from_numpy(np.array(array[start : start + batch_size, :needed]))  # copy: memmaps are read-only
            yield rearrange(chunk, "b t h w c -> b c t h w")

    return generate()


def _tensor_batches(batches: Iterable[Tensor], needed: int, whole: bool) -> Iterator[Tensor]:
    for index, batch in enumerate(batches):
        where = "the video tensor" if whole else f"video batch {index}"
        if not isinstance(batch, Tensor):
            raise ValueError(f"{where} is a {type(batch).__name__}; yield tensors (b, 3, t, h, w)")
        if batch.ndim != 5 or batch.shape[1] != 3:
            looks_nthwc = batch.ndim == 5 and batch.shape[-1] == 3
            hint = " (it looks NTHWC: use einops.rearrange(x, 'n t h w c -> n c t h w'))" if looks_nthwc else ""
            raise ValueError(f"{where} has shape {tuple(batch.shape)}; expected (n, 3, t, h, w){hint}")
        if batch.shape[2] < needed:
            raise ValueError(f"clips in {where} have {batch.shape[2]} frames but {needed} are needed; {_fix(needed)}")
        yield _to_uint8(batch[:, :, :needed].detach(), where)


def _to_uint8(clips: Tensor, where: str) -> Tensor:
    if clips.dtype == torch.uint8:
        return clips
    if not clips.is_floating_point():
        raise ValueError(f"{where} has dtype {clips.dtype}; expected uint8 in [0, 255] or float in [0, 1]")
    if clips.numel() and (clips.min() < -1e-3 or clips.max() > 1 + 1e-3):
        raise ValueError(
            f"{where} spans [{clips.min().item():.3g}, {clips.max().item():.3g}]; float videos must be in [0, 1] "
            "(map [-1, 1] with (x + 1) / 2)"
        )
    return (clips.float() * 255).round().clamp(0, 255).to(torch.uint8)


def _folder_batches(root: Path, needed: int, batch_size: int) -> Iterator[Tensor]:
    clips = _list_clips(root)
    expected_size = None
    for clip, frames in clips:
        if len(frames) < needed:
            raise ValueError(f"clip {clip} has {len(frames)} frames but {needed} are needed; {_fix(needed)}")
        with Image.open(frames[0]) as image:
            if expected_size is None:
                expected_size = image.size
            elif image.size != expected_size:
                raise ValueError(
                    f"clip {clip} has {image.size[0]}x{image.size[1]} frames but {clips[0][0]} has "
                    f"{expected_size[0]}x{expected_size[1]}; all clips must share one frame size"
                )

    def generate() -> Iterator[Tensor]:
        for start in range(0, len(clips), batch_size):
            batch = [read_frames(frames[:needed], expected_size) for _, frames in clips[start : start + batch_size]]
            yield rearrange(torch.from_numpy(np.stack(batch)), "b t h w c -> b c t h w")

    return generate()


def _list_clips(root: Path) -> list[tuple[Path, list[Path]]]:
    entries = sorted((p for p in root.iterdir() if not p.name.startswith(".")), key=natural_key)
    stray = [p.name for p in entries if not p.is_dir()]
    if stray:
        raise ValueError(f"{root} should hold only clip folders (one per video) but also holds files {stray[:5]}")
    if not entries:
        raise ValueError(f"{root} holds no clip folders; expected one subfolder of frame images per video")
    clips = []
    for clip in entries:
        frames = sorted((p for p in clip.iterdir() if not p.name.startswith(".")), key=natural_key)
        bad = [p.name for p in frames if p.suffix.lower() not in IMAGE_SUFFIXES or not p.is_file()]
        if bad:
            raise ValueError(f"clip folder {clip} holds non-image entries {bad[:5]}; keep only {IMAGE_SUFFIXES} frames")
        if not frames:
            raise ValueError(f"clip folder {clip} is empty; every clip needs its frames as images")
        clips.append((clip, frames))
    counts = {len(frames) for _, frames in clips}
    if len(counts) > 1:
        first = clips[0]
        other = next(c for c in clips if len(c[1]) != len(first[1]))
        raise ValueError(
            f"clips have different frame counts: {first[0]} has {len(first[1])}, {other[0]} has {len(other[1])}; "
            "trim every clip to the same length"
        )
    return clips


def _fix(needed: int) -> str:
    return f"lower num_frames or frame_stride (a clip needs (num_frames - 1) * frame_stride + 1 = {needed} frames)"


def _describe(source: VideoSource) -> str:
    return str(source) if isinstance(source, (str, Path)) else f"the {type(source).__name__}"
