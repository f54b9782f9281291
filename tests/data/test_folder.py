"""Tests of ImageFolderDataset and its transforms on a tiny folder of PNGs."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from arvis.data import ImageFolderDataset
from arvis.data.transforms import center_crop_resize, to_unit_tensor


def _save(path: Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def _left_red_right_blue(height: int, width: int) -> np.ndarray:
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    pixels[:, : width // 2, 0] = 255
    pixels[:, width // 2:, 2] = 255
    return pixels


@pytest.fixture()
def image_root(tmp_path: Path) -> Path:
    root = tmp_path / "images"
    _save(root / "zebra" / "a.png", np.full((20, 30, 3), 200, dtype=np.uint8))
    _save(root / "zebra" / "nested" / "b.PNG", np.full((12, 12, 3), 10, dtype=np.uint8))
    _save(root / "apple" / "c.png", _left_red_right_blue(16, 16))
    Image.fromarray(np.full((9, 9), 128, dtype=np.uint8), mode="L").save(root / "apple" / "gray.png")
    (root / "apple" / "notes.txt").write_text("not an image")
    return root


def test_classes_sorted_and_items(image_root: Path):
    dataset = ImageFolderDataset(image_root, 8)
    assert dataset.class_names == ("apple", "zebra")
    assert dataset.class_to_index == {"apple": 0, "zebra": 1}
    assert len(dataset) == 4
    assert sorted(label for _, label in dataset.samples) == [0, 0, 1, 1]
    for index in range(len(dataset)):
        image, label = dataset[index]
        assert image.shape == (3, 8, 8) and image.dtype == torch.float32
        assert 0.0 <= image.min() and image.max() <= 1.0 and label in (0, 1)


def test_grayscale_images_become_rgb(image_root: Path):
    dataset = ImageFolderDataset(image_root, 4)
    index = [path.name for path, _ in dataset.samples].index("gray.png")
    image, _ = dataset[index]
    assert torch.allclose(image, torch.full((3, 4, 4), 128 / 255), atol=1e-6)


def _thirds(length: int, width: int, axis: int) -> np.ndarray:
    """(length, width, 3) image, red, green and blue thirds along ``axis`` (0 rows, 1 columns)."""
    pixels = np.zeros((length, width, 3), dtype=np.uint8)
    extent = pixels.shape[axis] // 3
    for channel in range(3):
        index = [slice(None), slice(None)]
        index[axis] = slice(channel * extent, (channel + 1) * extent)
        pixels[tuple(index) + (channel,)] = 255
    return pixels


@pytest.mark.parametrize(("height", "width", "axis"), [(10, 30, 1), (30, 10, 0)])
def test_center_crop_resize_keeps_the_middle_of_non_square_images(height: int, width: int, axis: int):
    cropped = center_crop_resize(Image.fromarray(_thirds(height, width, axis)), 5)
    assert cropped.size == (5, 5)
    red, green, blue = np.asarray(cropped).astype(int).transpose(2, 0, 1)
    assert green.min() > 200 and red.max() < 40 and blue.max() < 40  # only the middle third is left


def test_to_unit_tensor_layout():
    tensor = to_unit_tensor(Image.fromarray(_left_red_right_blue(2, 4)))
    assert tensor.shape == (3, 2, 4) and tensor.dtype == torch.float32
    assert tensor[0, :, 0].tolist() == [1.0, 1.0] and tensor[2, :, -1].tolist() == [1.0, 1.0]


def test_random_flip_follows_torch_seed(image_root: Path):
    plain = ImageFolderDataset(image_root, 8)
    flipping = ImageFolderDataset(image_root, 8, random_flip=True)
    index = [path.name for path, _ in plain.samples].index("c.png")
    original = plain[index][0]
    torch.manual_seed(0)
    first_run = [flipping[index][0] for _ in range(32)]
    flipped = [torch.equal(image, original.flip(-1)) for image in first_run]
    assert all(flipped[i] or torch.equal(first_run[i], original) for i in range(32))
    assert 0 < sum(flipped) < 32
    torch.manual_seed(0)
    assert all(torch.equal(image, flipping[index][0]) for image in first_run)


def test_missing_root_raises_file_not_found(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="missing"):
        ImageFolderDataset(tmp_path / "missing", 8)


def test_no_class_folders_or_no_images_raise_value_error(tmp_path: Path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"(?s)empty.*\.png"):
        ImageFolderDataset(tmp_path / "empty", 8)
    (tmp_path / "text" / "cat").mkdir(parents=True)
    (tmp_path / "text" / "cat" / "a.txt").write_text("hello")
    with pytest.raises(ValueError, match=r"(?s)text.*\.jpg"):
        ImageFolderDataset(tmp_path / "text", 8)


def test_corrupt_image_is_found_when_the_dataset_is_built(image_root: Path):
    (image_root / "apple" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    with pytest.raises(ValueError, match=r"(?s)1 of 5 files.*broken\.png"):
        ImageFolderDataset(image_root, 8)
    dataset = ImageFolderDataset(image_root, 8, verify="none")  # unchecked: fails when loaded, still naming it
    index = [path.name for path, _ in dataset.samples].index("broken.png")
    with pytest.raises(ValueError, match="broken.png"):
        dataset[index]


@pytest.mark.parametrize("image_format", ["PNG", "JPEG", "GIF", "BMP", "WEBP"])
def test_truncated_images_are_caught_by_the_default_header_check(image_root: Path, image_format: str):
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buffer, image_format)
    data = buffer.getvalue()
    suffix = {"JPEG": "jpg"}.get(image_format, image_format.lower())
    (image_root / "zebra" / f"cut.{suffix}").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=f"cut.{suffix}: (truncated|could not create decoder)"):
        ImageFolderDataset(image_root, 8)  # the header is intact: only the end check sees it
    ImageFolderDataset(image_root, 8, verify="none")  # no check at all
    (image_root / "zebra" / f"cut.{suffix}").write_bytes(data + b"\0" * 16)  # complete, with trailing padding
    assert len(ImageFolderDataset(image_root, 8)) == 5


def test_damage_inside_a_complete_file_needs_the_decode_check(image_root: Path):
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    data[len(data) // 2: len(data) // 2 + 64] = bytes(64)  # corrupt image data, end chunk intact
    (image_root / "zebra" / "damaged.png").write_bytes(bytes(data))
    ImageFolderDataset(image_root, 8)
    with pytest.raises(ValueError, match="damaged.png"):
        ImageFolderDataset(image_root, 8, verify="decode")


def test_many_broken_files_are_listed_up_to_ten(image_root: Path):
    for index in range(12):
        (image_root / "zebra" / f"bad{index:02d}.jpg").write_bytes(b"")
    with pytest.raises(ValueError, match=r"(?s)12 of 16 files.*bad09\.jpg.*and 2 more"):
        ImageFolderDataset(image_root, 8)


def test_extensions_filter(image_root: Path):
    _save(image_root / "apple" / "d.jpg", np.zeros((8, 8, 3), dtype=np.uint8))
    assert len(ImageFolderDataset(image_root, 8, extensions=("png",))) == 4
    assert len(ImageFolderDataset(image_root, 8)) == 5


def test_sixteen_bit_images_are_scaled_by_their_bit_depth(tmp_path: Path):
    from arvis.data.transforms import as_rgb

    grey = np.array([[0, 257 * 128, 65535]], dtype=np.uint16)
    _save_16(tmp_path / "g.png", grey)
    with Image.open(tmp_path / "g.png") as image:
        assert image.mode.startswith("I;16")
        assert np.asarray(as_rgb(image))[0, :, 0].tolist() == [0, 128, 255]  # convert("RGB") gives 0, 255, 255
    with pytest.raises(ValueError, match="mode F"):
        as_rgb(Image.fromarray(np.full((2, 2), 0.5, dtype=np.float32)))
    root = tmp_path / "root"
    _save_16(root / "grey" / "mid.png", np.full((8, 8), 32768, dtype=np.uint16))
    image, _ = ImageFolderDataset(root, 8)[0]
    assert torch.allclose(image, torch.full_like(image, 128 / 255))  # not white


def _save_16(path: Path, values: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(values).save(path)


def test_llamagen_random_crop_rescales_by_up_to_a_quarter_and_crops_anywhere():
    from arvis.data.transforms import random_crop_resize

    gradient = np.tile(np.arange(40, dtype=np.uint8)[None, :, None] * 6, (40, 1, 3))  # varies along the width
    image = Image.fromarray(gradient)
    crops = [np.asarray(random_crop_resize(image, 16, generator=torch.Generator().manual_seed(seed)))
             for seed in range(40)]
    assert all(crop.shape == (16, 16, 3) for crop in crops)
    spans = {int(crop[0, -1, 0]) - int(crop[0, 0, 0]) for crop in crops}  # the zoom sets the span of the ramp
    lefts = {int(crop[0, 0, 0]) for crop in crops}
    assert len(spans) > 1 and len(lefts) > 3
    full = np.asarray(center_crop_resize(image, 16))
    assert max(spans) <= int(full[0, -1, 0]) - int(full[0, 0, 0]) + 2  # never zoomed out beyond the whole image
    with pytest.raises(ValueError, match="crop must be"):
        ImageFolderDataset(Path("."), 8, crop="corner")
