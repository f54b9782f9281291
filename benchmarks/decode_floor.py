"""How close one next-token decoding step of LlamaGen GPT-B is to this machine's floor: weight streaming.

    python benchmarks/decode_floor.py [--batch-size 2] [--steps 64] [--profile] [--compile]

A decoding step at batch b with CFG runs 2b rows through every weight matrix once. The probe times exactly those
products alone: for each linear layer of GPT-B (per block: qkv, output, the two SwiGLU inputs and its output;
then the head) a (2b, in) x (in, out) product, fp32, weights laid out as the model has them, timed as one pass
over all of them, written both ways: ``F.linear`` (``F_linear_probe_ms``) and arvis's ``linear`` (which streams
the weights as ``(W @ x^T)^T`` on the CPU); ``probe_ms`` is the faster of the two, the floor the step is held
against. The step is ``RasterGenerator.step`` on a KV cache filled to the middle of the image (128 tokens), with
the CFG batch doubled, timed over ``--steps`` steps after a warm-up. Both report GB/s of the linear weights
streamed (390 MB per pass of GPT-B's 444 MB of fp32 parameters; the embeddings are gathered, not streamed) and
the step's share of the probe's rate. Random weights; asserts nothing. ``--profile`` adds torch.profiler's top
operators of the step.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from torch import nn


def linear_layers(model: nn.Module) -> list[nn.Linear]:
    """The linear layers of the trunk and the head, the products one step runs."""
    return [module for module in model.modules() if isinstance(module, nn.Linear)]


def probe_seconds(layers: list[nn.Linear], rows: int, repeats: int, product) -> float:
    """Minimum time of one pass of ``product((rows, in), W)`` over every layer, weights as the model stores them."""
    inputs = [torch.randn(rows, layer.in_features) for layer in layers]
    weights = [layer.weight.detach() for layer in layers]
    best = float("inf")
    with torch.inference_mode():
        for _ in range(repeats):
            start = time.perf_counter()
            for x, weight in zip(inputs, weights, strict=True):
                product(x, weight)
            best = min(best, time.perf_counter() - start)
    return best


def guided_cache(generator, batch: int, filled: int):
    """The guided condition (2b rows), a one-token input and a KV cache holding the prefix and ``filled - 1``
    tokens, for timing or profiling steps at that fill (call under ``torch.inference_mode``)."""
    from arvis.conditions import Condition

    labels = torch.arange(batch) % generator.num_classes
    condition = Condition.cat([Condition(labels=labels), generator.null_condition(batch)])
    cache = generator.new_cache(2 * batch)
    generator.step(None, condition, cache)
    generator.step(torch.zeros(2 * batch, filled - 1, dtype=torch.long), condition, cache)
    return condition, torch.zeros(2 * batch, 1, dtype=torch.long), cache


def run_steps(generator, condition, token, cache, steps: int) -> None:
    """``steps`` decoding steps, each rewound so that the cache keeps its fill."""
    for _ in range(steps):
        generator.step(token, condition, cache)
        cache.rewind(cache.length - 1)


def step_seconds(generator, batch: int, steps: int, filled: int) -> float:
    """Mean time of one guided decoding step (2b rows) on a cache holding ``filled`` tokens."""
    with torch.inference_mode():
        condition, token, cache = guided_cache(generator, batch, filled)
        run_steps(generator, condition, token, cache, 1)  # warm-up
        start = time.perf_counter()
        run_steps(generator, condition, token, cache, steps)
        return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--compile", action="store_true",
                        help="time the step of Generator.compile_decoding() (static KV cache, inductor) instead")
    args = parser.parse_args()
    from arvis.generators.base import GENERATORS
    from arvis.nn.linear import linear
    from arvis.testing import randomize_parameters_

    torch.manual_seed(0)
    generator = randomize_parameters_(GENERATORS.build("llamagen-b", num_classes=1000), std=0.02).eval()
    layers = linear_layers(generator)
    if args.compile:
        generator.compile_decoding()
    weight_bytes = sum(layer.weight.numel() * layer.weight.element_size() for layer in layers)
    all_bytes = sum(p.numel() * p.element_size() for p in generator.parameters())
    rows = 2 * args.batch_size
    f_linear_probe = probe_seconds(layers, rows, repeats=20, product=torch.nn.functional.linear)
    probe = probe_seconds(layers, rows, repeats=20, product=linear)
    step = step_seconds(generator, args.batch_size, args.steps, filled=128)
    probe = min(probe, f_linear_probe)
    result = {"batch": args.batch_size, "rows": rows, "linear_weights_MB": round(weight_bytes / 1e6, 1),
              "all_weights_MB": round(all_bytes / 1e6, 1),
              "F_linear_probe_ms": round(f_linear_probe * 1e3, 2),
              "probe_ms": round(probe * 1e3, 2), "probe_GB_per_s": round(weight_bytes / probe / 1e9, 2),
              "step_ms": round(step * 1e3, 2), "step_GB_per_s": round(weight_bytes / step / 1e9, 2),
              "step_share_of_probe_rate": round(probe / step, 3),
              "threads": torch.get_num_threads()}
    print(json.dumps(result))
    if args.profile:
        with torch.inference_mode():
            condition, token, cache = guided_cache(generator, args.batch_size, filled=128)
            with torch.profiler.profile() as profiler:
                run_steps(generator, condition, token, cache, 20)
        print(profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))

if __name__ == "__main__":
    main()
