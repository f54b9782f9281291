"""Offline metrics on the built-in glyph data: "fd-glyphs" and "glyph accuracy".

fd-glyphs is the Fréchet distance between Gaussians fitted to the pooled features
(pre-logits, d = 128) of the shipped glyph classifier (:mod:`arvis.eval.glyph_classifier`)
on real and generated images; it is computed by :mod:`arvis.eval.frechet` with the
sample covariance (divide by n - 1). It is *not* FID and its values are not comparable
with FID values: the extractor is a small CNN trained on glyph renders, not Inception-v3.
Glyph accuracy is the fraction of class-conditional samples that the classifier assigns
to the class they were requested for.

Shapes: n images, h w image size (any, resized to the classifier's 32 px), d features, c classes.
"""

from __future__ import annotations

import torch
from torch import Tensor

from arvis.eval.frechet import frechet_distance, gaussian_stats
from arvis.eval.glyph_classifier import EXTRACTOR_NAME, GlyphClassifier, check_uint8_images, load_glyph_classifier

METRIC_NAME = "fd-glyphs"


@torch.inference_mode()
def glyph_features(images: Tensor, classifier: GlyphClassifier, batch_size: int = 256) -> tuple[Tensor, Tensor]:
    """Runs the classifier over uint8 images (n, 3, h, w) in batches.

    Returns:
        features (n, d) and logits (n, c), float32 on the CPU.
    """
    check_uint8_images(images)
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    features, logits = [], []
    for start in range(0, len(images), batch_size):
        batch_features, batch_logits = classifier.features_and_logits(images[start:start + batch_size])
        features.append(batch_features.float().cpu())
        logits.append(batch_logits.float().cpu())
    return torch.cat(features), torch.cat(logits)


def check_fake_labels(fake_labels: Tensor | None, count: int, num_classes: int) -> None:
    """Raises ``ValueError`` unless ``fake_labels`` is None or ``count`` integer class ids in [0, num_classes)."""
    if fake_labels is None:
        return
    if not isinstance(fake_labels, Tensor) or fake_labels.dtype.is_floating_point or fake_labels.is_complex():
        raise ValueError(f"fake_labels must be an integer tensor (n_fake,) or None, got {fake_labels!r:.80}")
    if tuple(fake_labels.shape) != (count,):
        raise ValueError(f"fake_labels must have shape ({count},), one per fake sample, got {tuple(fake_labels.shape)}")
    if fake_labels.min() < 0 or fake_labels.max() >= num_classes:
        raise ValueError(f"fake_labels must be class ids in [0, {num_classes - 1}], got "
                         f"[{int(fake_labels.min())}, {int(fake_labels.max())}]")


def glyph_metrics(
    fake_images: Tensor, fake_labels: Tensor | None, real_images: Tensor,
    classifier: GlyphClassifier | None = None, *, batch_size: int = 256,
) -> dict:
    """fd-glyphs between real and generated glyphs, and the glyph accuracy of the generated ones.

    Args:
        fake_images: generated images, uint8 (n_fake, 3, h, w), n_fake >= 2.
        fake_labels: the class each generated image was requested for, integer (n_fake,),
            or None for unconditional samples (then ``glyph_accuracy`` is None).
        real_images: reference images, uint8 (n_real, 3, h', w'), n_real >= 2; any size.
        classifier: the feature extractor; None loads the shipped one on the CPU.
        batch_size: images per classifier call.

    Returns:
        ``{"fd_glyphs": float, "glyph_accuracy": float | None, "protocol": {...}}``; the
        protocol names the extractor, its weights' sha256 and everything else a reader
        needs to compare two numbers.
    """
    classifier = load_glyph_classifier() if classifier is None else classifier
    for name, images in (("fake_images", fake_images), ("real_images", real_images)):
        check_uint8_images(images)
        if len(images) < 2:
            raise ValueError(f"{name} needs at least 2 images for a covariance, got {len(images)}")
    num_classes = classifier.config.num_classes
    check_fake_labels(fake_labels, len(fake_images), num_classes)

    fake_features, fake_logits = glyph_features(fake_images, classifier, batch_size)
    real_features, _ = glyph_features(real_images, classifier, batch_size)
    fd = frechet_distance(*gaussian_stats(real_features), *gaussian_stats(fake_features))
    accuracy = None
    if fake_labels is not None:
        accuracy = (fake_logits.argmax(dim=1) == fake_labels.cpu().long()).double().mean().item()
    size = classifier.config.image_size
    return {
        "fd_glyphs": fd,
        "glyph_accuracy": accuracy,
        "protocol": {
            "metric": METRIC_NAME,
            "extractor": EXTRACTOR_NAME,
            "weights_sha256": classifier.weights_sha256(),
            "feature_layer": "global average pool (pre-logits)",
            "feature_dim": classifier.config.feature_dim,
            "num_classes": num_classes,
            "num_real": len(real_images),
            "num_fake": len(fake_images),
            "input": "uint8 RGB",
            "resize": f"bilinear, antialias, to {size}x{size} (none when already {size}x{size})",
            "covariance": "sample (n - 1)",
        },
    }
