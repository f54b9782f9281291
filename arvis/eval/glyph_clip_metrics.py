"""Offline metrics for clips of the built-in moving glyphs: "fd-glyph-clips" and clip glyph accuracy.

The shipped glyph classifier (:mod:`arvis.eval.glyph_classifier`) embeds every frame (d = 128
pre-logit features). A clip's feature is [mean over frames of the frame features ; mean over frames
of |f(t+1) - f(t)|] (2d): what is shown and how much it changes from frame to frame. fd-glyph-clips
is the Fréchet distance (:mod:`arvis.eval.frechet`, sample covariance) between Gaussians fitted to the
clip features of real and generated clips. It is a small built-in stand-in for FVD on glyph clips,
**not** FVD (no I3D network, which needs weights from the network; see :mod:`arvis.eval.fvd`), and
its values are comparable only with themselves. Clip accuracy: the argmax of the frame-averaged
logits is the requested class.

Shapes: n clips, t frames, h w frame size, d features.
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import Tensor

from arvis.eval.frechet import frechet_distance, gaussian_stats
from arvis.eval.glyph_classifier import EXTRACTOR_NAME, GlyphClassifier, load_glyph_classifier
from arvis.eval.glyph_metrics import check_fake_labels, glyph_features

METRIC_NAME = "fd-glyph-clips"


def clip_features(clips: Tensor, classifier: GlyphClassifier, batch_size: int = 256) -> tuple[Tensor, Tensor]:
    """uint8 clips (n, 3, t, h, w) -> clip features (n, 2d) and frame-averaged logits (n, c)."""
    if clips.ndim != 5 or clips.shape[1] != 3 or clips.dtype != torch.uint8 or clips.shape[2] < 2:
        raise ValueError(f"expected uint8 clips of shape (n, 3, t >= 2, h, w), got {clips.dtype} {tuple(clips.shape)}")
    frames = rearrange(clips, "n c t h w -> (n t) c h w")
    features, logits = glyph_features(frames, classifier, batch_size)
    features = rearrange(features, "(n t) d -> n t d", n=len(clips))
    logits = rearrange(logits, "(n t) c -> n t c", n=len(clips))
    motion = (features[:, 1:] - features[:, :-1]).abs().mean(dim=1)
    return torch.cat([features.mean(dim=1), motion], dim=1), logits.mean(dim=1)


def glyph_clip_metrics(fake_clips: Tensor, fake_labels: Tensor | None, real_clips: Tensor,
                       classifier: GlyphClassifier | None = None, *, batch_size: int = 256) -> dict:
    """fd-glyph-clips between real and generated clips, and the clip accuracy of the generated ones.

    Args:
        fake_clips, real_clips: uint8 (n, 3, t, h, w), at least 2 each (any frame count and size).
        fake_labels: requested classes (n_fake,) or None (then ``clip_accuracy`` is None).
        classifier: the frame feature extractor; None loads the shipped one on the CPU.
    """
    classifier = load_glyph_classifier() if classifier is None else classifier
    for name, clips in (("fake_clips", fake_clips), ("real_clips", real_clips)):
        if len(clips) < 2:
            raise ValueError(f"{name} needs at least 2 clips for a covariance, got {len(clips)}")
    check_fake_labels(fake_labels, len(fake_clips), classifier.config.num_classes)
    fake_features, fake_logits = clip_features(fake_clips, classifier, batch_size)
    real_features, _ = clip_features(real_clips, classifier, batch_size)
    accuracy = None
    if fake_labels is not None:
        accuracy = (fake_logits.argmax(dim=1) == fake_labels.cpu().long()).double().mean().item()
    return {
        "fd_glyph_clips": frechet_distance(*gaussian_stats(real_features), *gaussian_stats(fake_features)),
        "clip_accuracy": accuracy,
        "protocol": {
            "metric": METRIC_NAME,
            "extractor": EXTRACTOR_NAME,
            "weights_sha256": classifier.weights_sha256(),
            "clip_feature": "[mean_t f(t) ; mean_t |f(t+1) - f(t)|] of pre-logit frame features",
            "feature_dim": 2 * classifier.config.feature_dim,
            "num_real": len(real_clips),
            "num_fake": len(fake_clips),
            "covariance": "sample (n - 1)",
        },
    }
