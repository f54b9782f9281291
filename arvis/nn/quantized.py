"""Weight-only int8 linear layers for inference: a quarter of fp32's weight bytes for decoding steps that stream
their weights.

Each output channel of a weight matrix gets a symmetric scale, max|w| / 127 rounded to the activations' dtype, and
its int8 codes round(w / scale); activations stay in bf16 or fp16. With a few rows on the CPU the product runs in
torch's int8 weight kernel (``aten._weight_int8pack_mm``: about 1.4x faster than bf16's ``F.linear`` on GPT-B's
layer products with 4 rows here, and slower from 16 rows on, ``benchmarks/int8_products.py``); more rows, or
another device, multiply by the dequantised weights in the activations' dtype instead.

torchao's ``Int8WeightOnlyConfig`` was measured too (torchao 0.18 on torch 2.14): it runs but, with bf16
activations, spends 21 ms on those products against bf16's 16 ms (its tensor subclass adds a dispatch per call),
and with fp32 activations 133 ms; the kernel above, called directly, takes 12 ms.

A quantized model is an inference form: it cannot be saved (:func:`quantize_int8_` marks it so), and it is built
from a loaded float model with ``arvis.load(..., dtype=torch.bfloat16, quantize="int8")``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

INT8_KERNEL_MAX_ROWS = 8
ACTIVATION_DTYPES = (torch.bfloat16, torch.float16)


class Int8Linear(nn.Module):
    """y = x · (scales ⊙ codes)^T + bias: int8 codes (out, in), per-output-channel scales (out,) and the bias in
    the activations' dtype. Built from an ``nn.Linear`` by :meth:`from_linear`."""

    def __init__(self, codes: Tensor, scales: Tensor, bias: Tensor | None) -> None:
        super().__init__()
        self.in_features, self.out_features = codes.shape[1], codes.shape[0]
        self.register_buffer("codes", codes)
        self.register_buffer("scales", scales)
        self.register_buffer("bias", bias)

    @classmethod
    def from_linear(cls, layer: nn.Linear) -> Int8Linear:
        """Quantizes ``layer`` (weights in bf16 or fp16, the activations' dtype) channel by channel."""
        weight = layer.weight.detach()
        if weight.dtype not in ACTIVATION_DTYPES:
            raise ValueError(f"int8 weights run with bf16 or fp16 activations, but this layer is {weight.dtype}: "
                             "load the model with dtype=torch.bfloat16 (or float16) before quantizing")
        scales = (weight.float().abs().amax(dim=1) / 127).clamp(min=torch.finfo(weight.dtype).tiny).to(weight.dtype)
        codes = torch.round(weight.float() / scales.float()[:, None]).clamp(-127, 127).to(torch.int8)
        bias = layer.bias.detach().clone() if layer.bias is not None else None
        return cls(codes, scales, bias)

    def dequantized(self) -> Tensor:
        """(out, in) weights in the scales' dtype."""
        return self.codes.to(self.scales.dtype) * self.scales[:, None]

    @property
    def weight(self) -> Tensor:
        """The dequantized weights, for modules that pass a layer's ``weight`` to a product themselves."""
        return self.dequantized()

    def forward(self, x: Tensor) -> Tensor:
        """x (..., in) in the scales' dtype -> (..., out)."""
        if x.dtype != self.scales.dtype:
            raise ValueError(f"this int8 layer takes {self.scales.dtype} inputs, got {x.dtype}")
        rows = x.numel() // self.in_features
        if x.device.type == "cpu" and rows <= INT8_KERNEL_MAX_ROWS:
            out = torch.ops.aten._weight_int8pack_mm(x.reshape(rows, self.in_features), self.codes, self.scales)
            out = out.reshape(*x.shape[:-1], self.out_features)
            return out if self.bias is None else out + self.bias
        return F.linear(x, self.dequantized(), self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


def quantize_int8_(module: nn.Module) -> nn.Module:
    """Replaces every ``nn.Linear`` inside ``module`` (bf16 or fp16) by an :class:`Int8Linear`, in place; returns
    ``module``, which can no longer be saved (its state dict is no longer the float model's)."""
    replacements = [(name, child) for name, child in module.named_modules() if isinstance(child, nn.Linear)]
    if not replacements:
        raise ValueError(f"{type(module).__name__} has no linear layers to quantize")
    for name, child in replacements:
        owner_name, _, attribute = name.rpartition(".")
        owner = module.get_submodule(owner_name) if owner_name else module
        setattr(owner, attribute, Int8Linear.from_linear(child))
    module.weights_quantized = "int8"
    return module
