"""Tests of the embedded glyph dataset: determinism, balance, ranges and learnability."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest
import torch

from arvis.data import GLYPH_CLASSES, GlyphDataset, GlyphParams, render_glyph, render_glyphs, sample_glyph_params

WHITE_ON_BLACK = {"foreground": (1.0, 1.0, 1.0), "background": (0.0, 0.0, 0.0)}


def _foreground_masks(dataset: GlyphDataset) -> tuple[np.ndarray, np.ndarray]:
    """(n, h, w) coverage of each sample's shape, and (n,) labels."""
    labels = [dataset.label(index) for index in range(len(dataset))]
    params = [dataclasses.replace(dataset.params(index), **WHITE_ON_BLACK) for index in range(len(dataset))]
    return render_glyphs(labels, dataset.image_size, params)[..., 0], np.array(labels)


def test_at_least_ten_distinctly_named_classes():
    assert len(GLYPH_CLASSES) >= 10
    assert len(set(GLYPH_CLASSES)) == len(GLYPH_CLASSES)


def test_item_shape_dtype_and_range():
    dataset = GlyphDataset(12, image_size=16, seed=0)
    image, label = dataset[5]
    assert image.shape == (3, 16, 16) and image.dtype == torch.float32
    assert isinstance(label, int) and label == 5
    assert 0.0 <= image.min() and image.max() <= 1.0
    assert dataset.class_names == GLYPH_CLASSES[:10]


def test_same_seed_and_index_give_identical_pixels_whatever_the_dataset_length():
    first = GlyphDataset(20, image_size=16, seed=3)
    second = GlyphDataset(200, image_size=16, seed=3)
    for index in (0, 7, 19):
        assert torch.equal(first[index][0], second[index][0])
    assert torch.equal(first[-1][0], first[19][0])


def test_different_seeds_differ():
    first, second = GlyphDataset(10, image_size=16, seed=0), GlyphDataset(10, image_size=16, seed=1)
    for index in range(10):
        assert not torch.equal(first[index][0], second[index][0])


def test_tensors_matches_items_and_is_balanced():
    dataset = GlyphDataset(30, image_size=16, seed=2)
    images, labels = dataset.tensors()
    assert images.shape == (30, 3, 16, 16) and images.dtype == torch.float32
    assert labels.dtype == torch.long
    assert torch.equal(labels, torch.arange(30) % 10)
    assert torch.bincount(labels).tolist() == [3] * 10
    for index in (0, 13, 29):
        image, label = dataset[index]
        assert torch.equal(images[index], image) and labels[index].item() == label


def test_fewer_classes_label_by_modulo():
    dataset = GlyphDataset(10, image_size=8, num_classes=3)
    assert [dataset[index][1] for index in range(10)] == [0, 1, 2, 0, 1, 2, 0, 1, 2, 0]
    assert dataset.class_names == GLYPH_CLASSES[:3]


def test_sample_glyph_params_is_deterministic_and_in_range():
    first = sample_glyph_params(4, np.random.default_rng([5, 6]))
    assert first == sample_glyph_params(4, np.random.default_rng([5, 6]))
    for index in range(200):
        params = sample_glyph_params(index % 10, np.random.default_rng([0, index]))
        assert 0.45 <= params.scale <= 0.75 and abs(params.rotation_degrees) <= 15.0
        assert all(abs(coordinate) < 1.0 for coordinate in params.centre)
        assert max(params.foreground) >= 0.85  # bright


def test_glyphs_stay_inside_the_image():
    masks, _ = _foreground_masks(GlyphDataset(300, image_size=64, seed=4))
    border = np.concatenate([masks[:, 0], masks[:, -1], masks[:, :, 0], masks[:, :, -1]], axis=1)
    assert border.max() == 0.0
    assert masks.max(axis=(1, 2)).min() == 1.0  # every glyph has fully covered pixels


def test_rendering_is_resolution_independent():
    dataset = GlyphDataset(10, image_size=16, seed=0)
    for index in range(10):
        label, params = dataset.label(index), dataset.params(index)
        large = render_glyph(label, 64, params).reshape(16, 4, 16, 4, 3).mean(axis=(1, 3))
        assert np.abs(large - render_glyph(label, 16, params)).mean() < 0.02


def test_class_shapes_differ_pairwise():
    """Canonical masks and masks averaged over random samples differ between every pair of classes."""
    canonical = GlyphParams(centre=(0.0, 0.0), scale=0.6, rotation_degrees=0.0, **WHITE_ON_BLACK)
    masks = np.stack([render_glyph(label, 16, canonical)[..., 0] for label in range(len(GLYPH_CLASSES))])
    average_masks, labels = _foreground_masks(GlyphDataset(1000, image_size=16, seed=1))
    means = np.stack([average_masks[labels == label].mean(axis=0) for label in range(len(GLYPH_CLASSES))])
    for first, second in itertools.combinations(range(len(GLYPH_CLASSES)), 2):
        names = (GLYPH_CLASSES[first], GLYPH_CLASSES[second])
        assert np.abs(masks[first] - masks[second]).mean() > 0.03, names
        assert np.abs(means[first] - means[second]).mean() > 0.015, names


def test_nearest_centroid_on_normalised_grayscale_beats_chance():
    """Chance is 0.10; a nearest-centroid classifier reaches about 0.4, so the classes are learnable."""
    def features(images: torch.Tensor) -> torch.Tensor:
        gray = torch.einsum("nchw,c->nhw", images, torch.tensor([0.299, 0.587, 0.114])).flatten(1)
        return (gray - gray.mean(1, keepdim=True)) / gray.std(1, keepdim=True)

    train_images, train_labels = GlyphDataset(2000, image_size=16, seed=0).tensors()
    test_images, test_labels = GlyphDataset(500, image_size=16, seed=1).tensors()
    train_features = features(train_images)
    centroids = torch.stack([train_features[train_labels == label].mean(0) for label in range(10)])
    predictions = torch.cdist(features(test_images), centroids).argmin(1)
    assert (predictions == test_labels).float().mean().item() > 0.3


def test_foreground_contrasts_with_background():
    for index in range(100):
        params = sample_glyph_params(0, np.random.default_rng([9, index]))
        luma = [0.299 * r + 0.587 * g + 0.114 * b for r, g, b in (params.foreground, params.background)]
        assert luma[1] <= 0.41 * luma[0]


@pytest.mark.parametrize(
    ("arguments", "name"),
    [
        ({"num_samples": 0}, "num_samples"),
        ({"num_samples": 4, "image_size": 4}, "image_size"),
        ({"num_samples": 4, "image_size": 512}, "image_size"),
        ({"num_samples": 4, "num_classes": 1}, "num_classes"),
        ({"num_samples": 4, "num_classes": len(GLYPH_CLASSES) + 1}, "num_classes"),
        ({"num_samples": 4, "seed": -1}, "seed"),
    ],
)
def test_invalid_arguments_name_the_argument(arguments, name):
    with pytest.raises(ValueError, match=name):
        GlyphDataset(**arguments)


def test_invalid_render_inputs():
    params = sample_glyph_params(0, np.random.default_rng(0))
    with pytest.raises(ValueError, match="label"):
        render_glyph(len(GLYPH_CLASSES), 16, params)
    with pytest.raises(ValueError, match="scale"):
        dataclasses.replace(params, scale=0.0)
    with pytest.raises(ValueError, match="foreground"):
        dataclasses.replace(params, foreground=(2.0, 0.0, 0.0))
    with pytest.raises(IndexError):
        GlyphDataset(3)[3]
