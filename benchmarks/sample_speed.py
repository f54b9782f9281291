"""Class-conditional sampling speed and peak memory of paper-size pipelines with random weights.

    python benchmarks/sample_speed.py                                  # both models, batch 1, 2, 8, CPU fp32
    python benchmarks/sample_speed.py --models var-d16 --batch-sizes 2 --device cuda --dtype bf16 --compile

Rows: LlamaGen GPT-B on VQ-16 (256 tokens, CFG 2.0 constant), VAR-d16 on its VAE (680 tokens in
10 scales, VAR's cfg 1.5 ramp) and GPT-B's trunk as Token-Shuffle with 2x2 windows on VQ-16 (256 tokens in 64
steps, CFG 2.0), all at 256 px with classifier-free guidance (the batch is doubled).
Token sampling and decoding are timed separately, after one warm-up call, in seconds per image.
Each row runs in its own process so that its peak memory (resident set on the CPU, allocated
memory on CUDA) is its own. Prints a Markdown table; asserts nothing.

How far the token phase is from the machine's floor: per row, the rate at which it streams the generator's
linear weights (their bytes once per decoding step: 256 steps for GPT-B, 10 for VAR-d16, 64 for Token-Shuffle) and
its rate of linear-layer FLOPs (2 x in x out per row each linear layer sees in one untimed sampling call, counted by
forward hooks: CFG's doubled rows included, attention not counted), beside two
probes of the machine printed in the header: a large tensor copy (GB/s, bytes read plus written) and a large
square matrix product (GFLOP/s).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch

MODELS = {
    "llamagen-b": ("vq-f16", "llamagen-b", dict(cfg_scale=2.0)),
    "var-d16": ("var-vae-f16", "var-d16", dict(cfg_scale=2.5, cfg_schedule="linear")),
    "token-shuffle-b": ("vq-f16", "token-shuffle-b", dict(cfg_scale=2.0)),
}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def run_row(model: str, batch_size: int, device: str, dtype: str, compile_model: bool, repeats: int,
            quantize: str | None = None) -> dict:
    """Builds the pipeline, samples ``repeats`` batches after a warm-up; returns the timings of one row."""
    from arvis.generators.base import GENERATORS
    from arvis.samplers import sampler_for
    from arvis.tokenizers.base import TOKENIZERS

    tokenizer_name, generator_name, sampling = MODELS[model]
    torch.manual_seed(0)
    tokenizer = TOKENIZERS.build(tokenizer_name).eval()
    preset = GENERATORS.preset(generator_name)
    generator_class = GENERATORS.class_for_config(preset)
    generator = generator_class(generator_class.fit_config(preset, tokenizer=tokenizer, num_classes=1000)).eval()
    generator.bind_tokenizer(tokenizer)
    tokenizer.to(device=device, dtype=DTYPES[dtype])
    generator.to(device=device, dtype=DTYPES[dtype])
    if quantize:  # as arvis.load(..., quantize="int8") does
        from arvis.nn.quantized import quantize_int8_

        quantize_int8_(generator)
    if compile_model:  # static KV caches and one compiled graph per step shape (CUDA graphs on a GPU)
        generator.compile_decoding(mode="reduce-overhead" if device == "cuda" else "default")
        tokenizer.decode = torch.compile(tokenizer.decode)
    sampler = sampler_for(generator, **sampling)
    labels = torch.arange(batch_size, device=device) % 1000

    def sample_once() -> tuple[float, float]:
        rng = torch.Generator(device=device).manual_seed(0)
        start = time.perf_counter()
        tokens = sampler(generator, labels, rng=rng)
        synchronize(device)
        middle = time.perf_counter()
        with torch.inference_mode():
            tokenizer.decode(tokens)
        synchronize(device)
        return middle - start, time.perf_counter() - middle

    sample_once()  # warm-up (and compilation)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    timings = [sample_once() for _ in range(repeats)]
    token_seconds = min(t for t, _ in timings) / batch_size
    decode_seconds = min(d for _, d in timings) / batch_size
    peak = (torch.cuda.max_memory_allocated() if device == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    from arvis.nn.quantized import Int8Linear

    linears = [module for module in generator.modules() if isinstance(module, (torch.nn.Linear, Int8Linear))]
    weight_bytes = sum(layer.in_features * layer.out_features * (1 if isinstance(layer, Int8Linear) else
                                                                 layer.weight.element_size()) for layer in linears)
    flops = linear_flops(linears, lambda: sampler(generator, labels, rng=torch.Generator(device=device).manual_seed(0)))
    batch_token_seconds = token_seconds * batch_size
    return {"model": model, "batch": batch_size, "tokens_s": token_seconds, "decode_s": decode_seconds,
            "total_s": token_seconds + decode_seconds, "peak_mb": peak / 2**20,
            "weights_gb_per_s": decoding_steps(generator) * weight_bytes / batch_token_seconds / 1e9,
            "gflop_per_s": flops / batch_token_seconds / 1e9}


def linear_flops(linears, call) -> int:
    """2 x in x out for every row each of ``linears`` sees while ``call()`` runs (counted by forward hooks)."""
    total = [0]

    def count(layer, inputs, _output) -> None:
        total[0] += 2 * (inputs[0].numel() // layer.in_features) * layer.in_features * layer.out_features

    handles = [layer.register_forward_hook(count) for layer in linears]
    try:
        call()
    finally:
        for handle in handles:
            handle.remove()
    return total[0]


def decoding_steps(generator) -> int:
    """Passes of the sampler over the generator per batch: one per token, or one per unit (VAR's scales)."""
    return generator.layout.length if generator.unit == "token" else len(generator.unit_lengths())


def machine_probes(device: str, dtype: torch.dtype) -> dict:
    """A 256 MB tensor copy (GB/s, read plus written) and a 2048^3 matrix product (GFLOP/s), best of 5."""
    source = torch.randn(64 * 2**20, device=device, dtype=dtype)
    target = torch.empty_like(source)
    a = torch.randn(2048, 2048, device=device, dtype=dtype)
    b = torch.randn(2048, 2048, device=device, dtype=dtype)
    copy, product = float("inf"), float("inf")
    for _ in range(5):
        start = time.perf_counter()
        target.copy_(source)
        synchronize(device)
        copy = min(copy, time.perf_counter() - start)
        start = time.perf_counter()
        a @ b
        synchronize(device)
        product = min(product, time.perf_counter() - start)
    return {"copy_gb_per_s": 2 * source.numel() * source.element_size() / copy / 1e9,
            "matmul_gflop_per_s": 2 * 2048**3 / product / 1e9}


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 2, 8])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="fp32", choices=list(DTYPES))
    parser.add_argument("--compile", action="store_true", help="decode through Generator.compile_decoding (static KV caches) and torch.compile the tokenizer decoder")
    parser.add_argument("--quantize", choices=["int8"], help="int8 generator weights (with --dtype bf16 or fp16)")
    parser.add_argument("--repeats", type=int, default=1, help="timed batches per row (the minimum is reported)")
    parser.add_argument("--row", help=argparse.SUPPRESS)  # internal: "model:batch", run one row in this process
    args = parser.parse_args()
    if args.row:
        model, batch = args.row.split(":")
        print(json.dumps(run_row(model, int(batch), args.device, args.dtype, args.compile, args.repeats,
                                 args.quantize)))
        return
    name = torch.cuda.get_device_name() if args.device == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    probes = machine_probes(args.device, DTYPES[args.dtype])
    print(f"device: {name}; dtype {args.dtype}; quantize {args.quantize}; compile {args.compile}; "
          f"torch {torch.__version__}; probes: copy "
          f"{probes['copy_gb_per_s']:.1f} GB/s (read + written), matrix product "
          f"{probes['matmul_gflop_per_s']:.0f} GFLOP/s\n")
    print("| model | batch | tokens s/img | decode s/img | total s/img | peak MB | tokens: weights GB/s | "
          "tokens: GFLOP/s |")
    print("|---|---|---|---|---|---|---|---|")
    for model in args.models:
        for batch in args.batch_sizes:
            command = [sys.executable, __file__, "--row", f"{model}:{batch}", "--device", args.device,
                       "--dtype", args.dtype, "--repeats", str(args.repeats)]
            command += (["--compile"] if args.compile else []) + (["--quantize", args.quantize] if args.quantize else [])
            output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
            row = json.loads(output.strip().splitlines()[-1])
            print(f"| {row['model']} | {row['batch']} | {row['tokens_s']:.3f} | {row['decode_s']:.3f} | "
                  f"{row['total_s']:.3f} | {row['peak_mb']:.0f} | {row['weights_gb_per_s']:.1f} | "
                  f"{row['gflop_per_s']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
