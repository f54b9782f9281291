"""Quantizers: continuous latents -> discrete codes with straight-through gradients."""

from arvis.quantizers.vq import QuantizerOutput, VectorQuantizer, entropy_loss

__all__ = ["QuantizerOutput", "VectorQuantizer", "entropy_loss"]
