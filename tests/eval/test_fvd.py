"""FVD through the real loading path with a tiny TorchScript stand-in for StyleGAN-V's I3D."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
from einops import rearrange
from PIL import Image
from torch import nn

from arvis.eval.fvd import (
    FVDConfig,
    compute_fvd,
    load_fvd_stats,
    load_i3d,
    resolve_i3d_path,
    save_fvd_stats,
    video_feature_stats,
)
from arvis.eval.videos import load_videos, video_batches


class WrongSignature(nn.Module):
    def forward(self, x):
        return x.flatten(1)


class FlatOutput(nn.Module):
    def forward(self, x, rescale: bool = False, resize: bool = False, return_features: bool = False):
        return x.mean(dim=(1, 2, 3, 4))


def moving_squares(num_videos: int, seed: int, frames: int = 10, size: int = 16) -> torch.Tensor:
    """(n, 3, t, h, w) uint8: a bright 4x4 square moving one pixel per frame (wrapping) over noise."""
    gen = torch.Generator().manual_seed(seed)
    videos = torch.randint(0, 40, (num_videos, 3, frames, size, size), generator=gen, dtype=torch.uint8)
    start = torch.randint(0, size, (num_videos, 2), generator=gen)
    velocity = torch.randint(0, 2, (num_videos, 2), generator=gen) * 2 - 1
    color = torch.randint(180, 256, (num_videos, 3), generator=gen, dtype=torch.uint8)
    for i in range(num_videos):
        for t in range(frames):
            y, x = ((start[i] + velocity[i] * t) % size).tolist()
            rows, cols = torch.arange(y, y + 4) % size, torch.arange(x, x + 4) % size
            videos[i, :, t, rows[:, None], cols[None, :]] = color[i][:, None, None]
    return videos


def time_shuffled(videos: torch.Tensor, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.stack([v[:, torch.randperm(v.shape[1], generator=gen)] for v in videos])


def write_frame_folders(videos: torch.Tensor, root) -> None:
    for i, clip in enumerate(rearrange(videos, "n c t h w -> n t h w c").numpy()):
        (root / f"clip_{i}").mkdir(parents=True)
        for t, frame in enumerate(clip):  # frame_10 must sort after frame_9
            Image.fromarray(frame).save(root / f"clip_{i}" / f"frame_{t}.png")


def test_fvd_prefers_ordered_motion_over_shuffled_frames(detector_path):
    config = FVDConfig(num_frames=10, detector_path=str(detector_path))
    real, real_again = moving_squares(48, seed=1), moving_squares(48, seed=2)
    same_distribution = compute_fvd(real, real_again, config, device="cpu")["fvd"]
    shuffled = compute_fvd(real, time_shuffled(real_again, seed=3), config, device="cpu")["fvd"]
    assert 0 < 3 * same_distribution < shuffled


def test_fvd_of_identical_sets_is_zero_and_protocol_is_recorded(detector_path):
    videos = moving_squares(12, seed=4)
    config = FVDConfig(num_frames=4, frame_stride=2, max_fake=10, batch_size=5, detector_path=str(detector_path))
    result = compute_fvd(videos, videos.float() / 255, config, device="cpu")
    assert result["fvd"] > 0  # max_fake=10 drops two clips
    result = compute_fvd(videos, videos[:12], config.replace(max_fake=None), device="cpu")
    assert result["fvd"] == pytest.approx(0.0, abs=1e-6)
    assert result["protocol"] == {
        "metric": "fvd", "implementation": "arvis", "detector": str(detector_path),
        "detector_sha256": hashlib.sha256(detector_path.read_bytes()).hexdigest(), "feature_dim": 8,
        "num_real": 12, "num_fake": 12, "num_frames": 4, "frame_stride": 2, "resolution": None,
        "covariance": "population",
    }
    resized = compute_fvd(videos, videos, config.replace(max_fake=None, resolution=8), device="cpu")
    assert resized["protocol"]["resolution"] == 8 and resized["fvd"] == pytest.approx(0.0, abs=1e-6)


def test_frame_folders_equal_arrays(detector_path, tmp_path):
    videos = moving_squares(5, seed=5, frames=12)
    write_frame_folders(videos, tmp_path / "clips")
    np.savez(tmp_path / "clips.npz", arr_0=rearrange(videos, "n c t h w -> n t h w c").numpy())
    np.save(tmp_path / "clips.npy", rearrange(videos, "n c t h w -> n t h w c").numpy())
    for source in (tmp_path / "clips", str(tmp_path / "clips.npz"), tmp_path / "clips.npy", videos.float() / 255):
        assert torch.equal(load_videos(source, num_frames=12), videos)
    assert torch.equal(load_videos(tmp_path / "clips", num_frames=4, frame_stride=3), videos[:, :, 0:10:3])
    batches = list(video_batches(tmp_path / "clips", num_frames=2, batch_size=2, max_videos=3))
    assert [b.shape[0] for b in batches] == [2, 1]
    config = FVDConfig(num_frames=12, detector_path=str(detector_path))
    fake = moving_squares(5, seed=6, frames=12)
    from_folder = compute_fvd(tmp_path / "clips", fake, config, device="cpu")
    assert from_folder == compute_fvd(tmp_path / "clips.npz", fake, config, device="cpu")


def test_precomputed_reference_stats(detector_path, tmp_path):
    config = FVDConfig(num_frames=8, detector_path=str(detector_path))
    real, fake = moving_squares(16, seed=7), moving_squares(16, seed=8)
    stats = video_feature_stats(real, load_i3d(detector_path), config)
    protocol = save_fvd_stats(tmp_path / "ref.npz", stats, config)
    assert protocol["num_videos"] == 16 and protocol["feature_dim"] == 8
    mu, sigma, count = load_fvd_stats(tmp_path / "ref.npz")
    assert mu.shape == (8,) and sigma.shape == (8, 8) and count == 16
    direct = compute_fvd(real, fake, config, device="cpu")
    from_file = compute_fvd(tmp_path / "ref.npz", fake, config, device="cpu")
    assert from_file["fvd"] == pytest.approx(direct["fvd"], rel=1e-9)
    assert from_file["protocol"] == direct["protocol"]
    assert compute_fvd(stats, fake, config, device="cpu")["fvd"] == pytest.approx(direct["fvd"], rel=1e-9)
    with pytest.raises(ValueError, match="ending in .npz"):
        save_fvd_stats(tmp_path / "ref.stats", stats, config)
    with pytest.raises(ValueError, match="num_frames: stats 8, now 4"):
        compute_fvd(tmp_path / "ref.npz", fake, config.replace(num_frames=4), device="cpu")


def test_detector_path_resolution(detector_path, tmp_path, monkeypatch):
    monkeypatch.delenv("ARVIS_I3D_PATH", raising=False)
    with pytest.raises(FileNotFoundError, match=r"i3d_torchscript\.pt.*StyleGAN-V.*--detector.*ARVIS_I3D_PATH"):
        resolve_i3d_path(None)
    with pytest.raises(FileNotFoundError, match="nowhere.pt, which does not exist"):
        resolve_i3d_path(tmp_path / "nowhere.pt")
    monkeypatch.setenv("ARVIS_I3D_PATH", str(detector_path))
    assert resolve_i3d_path(None) == detector_path
    result = compute_fvd(moving_squares(4, seed=9), moving_squares(4, seed=10), FVDConfig(num_frames=8), device="cpu")
    assert result["protocol"]["detector"] == str(detector_path)


def test_bad_detectors_raise(tmp_path):
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a torchscript archive")
    with pytest.raises(ValueError, match="corrupt.pt is not a readable TorchScript file"):
        load_i3d(corrupt)
    torch.jit.save(torch.jit.script(WrongSignature()), str(tmp_path / "wrong.pt"))
    with pytest.raises(ValueError, match=r"wrong.pt does not have StyleGAN-V's I3D interface.*rescale: bool"):
        load_i3d(tmp_path / "wrong.pt")
    torch.jit.save(torch.jit.script(FlatOutput()), str(tmp_path / "flat.pt"))
    with pytest.raises(ValueError, match=r"returned \(1,\); an FVD detector must return features"):
        load_i3d(tmp_path / "flat.pt")


def test_bad_video_sources_raise(tmp_path):
    videos = rearrange(moving_squares(3, seed=11, frames=6), "n c t h w -> n t h w c").numpy()
    np.savez(tmp_path / "channels_first.npz", arr_0=np.moveaxis(videos, -1, 2))
    with pytest.raises(ValueError, match=r"\(n, t, h, w, 3\).*np.moveaxis"):
        load_videos(tmp_path / "channels_first.npz", num_frames=4)
    np.savez(tmp_path / "float.npz", arr_0=videos / 255.0)
    with pytest.raises(ValueError, match="dtype float64; expected uint8"):
        load_videos(tmp_path / "float.npz", num_frames=4)
    np.savez(tmp_path / "two.npz", a=videos, b=videos)
    with pytest.raises(ValueError, match="store the videos as arr_0"):
        load_videos(tmp_path / "two.npz", num_frames=4)
    (tmp_path / "broken.npz").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="cannot read .*broken.npz"):
        load_videos(tmp_path / "broken.npz", num_frames=4)
    with pytest.raises(ValueError, match="have 6 frames but 7 are needed"):
        load_videos(videos, num_frames=4, frame_stride=2)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no clip folders"):
        load_videos(tmp_path / "empty", num_frames=4)
    with pytest.raises(FileNotFoundError, match="no video source"):
        load_videos(tmp_path / "missing", num_frames=4)


def test_bad_frame_folders_raise(tmp_path):
    videos = moving_squares(2, seed=12, frames=5)
    write_frame_folders(videos, tmp_path / "uneven")
    (tmp_path / "uneven" / "clip_1" / "frame_4.png").unlink()
    with pytest.raises(ValueError, match="different frame counts.*clip_0 has 5.*clip_1 has 4"):
        load_videos(tmp_path / "uneven", num_frames=4)
    write_frame_folders(videos, tmp_path / "short")
    with pytest.raises(ValueError, match="clip .*clip_0 has 5 frames but 9 are needed"):
        load_videos(tmp_path / "short", num_frames=5, frame_stride=2)
    write_frame_folders(videos, tmp_path / "notes")
    (tmp_path / "notes" / "clip_0" / "notes.txt").write_text("hi")
    with pytest.raises(ValueError, match=r"non-image entries \['notes.txt'\]"):
        load_videos(tmp_path / "notes", num_frames=4)
    write_frame_folders(videos, tmp_path / "sizes")
    Image.new("RGB", (8, 8)).save(tmp_path / "sizes" / "clip_1" / "frame_0.png")
    with pytest.raises(ValueError, match="clip .*clip_1 has 8x8 frames"):
        load_videos(tmp_path / "sizes", num_frames=4)


def test_bad_tensors_and_config_raise():
    videos = moving_squares(2, seed=13, frames=4)
    with pytest.raises(ValueError, match="looks NTHWC"):
        load_videos(rearrange(videos, "n c t h w -> n t h w c"), num_frames=4)
    with pytest.raises(ValueError, match=r"float videos must be in \[0, 1\]"):
        load_videos(videos.float() / 127.5 - 1, num_frames=4)
    with pytest.raises(ValueError, match="clips in video batch 1 have 3 frames but 4 are needed"):
        load_videos(iter([videos, videos[:, :, :3]]), num_frames=4)
    with pytest.raises(ValueError, match="max_real must be >= 2"):
        FVDConfig(max_real=1)
    config = FVDConfig(num_frames=8, resolution=64, detector_path="i3d.pt")
    assert FVDConfig.from_dict(config.to_dict()) == config
