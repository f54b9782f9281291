"""SAR: self-autoregressive refinement of next-scale generators (stagger-scale rollout, student-forcing loss)."""

from arvis.posttrain.sar.method import SAR, SARConfig

__all__ = ["SAR", "SARConfig"]
