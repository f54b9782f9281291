"""FID, IS, KID and precision/recall on Inception features, through torch-fidelity.

torch-fidelity extracts the features (its ``inception-v3-compat`` network: the 2015-12-05
TF Inception graph ported to PyTorch, which resizes inside the network to 299x299 with
TF1-compatible bilinear interpolation, no antialiasing). IS, KID and precision/recall are
torch-fidelity's own functions; FID uses :func:`arvis.eval.frechet.frechet_distance` on the
same statistics (sample covariance), which agrees with torch-fidelity to float64 rounding.
Precision/recall use the Inception 2048-d features (torch-fidelity's own default for PRC
is VGG-16, another download).

Everything runs offline: the weights file comes from an argument, ``$ARVIS_INCEPTION_WEIGHTS``
or the torch hub cache, and extraction runs on the GPU only when one is present (torch-
fidelity's default, CUDA, fails on CPU-only machines). torch-fidelity itself reads a weights file with
``torch.load(weights_only=False)``, which would run any code pickled into it; arvis reads the file with
``weights_only=True`` (tensors only) and hands torch-fidelity that state dict, re-serialised in memory.
Only extractors built from a state dict are offered (Inception and VGG-16): torch-fidelity's CLIP runs
the TorchScript program of its file and DINOv2 fetches Python code through torch.hub. Features of a reference set given as
a folder or ``.npz`` are cached in ``cache_dir``, keyed by the files (path, size, modification
time), the extractor, its layers and the weights file's SHA-256.

Every result carries its protocol: implementation, extractor, weights file and hash, image
counts and sources, resize policy, seeds and metric settings.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch_fidelity
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor
from torch_fidelity.metric_isc import isc_featuresdict_to_metric
from torch_fidelity.metric_kid import kid_featuresdict_to_metric
from torch_fidelity.metric_prc import prc_featuresdict_to_metric
from torch_fidelity.utils import create_feature_extractor, get_featuresdict_from_dataset

from arvis.eval.frechet import frechet_distance, gaussian_stats
from arvis.eval.images import ImageSet, ImageSource, open_images
from arvis.eval.report import file_sha256
from arvis.folders import write_file_atomically
from arvis.numpy_files import read_npz
from arvis.sample import save_npz
from arvis.torch_files import load_state_dict_file

logger = logging.getLogger(__name__)

INCEPTION = "inception-v3-compat"
INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_URL = "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/" + INCEPTION_FILE
INCEPTION_ENV = "ARVIS_INCEPTION_WEIGHTS"
INCEPTION_RESIZE = "inside the extractor: TF1-compatible bilinear to 299x299, no antialiasing (torch-fidelity)"
METRICS = ("fid", "isc", "kid", "prc")
STATE_DICT_EXTRACTORS = (INCEPTION, "vgg16")  # torch-fidelity extractors that take a state dict
DEFAULT_LAYERS = {"fid": "2048", "isc": "logits_unbiased", "kid": "2048", "prc": "2048"}


@dataclasses.dataclass(frozen=True, kw_only=True)
class MetricSettings:
    """Settings of the image metrics (torch-fidelity's defaults, which match the ADM evaluator's IS splits).

    Attributes:
        isc_splits: Inception Score splits.
        kid_subsets: KID subsets; kid_subset_size: images per subset (<= both set sizes).
        prc_neighborhood: k of the k-NN manifold radii of precision/recall.
        seed: torch-fidelity's ``rng_seed`` (IS shuffling, KID subsets).
        batch_size: images per extractor call (does not change the numbers).
    """

    isc_splits: int = 10
    kid_subsets: int = 100
    kid_subset_size: int = 1000
    prc_neighborhood: int = 3
    seed: int = 2020
    batch_size: int = 64

    def to_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


def resolve_inception_weights(path: str | Path | None = None) -> Path:
    """The Inception weights file: ``path``, else ``$ARVIS_INCEPTION_WEIGHTS``, else the torch hub cache.

    Raises ``FileNotFoundError`` naming the file, where it comes from and where to put it.
    """
    hub_copy = Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILE
    candidates = [("--weights", path), (f"${INCEPTION_ENV}", os.environ.get(INCEPTION_ENV)), ("hub", hub_copy)]
    for origin, candidate in candidates:
        if candidate is None or candidate == "":
            continue
        candidate = Path(candidate).expanduser()
        if candidate.is_file():
            return candidate
        if origin != "hub":
            raise FileNotFoundError(f"{origin} names {candidate}, which does not exist; it should be the "
                                    f"Inception weights file {INCEPTION_FILE}")
    raise FileNotFoundError(
        f"the Inception weights file {INCEPTION_FILE} was not found. Download it from {INCEPTION_URL} on a machine "
        f"with internet access and either pass its path (--weights / weights_path=), set ${INCEPTION_ENV}, "
        f"or place it at {hub_copy}"
    )


class FeatureExtractor:
    """A torch-fidelity feature extractor with the layers the requested metrics need, on one device."""

    def __init__(self, metrics: Sequence[str], *, name: str = INCEPTION, weights_path: str | Path | None = None,
                 device: str | torch.device | None = None, progress: bool = False) -> None:
        unknown = sorted(set(metrics) - set(METRICS))
        if unknown or not metrics:
            raise ValueError(f"unknown metric(s) {unknown or metrics}; choose from {METRICS}")
        if name not in STATE_DICT_EXTRACTORS:
            raise ValueError(f"feature extractor {name!r} is not offered: arvis uses torch-fidelity's extractors that "
                             f"load a state dict ({', '.join(STATE_DICT_EXTRACTORS)}), which it reads without "
                             "unpickling code")
        self.metrics = tuple(metrics)
        self.name = name
        self.device = torch.device(device if device is not None else "cuda" if torch.cuda.is_available() else "cpu")
        if name == INCEPTION:
            self.weights_path: Path = resolve_inception_weights(weights_path)
        else:
            if weights_path is None:
                raise FileNotFoundError(f"the {name} feature extractor needs its weights file; pass weights_path")
            self.weights_path = Path(weights_path)
            if not self.weights_path.is_file():
                raise FileNotFoundError(f"feature extractor weights {self.weights_path} do not exist")
        self.weights_sha256 = file_sha256(self.weights_path)
        self.layers = {metric: DEFAULT_LAYERS[metric] if name == INCEPTION else None for metric in self.metrics}
        if name != INCEPTION:
            from torch_fidelity.utils import resolve_feature_layer_for_metric

            self.layers = {metric: resolve_feature_layer_for_metric(metric, feature_extractor=name)
                           for metric in self.metrics}
        self.progress = progress
        self._network = None

    @property
    def network(self):
        if self._network is None:
            try:
                state = load_state_dict_file(self.weights_path)
            except ValueError as error:
                raise ValueError(f"cannot load the {self.name} weights from {self.weights_path}: {error} (arvis reads "
                                 "weights files with torch.load(weights_only=True), which refuses anything beyond "
                                 "tensors)") from error
            in_memory = io.BytesIO()  # torch-fidelity unpickles what it is given: give it only these tensors
            torch.save(state, in_memory)
            in_memory.seek(0)
            try:
                self._network = create_feature_extractor(self.name, sorted(set(self.layers.values())),
                                                         cuda=self.device.type == "cuda", verbose=False,
                                                         feature_extractor_weights_path=in_memory)
            except RuntimeError as error:  # tensors of the wrong names or shapes
                raise ValueError(f"cannot load the {self.name} weights from {self.weights_path}: "
                                 f"{str(error).splitlines()[0]}") from error
        return self._network

    def describe(self) -> dict[str, Any]:
        return {"feature_extractor": self.name, "feature_layers": self.layers,
                "weights_file": str(self.weights_path) if self.weights_path else None,
                "weights_sha256": self.weights_sha256,
                "resize": INCEPTION_RESIZE if self.name == INCEPTION else "the extractor's own"}

    def features(self, images: ImageSet, batch_size: int, cache_dir: str | Path | None = None) -> dict[str, Tensor]:
        """Features {layer: (n, d)} of ``images``; read from / written to ``cache_dir`` when the set has files."""
        cache_path = self._cache_path(images, cache_dir)
        if cache_path is not None and cache_path.is_file():
            try:
                cached = load_file(cache_path)
            except (SafetensorError, OSError) as error:
                raise ValueError(f"the feature cache {cache_path} is corrupt ({error}); delete it") from error
            logger.info("features of %s read from the cache %s", images.description.get("path"), cache_path)
            return cached
        features = get_featuresdict_from_dataset(images.dataset, self.network, batch_size,
                                                 self.device.type == "cuda", True, self.progress)
        features = {layer: value.contiguous() for layer, value in features.items()}
        if cache_path is not None:
            metadata = {"source": json.dumps(images.description), "extractor": json.dumps(self.describe())}
            write_file_atomically(cache_path, lambda path: save_file(features, str(path), metadata=metadata))
        return features

    def _cache_path(self, images: ImageSet, cache_dir: str | Path | None) -> Path | None:
        if cache_dir is None or images.fingerprint is None:
            return None
        key = json.dumps([images.fingerprint, self.name, sorted(set(self.layers.values())), self.weights_sha256,
                          torch_fidelity.__version__])
        return Path(cache_dir) / f"features-{hashlib.sha256(key.encode()).hexdigest()[:24]}.safetensors"


def image_metrics(fake: ImageSource | ImageSet, real: ImageSource | ImageSet | None = None, *,
                  metrics: Sequence[str] = ("fid",), extractor: FeatureExtractor | None = None,
                  weights_path: str | Path | None = None, settings: MetricSettings = MetricSettings(),
                  cache_dir: str | Path | None = None, device: str | torch.device | None = None,
                  progress: bool = False) -> dict[str, Any]:
    """Computes ``metrics`` of ``fake`` against ``real``.

    Args:
        fake: the generated images (any source of :mod:`arvis.eval.images`, or an opened set).
        real: the reference images; for FID alone also an ``.npz`` of reference statistics
            (``mu``, ``sigma``: ADM's reference batches or :func:`reference_statistics`).
            Not needed for IS alone.
        metrics: any of ``fid``, ``isc``, ``kid``, ``prc``.
        extractor: a ready extractor (reused across calls); by default Inception from
            ``weights_path`` (see :func:`resolve_inception_weights`).
        settings: IS/KID/PRC settings and the batch size.
        cache_dir: where to cache the reference set's features (None: no cache).

    Returns:
        ``{"metrics": {name: value}, "protocol": {...}}`` with torch-fidelity's metric names.
    """
    extractor = extractor or FeatureExtractor(metrics, weights_path=weights_path, device=device, progress=progress)
    needs_real = [metric for metric in metrics if metric != "isc"]
    if needs_real and real is None:
        raise ValueError(f"{', '.join(needs_real)} compare two sets; pass the reference images as real")
    real_stats = _reference_statistics_file(real)
    if real_stats is not None and set(metrics) != {"fid"}:
        raise ValueError(f"{real} holds statistics (mu, sigma) only, which serve FID alone; pass images for "
                         f"{sorted(set(metrics) - {'fid'})}")
    fake_set = fake if isinstance(fake, ImageSet) else open_images(fake)
    real_set = None
    if needs_real and real_stats is None:
        real_set = real if isinstance(real, ImageSet) else open_images(real)
    check_set_sizes(metrics, settings, len(fake_set), len(real_set) if real_set is not None else None)
    fake_features = extractor.features(fake_set, settings.batch_size)
    real_features = extractor.features(real_set, settings.batch_size, cache_dir) if real_set is not None else None
    options = {"isc_splits": settings.isc_splits, "kid_subsets": settings.kid_subsets,
               "kid_subset_size": settings.kid_subset_size, "prc_neighborhood": settings.prc_neighborhood,
               "rng_seed": settings.seed, "verbose": False, "samples_shuffle": True}
    results: dict[str, float] = {}
    layers = extractor.layers
    if "fid" in metrics:
        mu_fake, sigma_fake = gaussian_stats(fake_features[layers["fid"]])
        if real_stats is not None:
            _check_statistics_protocol(real, real_stats, extractor)
            mu_real, sigma_real = real_stats["mu"], real_stats["sigma"]
        else:
            mu_real, sigma_real = gaussian_stats(real_features[layers["fid"]])
        results[torch_fidelity.KEY_METRIC_FID] = frechet_distance(mu_fake, sigma_fake, mu_real, sigma_real)
    if "isc" in metrics:
        results.update(isc_featuresdict_to_metric(fake_features, layers["isc"], **options))
    if "kid" in metrics:
        results.update(kid_featuresdict_to_metric(fake_features, real_features, layers["kid"], **options))
    if "prc" in metrics:
        results.update(prc_featuresdict_to_metric(fake_features, real_features, layers["prc"], **options))
    protocol = {
        "implementation": f"torch-fidelity {torch_fidelity.__version__} features; FID via arvis.eval.frechet",
        **extractor.describe(),
        "metrics": list(metrics), "settings": settings.to_dict(), "covariance": "sample (n - 1)",
        "num_fake": len(fake_set), "fake": fake_set.description,
        "num_real": len(real_set) if real_set is not None else _stats_count(real_stats),
        "real": real_set.description if real_set is not None else (str(real) if real is not None else None),
        "device": extractor.device.type,
    }
    return {"metrics": {name: float(value) for name, value in results.items()}, "protocol": protocol}


def reference_statistics(real: ImageSource | ImageSet, out_path: str | Path, *,
                         extractor: FeatureExtractor | None = None, weights_path: str | Path | None = None,
                         batch_size: int = 64, device: str | torch.device | None = None,
                         progress: bool = False) -> dict[str, Any]:
    """Saves FID statistics of ``real`` to ``out_path`` (.npz: mu, sigma float64, protocol JSON).

    The file serves as ``real`` of :func:`image_metrics` for FID (as ADM's reference batches do).
    Returns the protocol.
    """
    out_path = Path(out_path)
    if out_path.suffix != ".npz":
        raise ValueError(f"reference statistics are written as .npz; got {out_path}")
    extractor = extractor or FeatureExtractor(["fid"], weights_path=weights_path, device=device, progress=progress)
    real_set = real if isinstance(real, ImageSet) else open_images(real)
    mu, sigma = gaussian_stats(extractor.features(real_set, batch_size)[extractor.layers["fid"]])
    protocol = {"implementation": f"torch-fidelity {torch_fidelity.__version__} features", **extractor.describe(),
                "covariance": "sample (n - 1)", "num_images": len(real_set), "source": real_set.description}
    write_file_atomically(out_path, lambda path: save_npz(path, mu=mu.numpy(), sigma=sigma.numpy(),
                                                      num_images=np.array(len(real_set)),
                                                      protocol=np.array(json.dumps(protocol))))
    return protocol


def _reference_statistics_file(real) -> dict[str, np.ndarray] | None:
    if not isinstance(real, (str, Path)) or Path(real).suffix != ".npz" or not Path(real).is_file():
        return None
    arrays = read_npz(Path(real))
    if "arr_0" in arrays or not {"mu", "sigma"} <= set(arrays):
        return None
    mu, sigma = arrays["mu"], arrays["sigma"]
    if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
        raise ValueError(f"{real}: mu must be (d,) and sigma (d, d), got {mu.shape} and {sigma.shape}")
    return arrays


def _check_statistics_protocol(path, stats: dict[str, np.ndarray], extractor: FeatureExtractor) -> None:
    """Statistics written by arvis must come from the same extractor weights; others (ADM's) are taken as is."""
    if "protocol" not in stats:
        logger.info("%s has no protocol record (e.g. ADM's reference batches, from TF Inception): "
                    "the FID is close to, not bit-identical with, the reference evaluator's", path)
        return
    recorded = json.loads(str(stats["protocol"]))
    if recorded.get("weights_sha256") != extractor.weights_sha256 or recorded.get("feature_extractor") != extractor.name:
        raise ValueError(f"{path} was computed with {recorded.get('feature_extractor')} weights "
                         f"{recorded.get('weights_sha256')}, not {extractor.name} {extractor.weights_sha256}; "
                         "recompute it with arvis eval reference-stats")


def _stats_count(stats: dict[str, np.ndarray] | None) -> int | None:
    return int(stats["num_images"]) if stats is not None and "num_images" in stats else None


def check_set_sizes(metrics: Sequence[str], settings: MetricSettings, num_fake: int, num_real: int | None) -> None:
    """Raises ``ValueError`` when a set is too small for a metric to be defined (instead of a NaN or a traceback).

    FID needs a covariance (>= 2 images per set; statistics files count as large enough), IS at least one image
    per split, KID ``kid_subset_size`` images in each set, precision/recall more images per set than
    ``prc_neighborhood`` (the k-th nearest neighbour of a point is another point). ``num_real`` is None when
    the reference is a statistics file or absent.
    """
    sets = {"fake": num_fake} if num_real is None else {"fake": num_fake, "real": num_real}
    smallest = min(sets.values())
    if "fid" in metrics and any(count < 2 for count in sets.values()):
        raise ValueError(f"FID needs at least 2 images per set for a covariance, got {sets}")
    if "isc" in metrics and num_fake < settings.isc_splits:
        raise ValueError(f"the Inception Score splits the {num_fake} images into {settings.isc_splits} parts and needs "
                         f"at least one image per part; pass more images or --isc-splits <= {num_fake}")
    if "kid" in metrics and settings.kid_subset_size > smallest:
        raise ValueError(f"kid_subset_size {settings.kid_subset_size} exceeds the smaller set "
                         f"({smallest} images); pass --kid-subset-size <= {smallest}")
    if "prc" in metrics and smallest <= settings.prc_neighborhood:
        raise ValueError(f"precision/recall with prc_neighborhood {settings.prc_neighborhood} needs more than "
                         f"{settings.prc_neighborhood} images per set, got {sets}; pass more images or "
                         f"--prc-neighborhood <= {max(1, smallest - 1)}")
