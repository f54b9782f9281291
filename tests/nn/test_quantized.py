"""Weight-only int8 linear layers: per-channel codes, the int8 kernel for a few rows, refusals."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import arvis
from arvis.nn.quantized import INT8_KERNEL_MAX_ROWS, Int8Linear, quantize_int8_


def _layer(bias: bool = True) -> nn.Linear:
    torch.manual_seed(0)
    return nn.Linear(64, 48, bias=bias).to(torch.bfloat16)


@pytest.mark.parametrize("rows", [1, INT8_KERNEL_MAX_ROWS, INT8_KERNEL_MAX_ROWS + 1, 40])
@pytest.mark.parametrize("bias", [False, True])
def test_int8_linear_is_the_product_with_its_dequantized_weights(rows, bias):
    layer = _layer(bias)
    quantized = Int8Linear.from_linear(layer)
    assert quantized.codes.dtype == torch.int8 and quantized.codes.abs().max() == 127
    x = torch.randn(rows, 1, 64, dtype=torch.bfloat16)
    expected = F.linear(x.float(), quantized.dequantized().float(), None if layer.bias is None else layer.bias.float())
    out = quantized(x)
    assert out.shape == (rows, 1, 48) and out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), expected, atol=2e-2, rtol=2e-2)  # bf16 rounding of the product


def test_codes_reproduce_the_weights_to_half_a_step_per_channel():
    layer = _layer()
    quantized = Int8Linear.from_linear(layer)
    step = quantized.scales.float()[:, None]
    error = (quantized.codes.float() * step - layer.weight.float()).abs()
    assert (error <= 0.501 * step).all()


def test_quantizing_refuses_float32_and_the_result_refuses_other_dtypes():
    with pytest.raises(ValueError, match="bf16 or fp16"):
        Int8Linear.from_linear(nn.Linear(8, 8))
    quantized = Int8Linear.from_linear(_layer())
    with pytest.raises(ValueError, match="takes torch.bfloat16 inputs"):
        quantized(torch.randn(2, 64))


def test_an_int8_pipeline_samples_close_to_bf16_and_cannot_be_saved(tiny_pipeline, tmp_path):
    tiny_pipeline.save_pretrained(tmp_path / "p")
    with pytest.raises(ValueError, match="dtype=torch.bfloat16"):
        arvis.load(tmp_path / "p", quantize="int8")
    with pytest.raises(ValueError, match="quantize must be"):
        arvis.load(tmp_path / "p", dtype=torch.bfloat16, quantize="int4")
    bf16 = arvis.load(tmp_path / "p", dtype=torch.bfloat16)
    int8 = arvis.load(tmp_path / "p", dtype=torch.bfloat16, quantize="int8")
    assert not any(isinstance(m, nn.Linear) for m in int8.generator.modules())
    labels = torch.tensor([0, 1])
    with torch.inference_mode():
        logits = [p.generator.step(None, labels, p.generator.new_cache(2)).float() for p in (bf16, int8)]
    assert (logits[0] - logits[1]).abs().max() < 0.05 * logits[0].abs().max() + 1e-2
    images = arvis.generate(int8, [0, 1], output_type="pt", seed=0)
    assert images.shape[0] == 2 and torch.isfinite(images).all()
    with pytest.raises(ValueError, match="int8 weights, an inference form"):
        int8.generator.save_pretrained(tmp_path / "g")


def test_quantize_needs_linear_layers():
    with pytest.raises(ValueError, match="no linear layers"):
        quantize_int8_(nn.Sequential(nn.ReLU()))


@pytest.mark.parametrize("in_features", [8, 24, 100])
def test_input_widths_the_kernel_cannot_read_take_the_dequantized_product(in_features):
    """torch's int8 kernel reads 16 channels at a time unchecked: other widths gave 1e37s or crashed."""
    torch.manual_seed(0)
    quantized = Int8Linear.from_linear(nn.Linear(in_features, 32).to(torch.bfloat16))
    x = torch.randn(4, in_features, dtype=torch.bfloat16)
    expected = F.linear(x.float(), quantized.dequantized().float(), quantized.bias.float())
    torch.testing.assert_close(quantized(x).float(), expected, atol=2e-2, rtol=2e-2)


def test_a_non_contiguous_input_is_accepted():
    quantized = Int8Linear.from_linear(_layer())
    x = torch.randn(64, 3, dtype=torch.bfloat16).t()  # (3, 64), last dimension strided
    torch.testing.assert_close(quantized(x), quantized(x.contiguous()), atol=0, rtol=0)


def test_small_fp16_weights_keep_all_127_levels():
    torch.manual_seed(0)
    layer = nn.Linear(64, 16).to(torch.float16)
    with torch.no_grad():
        layer.weight.mul_(0.01)  # max |w| about 0.001: a scale below fp16's smallest normal number
        layer.weight[3] = 0.0
    quantized = Int8Linear.from_linear(layer)
    assert (quantized.codes.abs().amax(dim=1)[torch.arange(16) != 3] == 127).all()
    assert (quantized.codes[3] == 0).all()


def test_int8_is_refused_off_the_cpu(tiny_pipeline, tmp_path):
    tiny_pipeline.save_pretrained(tmp_path / "p")
    with pytest.raises(ValueError, match="CPU only"):
        arvis.load(tmp_path / "p", device="cuda", dtype=torch.bfloat16, quantize="int8")
    with pytest.raises(ValueError, match="CPU only"):
        quantize_int8_(nn.Sequential(nn.Linear(16, 16, device="meta", dtype=torch.bfloat16)))
