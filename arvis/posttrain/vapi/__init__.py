"""VA-π: pixel-aware policy alignment of AR generators, with the tokenizer's reconstruction as reward (the
``vapi`` post-training method, :mod:`arvis.posttrain.vapi.method`; its objective, :mod:`.objective`)."""

from arvis.posttrain.vapi.method import VAPi, VAPiConfig

__all__ = ["VAPi", "VAPiConfig"]
