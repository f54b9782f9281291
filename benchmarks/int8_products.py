"""GPT-B's 61 weight products (12 blocks x 5, plus the head) with a few rows, in each precision arvis offers.

    python benchmarks/int8_products.py [--rows 1 2 4 8 16]

Per row count, the minimum time of one pass over all 61 products, weights as GPT-B stores them (random):
``F.linear`` in fp32; arvis's fp32 ``linear`` (the weight-streaming form, ``arvis.nn.linear``); ``F.linear`` in
bf16; arvis's ``Int8Linear`` with bf16 activations (``arvis.nn.quantized``); and torchao's
``Int8WeightOnlyConfig`` with bf16 activations when torchao is installed (it is not an arvis dependency).
Asserts nothing.
"""

from __future__ import annotations

import argparse
import copy
import json
import time

import torch
from torch import nn

GPT_B_SHAPES = [(2304, 768), (768, 768), (2048, 768), (2048, 768), (768, 2048)] * 12 + [(16384, 768)]


def best_ms(layers, inputs, repeats: int = 7) -> float:
    best = float("inf")
    with torch.inference_mode():
        for _ in range(repeats):
            start = time.perf_counter()
            for layer, x in zip(layers, inputs, strict=True):
                layer(x)
            best = min(best, time.perf_counter() - start)
    return round(best * 1e3, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", nargs="+", type=int, default=[1, 2, 4, 8, 16])
    args = parser.parse_args()
    from arvis.nn.linear import Linear
    from arvis.nn.quantized import quantize_int8_

    torch.manual_seed(0)
    plain = nn.ModuleList(nn.Linear(fan_in, fan_out, bias=False) for fan_out, fan_in in GPT_B_SHAPES)
    streaming = copy.deepcopy(plain)
    for index, layer in enumerate(plain):
        streaming[index] = Linear(layer.in_features, layer.out_features, bias=False)
        streaming[index].weight = layer.weight
    bf16 = copy.deepcopy(plain).to(torch.bfloat16)
    int8 = quantize_int8_(copy.deepcopy(bf16))
    try:
        from torchao.quantization import Int8WeightOnlyConfig, quantize_

        torchao_int8 = copy.deepcopy(bf16)
        quantize_(torchao_int8, Int8WeightOnlyConfig())
    except ImportError:
        torchao_int8 = None
    for rows in args.rows:
        inputs = [torch.randn(rows, fan_in) for _, fan_in in GPT_B_SHAPES]
        low = [x.bfloat16() for x in inputs]
        result = {"rows": rows, "fp32_F_linear_ms": best_ms(plain, inputs),
                  "fp32_arvis_linear_ms": best_ms(streaming, inputs), "bf16_F_linear_ms": best_ms(bf16, low),
                  "int8_arvis_ms": best_ms(int8, low),
                  "int8_torchao_ms": best_ms(torchao_int8, low) if torchao_int8 is not None else "not installed"}
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
