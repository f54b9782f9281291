"""Orthus's stages 2 and 3 on a discrete interleaved pipeline: Orthus-base (the soft input and diffusion head
trained on image reconstruction), then the unified fine-tune (text cross-entropy + λ · diffusion loss)."""

from arvis.posttrain.orthus.method import Orthus, OrthusMethodConfig

__all__ = ["Orthus", "OrthusMethodConfig"]
