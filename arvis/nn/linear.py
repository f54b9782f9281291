"""``nn.Linear`` with the faster product for a few float32 rows on the CPU.

A decoding step multiplies a handful of rows (batch × 2 with CFG) by every weight matrix, so its time is the
time to stream the weights. On the CPU, ``F.linear`` computes ``x @ W^T`` with the rows as the matrix product's
short side, and the BLAS kernel for that shape streams fp32 weights at about half the rate of the same product
written as ``(W @ x^T)^T`` (GPT-B's 61 layer products with 2 to 128 rows; the measurements are in
docs/results.md, from ``benchmarks/decode_floor.py`` and ``benchmarks/int8_products.py``). The two differ only in
summation order (about 1e-6 relative), so one row (``F.linear``) and several rows get other last bits. Other
dtypes, devices and row counts keep ``F.linear``: bf16 and a single row are as fast or faster there, and many
rows are bound by arithmetic either way.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

MAX_STREAMING_ROWS = 128


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``F.linear``: x (..., in) with weight (out, in) and bias (out,) -> (..., out), through the weight-streaming
    product for 2 to 128 float32 rows on the CPU."""
    rows = x.numel() // x.shape[-1] if x.shape[-1] else 0
    if not (x.device.type == "cpu" and x.dtype == weight.dtype == torch.float32
            and 1 < rows <= MAX_STREAMING_ROWS and (bias is None or bias.ndim == 1)):
        return F.linear(x, weight, bias)
    columns = x.reshape(rows, x.shape[-1]).t()  # (in, rows)
    product = weight @ columns if bias is None else torch.addmm(bias[:, None], weight, columns)  # (out, rows)
    # contiguous like F.linear's result, so what follows (a dropout mask's draw order, say) sees the same layout
    return product.t().contiguous().reshape(*x.shape[:-1], weight.shape[0])


class Linear(nn.Linear):
    """``nn.Linear`` (same parameters and state-dict keys) whose product is :func:`linear`."""

    def forward(self, x: Tensor) -> Tensor:
        return linear(x, self.weight, self.bias)
