"""Quantizers: continuous latents -> discrete codes with straight-through gradients."""

from arvis.quantizers.stochastic import StochasticVectorQuantizer
from arvis.quantizers.vq import QuantizerOutput, VectorQuantizer, entropy_loss

__all__ = ["QuantizerOutput", "StochasticVectorQuantizer", "VectorQuantizer", "entropy_loss"]
