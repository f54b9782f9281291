"""Weight-only int8 linear layers for inference: a quarter of fp32's weight bytes for decoding steps that stream
their weights.

Each output channel of a weight matrix gets a symmetric scale, max|w| / 127 rounded to the activations' dtype, and
its int8 codes round(w / scale); activations stay in bf16 or fp16. With up to 8 rows on the CPU (and an input
width that is a multiple of 16, which the kernel needs) the product runs in torch's int8 weight kernel
(``aten._weight_int8pack_mm``; faster than bf16's ``F.linear`` with 1 to 4 rows, slower from 8 on: the table in
docs/results.md, from ``benchmarks/int8_products.py``); otherwise it multiplies by the weights dequantised in
the activations' dtype, which costs a pass over the weights per call. The two paths round differently, so a
batch on one side of the 8-row boundary gets other last bits than on the other. CPU only
(:func:`quantize_int8_` refuses other devices: the dequantised path there would be slower than bf16).

torchao's ``Int8WeightOnlyConfig`` was measured too (torchao 0.18 on torch 2.14): it runs but, with bf16
activations, spends 21 ms on those products against bf16's 16 ms (its tensor subclass adds a dispatch per call),
and with fp32 activations 133 ms; the kernel above, called directly, takes 12 ms.

A quantized model is an inference form: it cannot be saved (``save_pretrained`` refuses a model holding an
:class:`Int8Linear`), and it is built from a loaded float model with
``arvis.load(..., dtype=torch.bfloat16, quantize="int8")``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

INT8_KERNEL_MAX_ROWS = 8
INT8_KERNEL_IN_MULTIPLE = 16  # the kernel reads its input 16 channels at a time and does not check (torch 2.14)
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
        largest = weight.float().abs().amax(dim=1)
        scales = torch.where(largest > 0, largest / 127, 1.0).to(weight.dtype)  # an all-zero row gets codes 0
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
        if x.device.type == "cpu" and 0 < rows <= INT8_KERNEL_MAX_ROWS and self.in_features % INT8_KERNEL_IN_MULTIPLE == 0:
            flat = x.reshape(rows, self.in_features).contiguous()
            out = torch.ops.aten._weight_int8pack_mm(flat, self.codes, self.scales)
            out = out.reshape(*x.shape[:-1], self.out_features)
            return out if self.bias is None else out + self.bias
        return F.linear(x, self.dequantized(), self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


def quantize_int8_(module: nn.Module) -> nn.Module:
    """Replaces every ``nn.Linear`` inside ``module`` (bf16 or fp16, on the CPU) by an :class:`Int8Linear`, in place;
    returns ``module``, which can no longer be saved (its state dict is no longer the float model's)."""
    replacements = [(name, child) for name, child in module.named_modules() if isinstance(child, nn.Linear)]
    if not replacements:
        raise ValueError(f"{type(module).__name__} has no linear layers to quantize")
    devices = {child.weight.device.type for _, child in replacements}
    if devices != {"cpu"}:
        raise ValueError(f"int8 weights run torch's int8 kernel on the CPU only; this model is on {sorted(devices)} "
                         "(use dtype=torch.bfloat16 without quantize there)")
    for name, child in replacements:
        owner_name, _, attribute = name.rpartition(".")
        owner = module.get_submodule(owner_name) if owner_name else module
        setattr(owner, attribute, Int8Linear.from_linear(child))
    return module
