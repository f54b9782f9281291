"""Class conditioning with classifier-free-guidance label dropout."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class ClassEmbedding(nn.Module):
    """Embeds labels in [0, num_classes]; id ``num_classes`` is the null (unconditional) class.

    During training each label is replaced by the null class with probability
    ``dropout`` (0.1 in LlamaGen and VAR), which teaches the unconditional model used
    by classifier-free guidance. Like ``nn.Dropout``, the training-time draw uses torch's global
    RNG, which the training loop seeds; sampling never draws here (models sample in eval mode).
    """

    def __init__(self, num_classes: int, dim: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.dropout = dropout
        self.embedding = nn.Embedding(num_classes + 1, dim)

    def drop_labels(self, labels: Tensor) -> Tensor:
        """Replaces each label by the null class with probability ``dropout`` (training only)."""
        if not self.training or self.dropout <= 0:
            return labels
        drop = torch.rand(labels.shape, device=labels.device) < self.dropout
        return torch.where(drop, torch.full_like(labels, self.num_classes), labels)

    def embed(self, labels: Tensor) -> Tensor:
        """(b,) long -> (b, dim), without dropout (for a caller that dropped the labels itself)."""
        return self.embedding(labels)

    def forward(self, labels: Tensor) -> Tensor:
        """(b,) long -> (b, dim), the labels dropped first in training."""
        return self.embed(self.drop_labels(labels))
