"""FID / IS / KID / PRC through torch-fidelity, against its own calculate_metrics (random Inception weights)."""

import json

import numpy as np
import pytest
import torch
import torch_fidelity

from arvis.data import GlyphDataset
from arvis.eval.fidelity import (INCEPTION_ENV, INCEPTION_FILE, FeatureExtractor, MetricSettings, image_metrics,
                                 reference_statistics, resolve_inception_weights)
from arvis.eval.images import UInt8Images, to_uint8_chw
from arvis.sample import save_npz

NUM = 20
SETTINGS = MetricSettings(isc_splits=2, kid_subsets=5, kid_subset_size=10, batch_size=10)


def glyphs(seed: int) -> torch.Tensor:
    images, _ = GlyphDataset(NUM, image_size=32, seed=seed).tensors()
    return to_uint8_chw(images)


@pytest.fixture(scope="module")
def extractor(inception_weights):
    return FeatureExtractor(["fid", "isc", "kid", "prc"], weights_path=inception_weights, device="cpu")


@pytest.mark.slow
def test_metrics_equal_torch_fidelity_calculate_metrics(extractor, inception_weights):
    fake, real = glyphs(1), glyphs(2)
    ours = image_metrics(fake, real, metrics=["fid", "isc", "kid", "prc"], extractor=extractor, settings=SETTINGS)
    theirs = torch_fidelity.calculate_metrics(
        input1=UInt8Images(fake), input2=UInt8Images(real), cuda=False, fid=True, isc=True, kid=True, prc=True,
        feature_extractor="inception-v3-compat", feature_layer_prc="2048",
        feature_extractor_weights_path=str(inception_weights), isc_splits=2, kid_subsets=5, kid_subset_size=10,
        batch_size=10, cache=False, save_cpu_ram=True, verbose=False)
    assert set(ours["metrics"]) == set(theirs)
    for name, value in theirs.items():
        # FID: 20 images give singular 2048-d covariances; torch-fidelity's eigvals(sigma1 sigma2) sums square
        # roots of rounding-level eigenvalues (2e-6 to 7e-6 relative for 20 to 32 images), which arvis drops
        # (exact to 1e-12, see test_frechet.py). IS, KID and PRC are torch-fidelity's own functions: identical.
        tolerance = 5e-5 * abs(value) if name == torch_fidelity.KEY_METRIC_FID else 0.0
        assert ours["metrics"][name] == pytest.approx(value, abs=tolerance), name
    protocol = ours["protocol"]
    assert protocol["num_fake"] == protocol["num_real"] == NUM and protocol["device"] == "cpu"
    assert protocol["weights_file"] == str(inception_weights) and len(protocol["weights_sha256"]) == 64
    assert protocol["settings"]["kid_subset_size"] == 10 and "299" in protocol["resize"]


@pytest.mark.slow
def test_fid_orders_identical_and_perturbed_sets(extractor):
    real = glyphs(3)
    same = image_metrics(real, real, extractor=extractor, settings=SETTINGS)["metrics"]["frechet_inception_distance"]
    darker = (real.float() * 0.6).round().to(torch.uint8)
    moved = image_metrics(darker, real, extractor=extractor, settings=SETTINGS)["metrics"]["frechet_inception_distance"]
    assert abs(same) < 1e-6 < moved


@pytest.mark.slow
def test_reference_features_are_cached_and_statistics_files_serve_fid(extractor, tmp_path, monkeypatch):
    fake, real = glyphs(4), glyphs(5)
    real_npz = tmp_path / "real.npz"
    save_npz(real_npz, arr_0=real.permute(0, 2, 3, 1).numpy())
    first = image_metrics(fake, real_npz, extractor=extractor, settings=SETTINGS, cache_dir=tmp_path / "cache")
    assert len(list((tmp_path / "cache").glob("features-*.safetensors"))) == 1

    calls = []
    original = FeatureExtractor.network.fget
    monkeypatch.setattr(FeatureExtractor, "network", property(lambda self: calls.append(1) or original(self)))
    second = image_metrics(fake, real_npz, extractor=extractor, settings=SETTINGS, cache_dir=tmp_path / "cache")
    assert second["metrics"] == first["metrics"] and len(calls) == 1  # only the fake set was extracted
    monkeypatch.undo()

    stats_path = tmp_path / "stats.npz"
    protocol = reference_statistics(real_npz, stats_path, extractor=extractor, batch_size=10)
    assert protocol["num_images"] == NUM
    from_stats = image_metrics(fake, stats_path, extractor=extractor, settings=SETTINGS)
    assert from_stats["metrics"]["frechet_inception_distance"] == pytest.approx(
        first["metrics"]["frechet_inception_distance"], rel=1e-9)
    assert from_stats["protocol"]["num_real"] == NUM
    with pytest.raises(ValueError, match="FID alone"):
        image_metrics(fake, stats_path, metrics=["fid", "kid"], extractor=extractor, settings=SETTINGS)
    with pytest.raises(ValueError, match="reference statistics"):
        image_metrics(stats_path, real_npz, extractor=extractor, settings=SETTINGS)


def test_statistics_of_other_weights_are_refused(extractor, tmp_path):
    stats = tmp_path / "other.npz"
    save_npz(stats, mu=np.zeros(2048), sigma=np.eye(2048),
             protocol=np.array(json.dumps({"feature_extractor": "inception-v3-compat", "weights_sha256": "0" * 64})))
    with pytest.raises(ValueError, match="recompute it"):
        image_metrics(glyphs(6), stats, extractor=extractor, settings=SETTINGS)


def test_missing_inception_weights_name_the_file(tmp_path, monkeypatch):
    monkeypatch.delenv(INCEPTION_ENV, raising=False)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(FileNotFoundError, match=f"(?s){INCEPTION_FILE}.*{INCEPTION_ENV}.*hub"):
        resolve_inception_weights(None)
    with pytest.raises(FileNotFoundError, match="absent.pth"):
        resolve_inception_weights(tmp_path / "absent.pth")
    monkeypatch.setenv(INCEPTION_ENV, str(tmp_path / "env.pth"))
    with pytest.raises(FileNotFoundError, match="env.pth"):
        resolve_inception_weights(None)
    (tmp_path / "env.pth").write_bytes(b"")
    assert resolve_inception_weights(None) == tmp_path / "env.pth"


def test_bad_requests_are_refused_before_extraction(extractor):
    images = glyphs(7)
    with pytest.raises(ValueError, match="unknown metric"):
        FeatureExtractor(["fvd"], weights_path=extractor.weights_path)
    with pytest.raises(ValueError, match="pass the reference images"):
        image_metrics(images, None, metrics=["fid"], extractor=extractor)
    with pytest.raises(ValueError, match="kid_subset_size 1000 exceeds"):
        image_metrics(images, images, metrics=["kid"], extractor=extractor)


def test_corrupt_weights_file_is_a_clear_error(tmp_path):
    corrupt = tmp_path / INCEPTION_FILE
    corrupt.write_bytes(b"not a checkpoint")
    extractor = FeatureExtractor(["isc"], weights_path=corrupt, device="cpu")
    with pytest.raises(ValueError, match=f"cannot load .*{INCEPTION_FILE}"):
        image_metrics(glyphs(8), metrics=["isc"], extractor=extractor, settings=SETTINGS)


@pytest.mark.parametrize("metric, fake_count, message", [
    ("isc", 1, "needs at least one image per part"),
    ("fid", 1, "FID needs at least 2 images per set"),
    ("prc", 3, "needs more than 3 images per set"),
    ("kid", 5, "kid_subset_size 10 exceeds the smaller set"),
])
def test_sets_too_small_for_a_metric_are_refused_not_nan(extractor, metric, fake_count, message):
    with pytest.raises(ValueError, match=message):
        image_metrics(glyphs(1)[:fake_count], glyphs(2), metrics=[metric], extractor=extractor, settings=SETTINGS)


def test_eval_isc_of_one_image_is_an_error_not_nan(inception_weights, tmp_path, capsys):
    from arvis.cli import main

    save_npz(tmp_path / "one.npz", arr_0=glyphs(1)[:1].permute(0, 2, 3, 1).numpy())
    assert main(["eval", "isc", "--fake", str(tmp_path / "one.npz"), "--weights", str(inception_weights),
                 "--cache-dir", "none"]) == 2
    assert "needs at least one image per part" in capsys.readouterr().err


class Payload:
    """Unpickling this runs code (what a crafted weights file would do)."""

    def __init__(self, marker) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('ran')",)


def test_a_weights_file_that_would_run_code_is_refused_unrun(inception_weights, tmp_path):
    state = torch.load(inception_weights, weights_only=True)
    planted = tmp_path / INCEPTION_FILE
    torch.save({**state, "extra": Payload(tmp_path / "pwned")}, planted)
    extractor = FeatureExtractor(["isc"], weights_path=planted, device="cpu")
    with pytest.raises(ValueError, match=f"cannot load the inception-v3-compat weights from .*{INCEPTION_FILE}.*"
                                         "weights_only=True"):
        image_metrics(glyphs(8), metrics=["isc"], extractor=extractor, settings=SETTINGS)
    assert not (tmp_path / "pwned").exists()
    torch.save(Payload(tmp_path / "pwned"), planted)  # the whole file a payload
    with pytest.raises(ValueError, match="weights_only=True"):
        _ = FeatureExtractor(["isc"], weights_path=planted, device="cpu").network
    assert not (tmp_path / "pwned").exists()


def test_a_synthetic_state_dict_gives_torch_fidelitys_network(inception_weights):
    network = FeatureExtractor(["fid"], weights_path=inception_weights, device="cpu").network
    state = torch.load(inception_weights, weights_only=True)
    for name, tensor in network.state_dict().items():
        assert torch.equal(tensor, state[name].to(tensor.dtype)), name
    with pytest.raises(ValueError, match="not offered"):
        FeatureExtractor(["fid"], name="clip-vit-b-32", weights_path=inception_weights)
