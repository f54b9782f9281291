"""Exponential moving average of model weights, used for sampling and for the saved model."""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn


class EMA:
    """Keeps fp32 shadow copies of trainable parameters: shadow ← decay·shadow + (1 − decay)·param.

    Has ``state_dict`` / ``load_state_dict`` so the training loop checkpoints it (:mod:`arvis.train.state`).
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.shadow = {name: p.detach().float().clone() for name, p in model.named_parameters() if p.requires_grad}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for name, param in model.named_parameters():
            if name in self.shadow:
                self.shadow[name].lerp_(param.detach().float(), 1.0 - self.decay)

    @contextlib.contextmanager
    @torch.no_grad()
    def applied(self, model: nn.Module) -> Iterator[nn.Module]:
        """Temporarily loads the averaged weights into ``model`` (restored on exit)."""
        saved = {name: p.detach().clone() for name, p in model.named_parameters() if name in self.shadow}
        self.copy_to(model)
        try:
            yield model
        finally:
            for name, param in model.named_parameters():
                if name in saved:
                    param.copy_(saved[name])

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        for name, param in model.named_parameters():
            if name in self.shadow:
                param.copy_(self.shadow[name].to(param.dtype))

    def state_dict(self) -> dict:
        return {"decay": self.decay, "shadow": self.shadow}

    def load_state_dict(self, state: dict) -> None:
        """Copies a saved state into the shadow tensors, which keep their device (a checkpoint is read on the CPU)."""
        missing, unexpected = set(self.shadow) - set(state["shadow"]), set(state["shadow"]) - set(self.shadow)
        if missing or unexpected:
            raise ValueError(f"EMA state does not match the model: lacks {sorted(missing)[:5]}, "
                             f"has extra {sorted(unexpected)[:5]}")
        self.decay = float(state["decay"])
        with torch.no_grad():
            for name, tensor in state["shadow"].items():
                self.shadow[name].copy_(tensor)
