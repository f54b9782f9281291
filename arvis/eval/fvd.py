"""Fréchet Video Distance with StyleGAN-V's I3D TorchScript detector, read from a local file.

FVD (Unterthiner et al. 2018, https://arxiv.org/abs/1812.01717) is the Fréchet distance
between Gaussians fitted to I3D features of real and generated clips. This follows
StyleGAN-V's protocol (https://github.com/universome/stylegan-v): the detector is called
as ``detector(x, rescale=True, resize=True, return_features=True)`` on float clips
(b, 3, t, h, w) holding uint8 values, it resizes frames to 224 and returns (b, d)
features (d = 400 for the real model; read at runtime), and covariances divide by n.

FVD depends on the number of clips, frames, frame stride, resolution and detector, so
:func:`compute_fvd` returns the score with a protocol record of all of them. Reference
statistics can be computed once (:func:`video_feature_stats`, :func:`save_fvd_stats`)
and passed as ``real`` (an ``.npz`` holding ``mu`` and ``sigma``).

Shapes: b batch, c channels, t frames, h w frame height and width, d feature dimension.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from arvis.config import Config
from arvis.eval.frechet import FeatureStats, frechet_distance
from arvis.eval.report import file_sha256
from arvis.folders import write_file_atomically
from arvis.numpy_files import read_npz
from arvis.sample import save_npz
from arvis.eval.videos import VideoSource, video_batches

logger = logging.getLogger(__name__)

I3D_FILE = "i3d_torchscript.pt"
I3D_URL = "https://www.dropbox.com/s/ge9e5ujwgetktms/i3d_torchscript.pt?dl=1"
ENV_VAR = "ARVIS_I3D_PATH"
DETECTOR_KWARGS = {"rescale": True, "resize": True, "return_features": True}
EXPECTED_SIGNATURE = (
    "forward(x: Tensor, rescale: bool = False, resize: bool = False, return_features: bool = False) -> Tensor"
)
PROTOCOL_KEYS = ("detector_sha256", "num_frames", "frame_stride", "resolution", "covariance")


@dataclasses.dataclass(frozen=True, kw_only=True)
class FVDConfig(Config):
    """The FVD protocol. StyleGAN-V's ``fvd2048_16f`` is ``max_real=2048, max_fake=2048, num_frames=16``."""

    num_frames: int = 16  # frames per clip fed to I3D
    frame_stride: int = 1  # take every frame_stride-th frame from the start of each clip
    resolution: int | None = None  # resize frames to resolution^2 first; None keeps them (I3D resizes to 224)
    max_real: int | None = None  # use the first max_real real clips; None uses all
    max_fake: int | None = None
    batch_size: int = 16  # clips per detector call; does not change the score
    detector_path: str | None = None  # i3d_torchscript.pt; None reads $ARVIS_I3D_PATH

    def __post_init__(self) -> None:
        for name in ("num_frames", "frame_stride", "batch_size", "resolution"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"FVDConfig.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("max_real", "max_fake"):
            if getattr(self, name) is not None and getattr(self, name) < 2:
                raise ValueError(f"FVDConfig.{name} must be >= 2 (a covariance needs 2 clips), got {getattr(self, name)}")


def resolve_i3d_path(path: str | Path | None) -> Path:
    """The detector file: ``path`` if given, else ``$ARVIS_I3D_PATH``; missing -> ``FileNotFoundError``."""
    origin = "detector path" if path is not None else f"${ENV_VAR}"
    path = path if path is not None else os.environ.get(ENV_VAR)
    if path and Path(path).expanduser().is_file():
        return Path(path).expanduser()
    problem = f"{origin} points to {path}, which does not exist" if path else f"no detector path given and ${ENV_VAR} is unset"
    raise FileNotFoundError(
        f"FVD needs StyleGAN-V's I3D detector {I3D_FILE} ({problem}). Download it from StyleGAN-V's release "
        f"({I3D_URL}) on a machine with network access, then pass --detector / detector_path=PATH or set {ENV_VAR}=PATH"
    )


def load_i3d(path: str | Path, device: str | torch.device = "cpu") -> torch.jit.ScriptModule:
    """Loads the TorchScript detector in eval mode and checks its interface on a dummy clip."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"missing detector file {path}; see resolve_i3d_path for where to get {I3D_FILE}")
    try:
        detector = torch.jit.load(str(path), map_location=device).eval()
    except RuntimeError as error:
        raise ValueError(f"{path} is not a readable TorchScript file (corrupt or not {I3D_FILE}): {error}") from error
    schema = getattr(getattr(detector, "forward", None), "schema", None)
    arguments = {a.name: str(a.type) for a in schema.arguments} if schema is not None else {}
    if any(arguments.get(name) != "bool" for name in DETECTOR_KWARGS):
        raise ValueError(
            f"{path} does not have StyleGAN-V's I3D interface: expected {EXPECTED_SIGNATURE}, got {schema}"
        )
    dummy = torch.zeros(1, 3, 16, 64, 64, device=device)
    try:
        check_features(_run_detector(detector, dummy), 1, f"{path} on a dummy clip (1, 3, 16, 64, 64)")
    except RuntimeError as error:
        raise ValueError(f"{path} failed on a dummy clip (1, 3, 16, 64, 64): {error}") from error
    return detector


def check_features(features: object, batch: int, where: str) -> Tensor:
    """Checks the detector returned a (batch, d) tensor."""
    if not isinstance(features, Tensor) or features.ndim != 2 or features.shape[0] != batch:
        shape = tuple(features.shape) if isinstance(features, Tensor) else type(features).__name__
        raise ValueError(f"{where} returned {shape}; an FVD detector must return features (batch={batch}, d)")
    return features


def video_feature_stats(
    source: VideoSource, detector: torch.jit.ScriptModule, config: FVDConfig, *, max_videos: int | None = None
) -> FeatureStats:
    """Runs the detector over the clips of ``source`` (see ``arvis.eval.videos``) and accumulates features."""
    batches = _open_source(source, config, max_videos)
    stats = _accumulate(batches, detector, config)
    if max_videos is not None and stats.num_samples < max_videos:
        logger.warning("asked for %d videos but the source holds %d", max_videos, stats.num_samples)
    return stats


def resize_frames(clips: Tensor, resolution: int) -> Tensor:
    """Bilinear (antialiased) resize of (b, c, t, h, w) uint8-range frames to resolution^2, re-quantized."""
    frames = rearrange(clips, "b c t h w -> (b t) c h w")
    frames = F.interpolate(frames, size=(resolution, resolution), mode="bilinear", align_corners=False, antialias=True)
    return rearrange(frames.round().clamp(0, 255), "(b t) c h w -> b c t h w", b=clips.shape[0])


def compute_fvd(
    real: VideoSource | FeatureStats,
    fake: VideoSource | FeatureStats,
    config: FVDConfig,
    *,
    device: str | torch.device | None = None,
) -> dict:
    """FVD between ``real`` and ``fake`` clips, with the protocol that produced it.

    Args:
        real, fake: video sources (``arvis.eval.videos``), ``FeatureStats`` from
            :func:`video_feature_stats`, or an ``.npz`` of precomputed ``mu``/``sigma``
            (from :func:`save_fvd_stats`, whose recorded protocol must match ``config``).
        config: the protocol; ``detector_path`` or ``$ARVIS_I3D_PATH`` names the detector.
        device: where the detector runs; None picks CUDA when available, else CPU.

    Returns:
        ``{"fvd": float, "protocol": {...}}`` with the detector, its sha256, the feature
        dimension, the clip counts and the clip selection.
    """
    device = device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu")
    path = resolve_i3d_path(config.detector_path)
    protocol = {
        "metric": "fvd",
        "implementation": "arvis",
        "detector": str(path),
        "detector_sha256": file_sha256(path),
        "num_frames": config.num_frames,
        "frame_stride": config.frame_stride,
        "resolution": config.resolution,
        "covariance": "population",
    }
    # Open both sources before any detector work, so a bad fake folder fails in seconds, not after the reals.
    inputs = [_open_source(source, config, limit) for source, limit in ((real, config.max_real), (fake, config.max_fake))]
    detector = None
    gaussians = []
    for source in inputs:
        if isinstance(source, Path):
            gaussians.append(load_fvd_stats(source, expected=protocol))
            continue
        if not isinstance(source, FeatureStats):
            detector = detector if detector is not None else load_i3d(path, device)
            source = _accumulate(source, detector, config)
        gaussians.append((*source.mean_cov(population=True), source.num_samples))
    (mu_real, sigma_real, num_real), (mu_fake, sigma_fake, num_fake) = gaussians
    if mu_real.shape != mu_fake.shape:
        raise ValueError(f"real features have d={mu_real.shape[0]} but fake have d={mu_fake.shape[0]}; use one detector")
    protocol.update(feature_dim=mu_real.shape[0], num_real=num_real, num_fake=num_fake)
    return {"fvd": frechet_distance(mu_real, sigma_real, mu_fake, sigma_fake), "protocol": protocol}


def save_fvd_stats(path: str | Path, stats: FeatureStats, config: FVDConfig) -> dict:
    """Writes reference statistics (``mu``, ``sigma``, ``num_videos``, ``protocol`` JSON) to an ``.npz``."""
    if Path(path).suffix != ".npz":
        raise ValueError(f"reference statistics are saved as .npz; got {path}, use a name ending in .npz")
    detector = resolve_i3d_path(config.detector_path)
    mu, sigma = stats.mean_cov(population=True)
    protocol = {"metric": "fvd_reference_stats", "detector": str(detector), "detector_sha256": file_sha256(detector),
                "feature_dim": stats.num_features, "num_videos": stats.num_samples, "num_frames": config.num_frames,
                "frame_stride": config.frame_stride, "resolution": config.resolution, "covariance": "population"}
    write_file_atomically(path, lambda temporary: save_npz(temporary, mu=mu.numpy(), sigma=sigma.numpy(),
                                                           num_videos=np.array(stats.num_samples),
                                                           protocol=np.array(json.dumps(protocol))))
    return protocol


def load_fvd_stats(path: str | Path, *, expected: dict | None = None) -> tuple[Tensor, Tensor, int | None]:
    """Reads ``mu`` (d,), ``sigma`` (d, d) and the clip count (None if unrecorded) from an ``.npz``.

    If the file records a protocol and ``expected`` is given, each of ``PROTOCOL_KEYS`` must agree.
    """
    data = read_npz(path)
    if "mu" not in data or "sigma" not in data:
        raise ValueError(f"{path} holds {list(data)}; FVD statistics need arrays 'mu' and 'sigma'")
    mu, sigma = torch.from_numpy(data["mu"]).double(), torch.from_numpy(data["sigma"]).double()
    count = int(data["num_videos"]) if "num_videos" in data else None
    recorded = json.loads(str(data["protocol"])) if "protocol" in data else None
    if recorded is not None and expected is not None:
        diff = [f"{k}: stats {recorded.get(k)!r}, now {expected[k]!r}" for k in PROTOCOL_KEYS if recorded.get(k) != expected[k]]
        if diff:
            raise ValueError(f"reference statistics {path} were computed with another protocol ({'; '.join(diff)}); "
                             "recompute them with this config")
    return mu, sigma, count


def _run_detector(detector: torch.jit.ScriptModule, clips: Tensor) -> Tensor:
    with torch.inference_mode():
        return detector(clips, **DETECTOR_KWARGS)


def _open_source(source: object, config: FVDConfig, max_videos: int | None) -> object:
    """A stats ``.npz`` path, a ``FeatureStats``, or a validated iterator of clip batches."""
    if isinstance(source, FeatureStats) or _is_stats_file(source):
        return Path(source) if isinstance(source, (str, Path)) else source
    return video_batches(
        source, num_frames=config.num_frames, frame_stride=config.frame_stride,
        batch_size=config.batch_size, max_videos=max_videos,
    )


def _accumulate(batches: Iterator[Tensor], detector: torch.jit.ScriptModule, config: FVDConfig) -> FeatureStats:
    device = next(iter(detector.parameters()), torch.zeros(0)).device
    stats = FeatureStats()
    for clips in batches:  # (b, 3, t, h, w) uint8
        x = clips.to(device=device, dtype=torch.float32)
        if config.resolution is not None:
            x = resize_frames(x, config.resolution)
        stats.update(check_features(_run_detector(detector, x), x.shape[0], "the detector"))
    return stats


def _is_stats_file(source: object) -> bool:
    if not isinstance(source, (str, Path)) or Path(source).suffix != ".npz" or not Path(source).is_file():
        return False
    try:
        return {"mu", "sigma"} <= set(read_npz(source))
    except ValueError:
        return False
