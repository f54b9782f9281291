"""Loading components: parameters built on the meta device, filled with ``assign=True``, shared ones kept tied."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_model
from torch import nn

from arvis.modeling import load_state_strict, load_weights, parameters_on_meta


class Tied(nn.Module):
    """An input table shared with the output layer (weight tying), plus a buffer that is not saved."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(5, 3)
        self.head = nn.Linear(3, 5, bias=False)
        self.head.weight = self.embed.weight
        self.register_buffer("table", torch.arange(4.0), persistent=False)


def test_assign_loading_keeps_shared_parameters_tied_and_unsaved_buffers_built(tmp_path):
    torch.manual_seed(0)
    original = Tied()
    save_model(original, str(tmp_path / "model.safetensors"))  # the shared tensor is written once
    with parameters_on_meta():
        loaded = Tied()
    assert loaded.embed.weight.is_meta and not loaded.table.is_meta
    load_state_strict(loaded, load_weights(tmp_path / "model.safetensors"), tmp_path, assign=True)
    assert loaded.head.weight is loaded.embed.weight and not loaded.embed.weight.is_meta
    assert torch.equal(loaded.embed.weight, original.embed.weight) and torch.equal(loaded.table, torch.arange(4.0))
    assert loaded.embed.weight.requires_grad


def test_assign_loading_still_names_what_does_not_fit(tmp_path):
    save_model(nn.Linear(3, 4), str(tmp_path / "model.safetensors"))
    with parameters_on_meta():
        other = nn.Linear(3, 5)
    with pytest.raises(ValueError, match=r"wrong shapes \['bias: file \(4,\) vs model \(5,\)', "
                                         r"'weight: file \(4, 3\) vs model \(5, 3\)'\]"):
        load_state_strict(other, load_weights(tmp_path / "model.safetensors"), tmp_path, assign=True)


def test_meta_construction_is_scoped_to_the_block():
    with parameters_on_meta():
        inside = nn.Linear(2, 2)
    assert inside.weight.is_meta and not nn.Linear(2, 2).weight.is_meta
