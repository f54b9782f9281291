"""arvis's linear layer: F.linear's result by a faster product for a few float32 rows on the CPU."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from arvis.generators.base import GENERATORS, Generator
from arvis.modeling import aligned
from arvis.nn.linear import MAX_STREAMING_ROWS, Linear, linear
from arvis.testing import randomize_parameters_


@pytest.mark.parametrize("rows", [1, 2, 4, 33, MAX_STREAMING_ROWS, MAX_STREAMING_ROWS + 1])
@pytest.mark.parametrize("bias", [False, True])
def test_linear_is_f_linear_up_to_summation_order(rows, bias):
    torch.manual_seed(0)
    layer = Linear(48, 80, bias=bias)
    x = torch.randn(rows, 1, 48, requires_grad=True)
    out = layer(x)
    expected = F.linear(x, layer.weight, layer.bias)
    assert out.shape == (rows, 1, 80) and out.is_contiguous()
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=1e-5)
    if 1 < rows <= MAX_STREAMING_ROWS:  # the weight-streaming product is the one computed
        product = layer.weight @ x.detach().reshape(rows, 48).t()
        if bias:
            product = product + layer.bias.detach()[:, None]
        torch.testing.assert_close(out.detach().reshape(rows, 80), product.t(), atol=1e-6, rtol=0)
    (gradient,) = torch.autograd.grad(out.sum(), x)
    torch.testing.assert_close(gradient, torch.autograd.grad(expected.sum(), x)[0], atol=1e-6, rtol=1e-5)


def test_other_dtypes_keep_f_linear_exactly():
    torch.manual_seed(0)
    weight, x = torch.randn(80, 48, dtype=torch.bfloat16), torch.randn(4, 48, dtype=torch.bfloat16)
    assert torch.equal(linear(x, weight), F.linear(x, weight))


def test_aligned_copies_only_unaligned_tensors():
    storage = torch.arange(100, dtype=torch.float32)
    view = storage[1:65]
    assert view.data_ptr() % 64 and aligned(view).data_ptr() % 64 == 0 and torch.equal(aligned(view), view)
    assert aligned(storage) is storage


def test_a_loaded_generator_computes_exactly_what_the_saved_one_did(tmp_path):
    """safetensors hands out weights at file offsets; unaligned, the few-row products would sum in another order."""
    torch.manual_seed(0)
    model = randomize_parameters_(GENERATORS.build("raster-tiny")).eval()
    model.save_pretrained(tmp_path / "g")
    loaded = Generator.from_pretrained(tmp_path / "g")
    assert all(parameter.data_ptr() % 64 == 0 for parameter in loaded.parameters())
    labels = torch.tensor([0, 1, 2])
    with torch.inference_mode():
        steps = []
        for generator in (model, loaded):
            cache = generator.new_cache(3)
            steps.append(generator.step(None, labels, cache))
    assert torch.equal(steps[0], steps[1])
