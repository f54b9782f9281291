"""Tests of the video datasets: moving glyphs (determinism, motion, bounds) and users' clip folders."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from arvis.data import (
    GLYPH_CLASSES,
    GlyphDataset,
    MovingGlyphDataset,
    VideoFolderDataset,
)
from arvis.data.glyphs import MAX_ROTATION_DEGREES, render_glyphs
from arvis.data.videos import _bounce, centre_reach

WHITE_ON_BLACK = {"foreground": (1.0, 1.0, 1.0), "background": (0.0, 0.0, 0.0)}


def _masks(dataset: MovingGlyphDataset, index: int) -> np.ndarray:
    """(t, h, w) coverage of clip ``index``'s glyph, rendered white on black."""
    frames = [dataclasses.replace(params, **WHITE_ON_BLACK) for params in dataset.frame_params(index)]
    return render_glyphs([dataset.label(index)] * len(frames), dataset.image_size, frames)[..., 0]


def _mass_centres(masks: np.ndarray) -> np.ndarray:
    """(t, 2) (x, y) pixel centre of mass of each (h, w) mask."""
    rows, columns = np.indices(masks.shape[1:])
    total = masks.sum(axis=(1, 2))
    return np.stack([(masks * columns).sum(axis=(1, 2)) / total, (masks * rows).sum(axis=(1, 2)) / total], axis=1)


# ---------------------------------------------------------------------------------------------- moving glyphs


def test_item_shape_dtype_range_and_batching():
    dataset = MovingGlyphDataset(6, image_size=16, num_frames=5, seed=0)
    clip, label = dataset[3]
    assert clip.shape == (3, 5, 16, 16) and clip.dtype == torch.float32
    assert isinstance(label, int) and label == 3
    assert 0.0 <= clip.min() and clip.max() <= 1.0
    batch, labels = next(iter(torch.utils.data.DataLoader(dataset, batch_size=4)))
    assert batch.shape == (4, 3, 5, 16, 16) and labels.tolist() == [0, 1, 2, 3]


def test_same_seed_and_index_give_identical_clips_whatever_the_length_and_order():
    first = MovingGlyphDataset(10, image_size=16, num_frames=4, seed=3)
    second = MovingGlyphDataset(300, image_size=16, num_frames=4, seed=3)
    late_first = second[9][0]
    for index in (9, 0, 5):
        assert torch.equal(first[index][0], second[index][0])
    assert torch.equal(late_first, second[9][0])
    assert torch.equal(first[-1][0], first[9][0])
    other_seed = MovingGlyphDataset(10, image_size=16, num_frames=4, seed=4)
    assert all(not torch.equal(first[index][0], other_seed[index][0]) for index in range(10))


def test_first_frame_is_the_glyph_image_of_the_same_seed_and_index():
    videos, images = MovingGlyphDataset(5, image_size=16, num_frames=3, seed=2), GlyphDataset(5, image_size=16, seed=2)
    for index in range(5):
        assert torch.equal(videos[index][0][:, 0], images[index][0])


def test_tensors_match_items_and_labels_are_balanced():
    dataset = MovingGlyphDataset(20, image_size=16, num_frames=4, seed=1)
    clips, labels = dataset.tensors()
    assert clips.shape == (20, 3, 4, 16, 16) and clips.dtype == torch.float32 and labels.dtype == torch.long
    assert torch.bincount(labels).tolist() == [2] * 10
    for index in (0, 11, 19):
        clip, label = dataset[index]
        assert torch.equal(clips[index], clip) and labels[index].item() == label
    assert [MovingGlyphDataset(7, 8, 2, num_classes=3).label(i) for i in range(7)] == [0, 1, 2, 0, 1, 2, 0]


def test_glyph_moves_visibly_and_every_frame_changes():
    dataset = MovingGlyphDataset(40, image_size=32, num_frames=8, seed=5)
    for index in range(len(dataset)):
        clip = dataset[index][0]
        assert all((clip[:, step + 1] - clip[:, step]).abs().max() > 0.05 for step in range(7)), index
        centres = _mass_centres(_masks(dataset, index))
        largest_shift = np.linalg.norm(centres - centres[0], axis=1).max()
        assert largest_shift > 1.0, (index, largest_shift)  # pixels; the travel is 0.3-0.8 image units = 2.4-6.4 px
        first, last = dataset.frame_params(index)[0], dataset.frame_params(index)[-1]
        assert first.centre != last.centre and first.rotation_degrees != last.rotation_degrees


def test_motion_is_a_straight_line_until_a_bounce():
    dataset = MovingGlyphDataset(30, image_size=16, num_frames=6, seed=0)
    for index in range(len(dataset)):
        params, motion = dataset.params(index), dataset.motion(index)
        travel = np.hypot(*motion.velocity) * (dataset.num_frames - 1)
        assert 0.3 <= travel <= 0.8
        assert 0.5 <= abs(motion.rotation_speed) <= 2.5
        centres = np.array([frame.centre for frame in dataset.frame_params(index)])
        unbounced = np.array(params.centre) + np.outer(np.arange(dataset.num_frames), motion.velocity)
        before_wall = np.cumprod(np.abs(unbounced).max(axis=1) <= centre_reach(params.scale)).astype(bool)
        assert np.allclose(centres[before_wall], unbounced[before_wall], atol=1e-9)


def test_bounce_reflects_off_both_walls():
    values = np.array([0.0, 0.3, 0.5, 0.7, 1.0, 1.5, 2.0, -0.7, -2.5])
    assert np.allclose(_bounce(values, 0.5), [0.0, 0.3, 0.5, 0.3, 0.0, -0.5, 0.0, -0.3, -0.5])
    assert np.all(_bounce(values, 0.0) == 0.0)


def test_long_clips_bounce_and_stay_inside_the_image():
    """64 frames at 64 px: the border stays background, the centre and rotation stay in range."""
    dataset = MovingGlyphDataset(12, image_size=64, num_frames=64, seed=7)
    bounced = 0
    for index in range(len(dataset)):
        masks = _masks(dataset, index)
        border = np.concatenate([masks[:, 0], masks[:, -1], masks[:, :, 0], masks[:, :, -1]], axis=1)
        assert border.max() == 0.0, index
        assert masks.max(axis=(1, 2)).min() == 1.0  # the glyph is whole in every frame
        frames = dataset.frame_params(index)
        reach = centre_reach(frames[0].scale)
        centres = np.array([frame.centre for frame in frames])
        assert np.abs(centres).max() <= reach + 1e-9
        assert max(abs(frame.rotation_degrees) for frame in frames) <= MAX_ROTATION_DEGREES + 1e-9
        unbounced = np.array(frames[0].centre) + np.outer(np.arange(64), dataset.motion(index).velocity)
        bounced += bool(np.abs(unbounced).max() > reach)
    assert bounced >= 6  # most long clips reach a wall: the bounce is exercised, not avoided


@pytest.mark.parametrize(
    ("arguments", "name"),
    [
        ({"num_samples": 0}, "num_samples"),
        ({"num_samples": 4, "image_size": 4}, "image_size"),
        ({"num_samples": 4, "num_frames": 1}, "num_frames"),
        ({"num_samples": 4, "num_frames": 65}, "num_frames"),
        ({"num_samples": 4, "num_classes": 1}, "num_classes"),
        ({"num_samples": 4, "num_classes": len(GLYPH_CLASSES) + 1}, "num_classes"),
        ({"num_samples": 4, "seed": -1}, "seed"),
    ],
)
def test_invalid_arguments_name_the_argument(arguments, name):
    with pytest.raises(ValueError, match=name):
        MovingGlyphDataset(**arguments)


def test_index_out_of_range():
    with pytest.raises(IndexError):
        MovingGlyphDataset(3, image_size=8, num_frames=2)[3]


# ---------------------------------------------------------------------------------------------- folders


def _clip(num_frames: int, height: int = 8, width: int = 8, start: int = 0) -> np.ndarray:
    """(t, h, w, 3) uint8 whose frame k is filled with the value (start + 10 k)."""
    values = (start + 10 * np.arange(num_frames)).astype(np.uint8)
    return np.broadcast_to(values[:, None, None, None], (num_frames, height, width, 3)).copy()


def _save_frames(folder: Path, clip: np.ndarray) -> None:
    folder.mkdir(parents=True)
    for index, frame in enumerate(clip):
        Image.fromarray(frame).save(folder / f"frame_{index}.png")


def test_flat_folder_of_frame_folders_and_npy_clips(tmp_path: Path):
    _save_frames(tmp_path / "clip_a", _clip(12, start=5))  # 12 frames: frame_10 must sort after frame_9
    np.save(tmp_path / "clip_b.npy", _clip(12, start=7))
    np.save(tmp_path / "clip_c.npy", _clip(12, start=9).astype(np.float32) / 255.0)
    dataset = VideoFolderDataset(tmp_path)
    assert len(dataset) == 3 and dataset.class_names == () and dataset.num_frames == 12
    for index, start in enumerate((5, 7, 9)):
        clip, label = dataset[index]
        assert clip.shape == (3, 12, 8, 8) and clip.dtype == torch.float32 and label == 0
        expected = torch.tensor((start + 10 * np.arange(12)) / 255.0, dtype=torch.float32)
        assert torch.allclose(clip[:, :, 4, 4], expected.expand(3, 12), atol=1e-6)


def test_class_folders_give_sorted_labels(tmp_path: Path):
    _save_frames(tmp_path / "walk" / "one", _clip(4))
    np.save(tmp_path / "walk" / "two.npy", _clip(4))
    (tmp_path / "jump").mkdir()
    np.save(tmp_path / "jump" / "three.npy", _clip(4))
    dataset = VideoFolderDataset(tmp_path)
    assert dataset.class_names == ("jump", "walk")
    assert [dataset[index][1] for index in range(3)] == [0, 1, 1]
    batch, labels = next(iter(torch.utils.data.DataLoader(dataset, batch_size=3)))
    assert batch.shape == (3, 3, 4, 8, 8) and labels.tolist() == [0, 1, 1]


def test_num_frames_cuts_longer_clips_and_image_size_resizes(tmp_path: Path):
    np.save(tmp_path / "long.npy", _clip(6, height=16, width=24))
    np.save(tmp_path / "short.npy", _clip(4, height=8, width=8))
    with pytest.raises(ValueError, match="different frame counts"):
        VideoFolderDataset(tmp_path)
    with pytest.raises(ValueError, match="different frame sizes"):
        VideoFolderDataset(tmp_path, num_frames=4)
    dataset = VideoFolderDataset(tmp_path, num_frames=4, image_size=8)
    for index in range(2):
        clip, _ = dataset[index]
        assert clip.shape == (3, 4, 8, 8)
        assert torch.allclose(clip[0, :, 4, 4], torch.tensor([0.0, 10, 20, 30]) / 255, atol=1e-3)
    with pytest.raises(ValueError, match="short.npy.*4 frames but num_frames=5"):
        VideoFolderDataset(tmp_path, num_frames=5, image_size=8)


def test_missing_and_empty_roots(tmp_path: Path):
    with pytest.raises(ValueError, match="nowhere.*does not exist"):
        VideoFolderDataset(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="holds no clips"):
        VideoFolderDataset(tmp_path)
    (tmp_path / "empty_class").mkdir()
    with pytest.raises(ValueError, match="empty_class.*holds no clips"):
        VideoFolderDataset(tmp_path)


def test_mismatched_frame_counts_name_both_clips(tmp_path: Path):
    _save_frames(tmp_path / "a", _clip(4))
    _save_frames(tmp_path / "b", _clip(5))
    with pytest.raises(ValueError, match=r"different frame counts.*'.*a' has 4.*'.*b' has 5"):
        VideoFolderDataset(tmp_path)


def test_corrupt_png_is_named(tmp_path: Path):
    _save_frames(tmp_path / "good", _clip(3))
    _save_frames(tmp_path / "bad", _clip(3))
    (tmp_path / "bad" / "frame_1.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(ValueError, match=r"bad[/\\]frame_1\.png"):
        VideoFolderDataset(tmp_path)


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.zeros((4, 8, 8, 3), dtype=np.int32), "dtype int32"),
        (np.zeros((4, 3, 8, 8), dtype=np.uint8), "channel-first"),
        (np.zeros((2, 4, 8, 8, 3), dtype=np.uint8), "many clips"),
        (np.full((4, 8, 8, 3), 2.0, dtype=np.float32), r"float clips must be in \[0, 1\]"),
    ],
)
def test_bad_npy_clips_are_named(tmp_path: Path, array: np.ndarray, message: str):
    np.save(tmp_path / "good.npy", _clip(4))
    np.save(tmp_path / "odd.npy", array)
    with pytest.raises(ValueError, match=f"odd.npy.*{message}"):
        VideoFolderDataset(tmp_path)


def test_stray_files_and_frames_of_different_sizes_are_errors(tmp_path: Path):
    _save_frames(tmp_path / "clip", _clip(3))
    (tmp_path / "notes.txt").write_text("not a clip")
    with pytest.raises(ValueError, match="notes.txt"):
        VideoFolderDataset(tmp_path)
    (tmp_path / "notes.txt").unlink()
    Image.fromarray(np.zeros((9, 8, 3), dtype=np.uint8)).save(tmp_path / "clip" / "frame_9.png")
    with pytest.raises(ValueError, match="frame_9.png.*one size"):
        VideoFolderDataset(tmp_path)
