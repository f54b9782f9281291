"""The shipped glyph classifier and the fd-glyphs / glyph-accuracy metrics built on it."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from arvis.data.glyphs import GlyphDataset
from arvis.eval.frechet import frechet_distance, gaussian_stats
from arvis.eval import glyph_classifier as glyph_classifier_module
from arvis.eval.glyph_classifier import (
    METADATA_KEY,
    WEIGHTS_PATH,
    GlyphClassifier,
    GlyphClassifierConfig,
    load_glyph_classifier,
)
from arvis.eval.glyph_metrics import glyph_features, glyph_metrics

HELD_OUT_SEED = 4242  # differs from every training and test seed of the recipe


def _uint8(images: torch.Tensor) -> torch.Tensor:
    return (images.clamp(0, 1) * 255).round().to(torch.uint8)


def _glyphs(num: int, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = GlyphDataset(num, image_size=size, seed=seed).tensors()
    return _uint8(images), labels


@pytest.fixture(scope="module")
def classifier() -> GlyphClassifier:
    return load_glyph_classifier()


@pytest.fixture(scope="module")
def real() -> tuple[torch.Tensor, torch.Tensor]:
    return _glyphs(400, 32, HELD_OUT_SEED)


@pytest.mark.parametrize("size", [32, 16])
def test_shipped_classifier_recognises_held_out_glyphs(classifier, size):
    images, labels = _glyphs(200, size, HELD_OUT_SEED + size)
    _, logits = glyph_features(images, classifier)
    accuracy = (logits.argmax(dim=1) == labels).float().mean().item()
    assert accuracy >= 0.95, f"held-out accuracy at {size} px is {accuracy:.3f}"


def _fd(features: torch.Tensor, reference: torch.Tensor) -> float:
    return frechet_distance(*gaussian_stats(reference), *gaussian_stats(features))


def test_fd_glyphs_separates_matching_from_wrong_distributions(classifier, real):
    real_images, _ = real
    real_features, _ = glyph_features(real_images, classifier)
    other_images, other_labels = _glyphs(400, 32, HELD_OUT_SEED + 1)
    other_features, _ = glyph_features(other_images, classifier)
    same = _fd(other_features, real_features)
    wrong_classes = _fd(other_features[other_labels < 2], real_features)  # a collapse onto disks and rings

    pixels = other_images[:200].float() / 255
    blurred = F.interpolate(F.interpolate(pixels, size=8, mode="area"), size=32, mode="bilinear", align_corners=False)
    noise = torch.randn(pixels.shape, generator=torch.Generator().manual_seed(0))
    degraded = _fd(glyph_features(_uint8(blurred + 0.1 * noise), classifier)[0], real_features)
    uniform_noise = _uint8(torch.rand(pixels.shape, generator=torch.Generator().manual_seed(1)))
    pure_noise = _fd(glyph_features(uniform_noise, classifier)[0], real_features)

    assert glyph_metrics(other_images, None, real_images, classifier)["fd_glyphs"] == pytest.approx(same)
    assert 0 <= same < 0.2 * wrong_classes, (same, wrong_classes)
    assert same < 0.2 * degraded, (same, degraded)
    assert same < 0.2 * pure_noise, (same, pure_noise)


def test_glyph_accuracy_of_right_and_shuffled_labels(classifier, real):
    fake_images, fake_labels = _glyphs(200, 16, HELD_OUT_SEED + 2)
    real_images = real[0][:100]
    right = glyph_metrics(fake_images, fake_labels, real_images, classifier)
    shuffled_labels = (fake_labels + 1 + torch.arange(len(fake_labels)) % 9) % 10  # never the true class
    wrong = glyph_metrics(fake_images, shuffled_labels, real_images, classifier)
    assert right["glyph_accuracy"] >= 0.95
    assert wrong["glyph_accuracy"] <= 0.05
    assert right["fd_glyphs"] == wrong["fd_glyphs"]  # the labels only enter the accuracy


def test_protocol_names_the_extractor_and_the_shipped_file(classifier, real):
    real_images, _ = real
    result = glyph_metrics(real_images[:50], None, real_images[50:150], classifier)
    protocol = result["protocol"]
    assert result["glyph_accuracy"] is None and not any("fid" in key for key in result)
    assert protocol["metric"] == "fd-glyphs" and protocol["extractor"] == "arvis-glyph-classifier"
    assert protocol["weights_sha256"] == hashlib.sha256(WEIGHTS_PATH.read_bytes()).hexdigest()
    assert (protocol["feature_dim"], protocol["num_real"], protocol["num_fake"]) == (128, 100, 50)
    assert "bilinear" in protocol["resize"]


def test_save_load_round_trip_gives_identical_outputs(tmp_path):
    config = GlyphClassifierConfig(widths=(8, 16), num_groups=4)
    generator = torch.Generator().manual_seed(0)
    model = GlyphClassifier(config)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)
    path = model.save(tmp_path / "classifier.safetensors")
    loaded = load_glyph_classifier(path)
    assert loaded.config == config and not loaded.training
    images = torch.randint(0, 256, (4, 3, 24, 20), dtype=torch.uint8, generator=generator)
    for expected, actual in zip(model.features_and_logits(images), loaded.features_and_logits(images), strict=True):
        assert torch.equal(expected, actual)
    assert loaded.weights_sha256() == hashlib.sha256(path.read_bytes()).hexdigest()


def test_loading_is_strict(tmp_path):
    model = GlyphClassifier(GlyphClassifierConfig(widths=(8, 16), num_groups=4))
    state = {name: tensor.contiguous() for name, tensor in model.state_dict().items()}
    header = {"format_version": 1, "class_names": list(model.class_names), "config": model.config.to_dict()}
    del state["head.bias"]
    save_file(state, tmp_path / "partial.safetensors", metadata={METADATA_KEY: json.dumps(header)})
    with pytest.raises(ValueError, match="head.bias"):
        GlyphClassifier.load(tmp_path / "partial.safetensors")
    save_file(state, tmp_path / "bare.safetensors")
    with pytest.raises(ValueError, match=METADATA_KEY):
        GlyphClassifier.load(tmp_path / "bare.safetensors")


def test_missing_weights_file_names_it_and_the_training_command(tmp_path, monkeypatch):
    missing = tmp_path / "weights" / "glyph_classifier.safetensors"
    with pytest.raises(FileNotFoundError, match="glyph_classifier.safetensors"):
        load_glyph_classifier(missing)
    monkeypatch.setattr(glyph_classifier_module, "WEIGHTS_PATH", missing)
    with pytest.raises(FileNotFoundError, match=r"python -m arvis\.eval\.train_glyph_classifier") as error:
        load_glyph_classifier()
    assert str(missing) in str(error.value)


def test_bad_inputs_raise_clear_errors(classifier, real):
    real_images, real_labels = real
    with pytest.raises(ValueError, match="uint8"):
        classifier.logits(real_images.float() / 255)
    with pytest.raises(ValueError, match=r"\(b, 3, h, w\)"):
        classifier.features(real_images[:, :1])
    with pytest.raises(ValueError, match=r"\(b, 3, h, w\)"):
        glyph_features(real_images[0], classifier)
    with pytest.raises(ValueError, match="at least 8"):
        classifier.logits(real_images[:, :, :4, :4])
    with pytest.raises(ValueError, match="fake_labels must have shape"):
        glyph_metrics(real_images, real_labels[:10], real_images, classifier)
    with pytest.raises(ValueError, match="class ids"):
        glyph_metrics(real_images, real_labels + 10, real_images, classifier)
    with pytest.raises(ValueError, match="at least 2"):
        glyph_metrics(real_images[:1], None, real_images, classifier)
