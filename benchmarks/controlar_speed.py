"""Seconds per image of sampling: the base raster generator, ControlAR (conditional decoding) and the
conditional-prefilling baseline, same process, interleaved.

    python benchmarks/controlar_speed.py                                        # raster-demo, 32 px, batch 16
    python benchmarks/controlar_speed.py --base llamagen-b --image-size 256 --batch-size 4 --repeats 3 \
        --encoder vit-small

All three run random-weight models of one base (the same weights), in eval mode, with the same sampler settings
(guidance 2, top-k 100) and seeds; the controlled ones get the same random control maps. Each repeat times the
three in turn after a warm-up of each; the median seconds per image and the peak CUDA memory (on a GPU) are
printed with each model's sequence length and added parameters. Asserts nothing.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from arvis.conditions import Condition
from arvis.generators.base import GENERATORS
from arvis.posttrain.controlar import ControlARRaster, ControlEncoderConfig
from arvis.samplers import sampler_for
from arvis.samplers.logits import per_sample_generators
from arvis.testing import randomize_parameters_

ENCODERS = {
    "tiny": lambda patch: ControlEncoderConfig(width=64, num_layers=2, num_heads=2, mlp_dim=128, patch_size=patch,
                                               position_size=8 * patch),
    "vit-small": lambda patch: ControlEncoderConfig(patch_size=patch),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="raster-demo", help="the base generator's preset")
    parser.add_argument("--image-size", type=int, default=32, help="the control maps' side (the tokenizer's)")
    parser.add_argument("--encoder", choices=sorted(ENCODERS), default="tiny")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    torch.manual_seed(0)
    dtype = getattr(torch, args.dtype)
    base = randomize_parameters_(GENERATORS.build(args.base), std=0.02).eval()
    rows, cols = base.config.token_grid
    encoder = ENCODERS[args.encoder](args.image_size // rows)
    models = {"base": base}
    for mode in ("decoding", "prefill"):
        model = ControlARRaster.from_base(base, image_size=args.image_size, mode=mode, encoder=encoder)
        models[mode] = model.eval()
    for name in models:
        models[name] = models[name].to(args.device, dtype)
    batch = args.batch_size
    labels = torch.arange(batch, device=args.device) % base.num_classes
    control = torch.rand(batch, 1, args.image_size, args.image_size, device=args.device).round()
    conditions = {"base": Condition(labels=labels), "decoding": Condition(labels=labels, control=control),
                  "prefill": Condition(labels=labels, control=control)}

    def run(name: str) -> float:
        model = models[name]
        sampler = sampler_for(model, "next-token", cfg_scale=2.0, top_k=100)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        started = time.perf_counter()
        sampler(model, conditions[name], rng=per_sample_generators(0, 0, batch, args.device))
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        return (time.perf_counter() - started) / batch

    for name in models:  # warm-up
        run(name)
    seconds: dict[str, list[float]] = {name: [] for name in models}
    peaks: dict[str, int] = {}
    for _ in range(args.repeats):
        for name in models:
            if args.device.startswith("cuda"):
                torch.cuda.reset_peak_memory_stats()
            seconds[name].append(run(name))
            if args.device.startswith("cuda"):
                peaks[name] = max(peaks.get(name, 0), torch.cuda.max_memory_allocated())
    print(f"{args.base} at {args.image_size} px, encoder {args.encoder}, batch {batch}, {args.device} {args.dtype}, "
          f"{args.repeats} repeats")
    print("| model | sequence | added parameters | s/image (median) | peak memory |")
    print("|---|---|---|---|---|")
    for name, model in models.items():
        added = model.added_parameters() if isinstance(model, ControlARRaster) else 0
        sequence = model.prefix_length + model.layout.length - 1
        peak = f"{peaks[name] / 2**20:.0f} MiB" if name in peaks else "n/a"
        print(f"| {name} | {sequence} | {added / 1e6:.2f}M | {statistics.median(seconds[name]) * 1e3:.2f} ms | {peak} |")


if __name__ == "__main__":
    main()
