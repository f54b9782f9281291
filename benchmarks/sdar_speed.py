"""Seconds per image of sampling: a raster generator decoded token by token against SDAR blockwise decoding of the
same weights at several passes per block, same process, interleaved.

    python benchmarks/sdar_speed.py                                   # raster-demo (64 tokens), blocks of 4 and 8
    python benchmarks/sdar_speed.py --base llamagen-b --block-sizes 4 --batch-sizes 1 8 --repeats 2

Random-weight models: the base in eval mode and an ``SDARRaster.from_base`` copy per block size B. SDAR rows run
``low_confidence_static`` at S = B passes per block (as many passes as the AR model's steps), S = B/2 and S = 1, so
the pass count is fixed by S and not by what random weights happen to be confident about. Every row uses
guidance 2 and top-k 100 with the same seeds. After a warm-up of every row at every batch size, each repeat times
every row in turn at each batch size; the median seconds per image and (on a GPU) the peak CUDA memory are printed
with the passes per image. Asserts nothing.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from arvis.generators.base import GENERATORS
from arvis.posttrain.sdar import SDARRaster
from arvis.samplers import sampler_for
from arvis.samplers.logits import per_sample_generators
from arvis.testing import randomize_parameters_

SHARED = {"cfg_scale": 2.0, "top_k": 100}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="raster-demo", help="the base raster generator's preset")
    parser.add_argument("--block-sizes", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 100])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    torch.manual_seed(0)
    dtype = getattr(torch, args.dtype)
    base = randomize_parameters_(GENERATORS.build(args.base), std=0.02).eval().to(args.device, dtype)
    length = base.layout.length
    rows = {"AR, next-token": (base, sampler_for(base, "next-token", **SHARED), length)}
    for block in args.block_sizes:
        model = SDARRaster.from_base(base, block_size=block).eval().to(args.device, dtype)
        for steps in sorted({block, max(block // 2, 1), 1}, reverse=True):
            sampler = sampler_for(model, "blockwise", commit_strategy="low_confidence_static",
                                  denoising_steps=steps, **SHARED)
            rows[f"SDAR B {block}, S {steps}"] = (model, sampler, length // block * steps)

    def run(name: str, batch: int) -> float:
        model, sampler, _ = rows[name]
        labels = torch.arange(batch, device=args.device) % model.num_classes
        generators = per_sample_generators(0, 0, batch, args.device)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        started = time.perf_counter()
        sampler(model, labels, rng=generators)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        return (time.perf_counter() - started) / batch

    for batch in args.batch_sizes:  # warm-up at every size
        for name in rows:
            run(name, batch)
    seconds = {(name, batch): [] for name in rows for batch in args.batch_sizes}
    peaks: dict[tuple[str, int], int] = {}
    for _ in range(args.repeats):
        for batch in args.batch_sizes:
            for name in rows:
                if args.device.startswith("cuda"):
                    torch.cuda.reset_peak_memory_stats()
                seconds[name, batch].append(run(name, batch))
                if args.device.startswith("cuda"):
                    peaks[name, batch] = max(peaks.get((name, batch), 0), torch.cuda.max_memory_allocated())
    print(f"{args.base} ({length} tokens), {args.device} {args.dtype}, {args.repeats} repeats, guidance 2")
    print("| row | batch | passes / image | s/image (median) | vs AR | peak memory |")
    print("|---|---|---|---|---|---|")
    for batch in args.batch_sizes:
        reference = statistics.median(seconds["AR, next-token", batch])
        for name, (_, _, passes) in rows.items():
            median = statistics.median(seconds[name, batch])
            peak = f"{peaks[name, batch] / 2**20:.0f} MiB" if (name, batch) in peaks else "n/a"
            print(f"| {name} | {batch} | {passes} | {median * 1e3:.2f} ms | {reference / median:.2f}× | {peak} |")


if __name__ == "__main__":
    main()
