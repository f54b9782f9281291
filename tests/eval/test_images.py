"""Image sources for evaluation: folders, .npz files, tensors and arrays, pipelines."""

import numpy as np
import pytest
import torch
from PIL import Image

from arvis.eval.images import open_images, sample_pipeline, to_uint8_chw
from arvis.sample import save_npz


def _pixels(seed: int, n: int = 3, size: int = 8) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def test_ranges_and_layouts_convert_to_the_same_uint8():
    pixels = _pixels(0)
    expected = torch.from_numpy(pixels).permute(0, 3, 1, 2)
    unit = torch.from_numpy(pixels).float().permute(0, 3, 1, 2) / 255
    assert torch.equal(to_uint8_chw(pixels), expected)  # NHWC uint8 array
    assert torch.equal(to_uint8_chw(expected), expected)  # NCHW uint8 tensor
    assert torch.equal(to_uint8_chw(unit), expected)  # [0, 1]
    assert torch.equal(to_uint8_chw(unit * 2 - 1), expected)  # [-1, 1] (values below 0 present)
    assert torch.equal(to_uint8_chw(unit.double().numpy().transpose(0, 2, 3, 1)), expected)
    assert torch.equal(to_uint8_chw(unit * 2 - 1, value_range=(-1, 1)), expected)


@pytest.mark.parametrize("images, message", [
    (torch.rand(2, 3, 3, 3), "cannot tell channels"),
    (torch.rand(2, 4, 8, 8), "3 colour channels"),
    (torch.rand(3, 8, 8), r"\(n, 3, h, w\)"),
    (torch.rand(2, 3, 8, 8) * 3, "neither"),
    (torch.full((1, 3, 8, 8), float("nan")), "NaN"),
    (torch.zeros(2, 3, 8, 8, dtype=torch.int32), "uint8 or floating"),
    (torch.zeros(0, 3, 8, 8), "empty"),
])
def test_bad_arrays_are_refused(images, message):
    with pytest.raises(ValueError, match=message):
        to_uint8_chw(images)


def test_explicit_range_must_hold_the_values():
    with pytest.raises(ValueError, match="outside value_range"):
        to_uint8_chw(torch.rand(1, 3, 8, 8) * 2 - 1, value_range=(0, 1))


def _write_folder(folder, sizes):
    folder.mkdir(parents=True, exist_ok=True)
    for index, size in enumerate(sizes):
        Image.fromarray(_pixels(index, 1, size)[0]).save(folder / f"{index:03d}.png")


def test_folder_and_npz_give_the_same_images(tmp_path):
    _write_folder(tmp_path / "images", [8, 8, 8])
    from_folder = open_images(tmp_path / "images")
    stacked = np.stack([_pixels(index, 1, 8)[0] for index in range(3)])
    save_npz(tmp_path / "images.npz", arr_0=stacked, labels=np.array([2, 0, 1]))
    from_npz = open_images(tmp_path / "images.npz")
    assert len(from_folder) == len(from_npz) == 3
    for index in range(3):
        assert torch.equal(from_folder.dataset[index], from_npz.dataset[index])
    assert from_npz.labels.tolist() == [2, 0, 1] and from_folder.labels is None
    assert from_folder.description["size"] == [8, 8] and from_folder.fingerprint != from_npz.fingerprint
    assert len(open_images(tmp_path / "images", max_images=2)) == 2


def test_bad_folders_name_the_problem(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="is empty"):
        open_images(tmp_path / "empty")
    _write_folder(tmp_path / "mixed", [8, 8, 12])
    with pytest.raises(ValueError, match=r"different sizes \(8x8: 2 files.*12x12: 1 files, e.g. 002.png"):
        open_images(tmp_path / "mixed")
    _write_folder(tmp_path / "notes", [8])
    (tmp_path / "notes" / "readme.txt").write_text("hello")
    with pytest.raises(ValueError, match="not images: .*readme.txt"):
        open_images(tmp_path / "notes")
    _write_folder(tmp_path / "broken", [8])
    (tmp_path / "broken" / "bad.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="bad.png"):
        open_images(tmp_path / "broken")
    with pytest.raises(FileNotFoundError, match="absent"):
        open_images(tmp_path / "absent")


@pytest.mark.parametrize("arrays, message", [
    ({"arr_0": np.zeros((2, 3, 8, 8), np.uint8)}, r"\(n, h, w, 3\) uint8"),
    ({"arr_0": np.zeros((2, 8, 8, 3), np.float32)}, r"\(n, h, w, 3\) uint8"),
    ({"images": np.zeros((2, 8, 8, 3), np.uint8)}, "has no arr_0"),
    ({"mu": np.zeros(4), "sigma": np.eye(4)}, "reference statistics"),
    ({"arr_0": np.zeros((2, 8, 8, 3), np.uint8), "labels": np.zeros(3)}, r"labels must be \(2,\)"),
])
def test_bad_npz_layouts_are_refused(tmp_path, arrays, message):
    save_npz(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ValueError, match=message):
        open_images(tmp_path / "bad.npz")


def test_corrupt_npz_is_a_clear_error(tmp_path):
    (tmp_path / "corrupt.npz").write_bytes(b"PK garbage")
    with pytest.raises(ValueError, match="cannot read .*corrupt.npz"):
        open_images(tmp_path / "corrupt.npz")


def test_pipeline_samples_match_arvis_sample_and_record_the_protocol(tiny_pipeline, tmp_path):
    from arvis.sample import collect_npz, sample_to_folder

    images = sample_pipeline(tiny_pipeline, num_samples=5, seed=3, batch_size=2, top_k=4)
    sample_to_folder(tiny_pipeline, tmp_path / "samples", num_samples=5, seed=3, batch_size=3, top_k=4)
    written = open_images(collect_npz(tmp_path / "samples"))
    for index in range(5):
        assert torch.equal(images.dataset[index], written.dataset[index])
    assert torch.equal(images.labels, written.labels)
    protocol = images.description["sampling_protocol"]
    assert protocol["seed"] == 3 and protocol["sampling"]["top_k"] == 4


def test_sixteen_bit_pngs_are_read_by_their_bit_depth(tmp_path):
    (tmp_path / "set").mkdir()
    for index in range(2):
        Image.fromarray(np.full((8, 8), 32768, dtype=np.uint16)).save(tmp_path / "set" / f"{index}.png")
    images = open_images(tmp_path / "set").tensor()
    assert images.dtype == torch.uint8 and int(images.max()) == 128  # PIL's convert("RGB") would give 255


def test_empty_and_foreign_npz_files_are_refused_clearly(tmp_path):
    save_npz(tmp_path / "empty.npz", arr_0=np.zeros((0, 8, 8, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="no images or no pixels"):
        open_images(tmp_path / "empty.npz")
    (tmp_path / "garbage.npz").write_bytes(b"this is not numpy at all" * 10)
    with pytest.raises(ValueError, match="not a zip archive") as error:
        open_images(tmp_path / "garbage.npz")
    assert "pickle" not in str(error.value)
