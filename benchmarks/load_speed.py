"""Time and peak memory to load a saved generator: built on the meta device and loaded with ``assign=True``
(arvis's ``from_pretrained``), against building it with its random initialisation and then copying the weights
in (what ``from_pretrained`` did before issue 18).

    python benchmarks/load_speed.py                       # llamagen-3b (3.1B parameters, 12.4 GB in fp32)
    python benchmarks/load_speed.py --preset llamagen-b   # smaller

The folder is written once into a temporary directory (or ``--folder``, kept), then each way of loading runs
``--repeats`` times, interleaved, each in its own process so that its peak resident memory is its own. The
weights file is memory-mapped (safetensors), so its pages count in the peak resident memory once read, and the
kernel may drop them again under pressure. ``--memory-limit-gb`` caps each child's address space (off by default:
PyTorch's CUDA build alone maps several GB of address space); a row that runs out is reported as such. Prints a
Markdown table; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def save(preset: str, folder: Path) -> None:
    import torch

    from arvis.generators.base import GENERATORS

    with torch.device("meta"):
        model = GENERATORS.build(preset)
    model = model.to_empty(device="cpu")  # uninitialised memory: the file's values do not matter here
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(std=0.02)
    model.save_pretrained(folder)


def load(folder: Path, way: str) -> dict:

    from arvis.generators.base import Generator
    from arvis.modeling import load_state_strict, load_weights, read_component_header

    start = time.perf_counter()
    if way == "meta + assign":
        model = Generator.from_pretrained(folder)
    else:  # random initialisation, then the weights copied in
        header = read_component_header(folder)
        target = Generator.registry.get_class(header["type"])
        model = target(target.config_class.from_saved(header["config"]))
        state = target.upgrade_state_dict(load_weights(folder / "model.safetensors"))
        load_state_strict(model, state, folder)
        model.eval()
    seconds = time.perf_counter() - start
    parameters = sum(p.numel() for p in model.parameters())
    del model
    return {"seconds": seconds, "parameters": parameters,
            "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def run_child(folder: Path, way: str, limit_gb: float | None) -> dict:
    limit = f"resource.setrlimit(resource.RLIMIT_AS, ({int(limit_gb * 2**30)}, {int(limit_gb * 2**30)}));" \
        if limit_gb else ""
    code = (f"import json, resource, sys; sys.path.insert(0, {str(Path(__file__).parent)!r});{limit}"
            f"from load_speed import load; from pathlib import Path;"
            f"print(json.dumps(load(Path({str(folder)!r}), {way!r})))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["failed"])[-1]
        return {"error": "out of memory" if "MemoryError" in result.stderr or "memory" in last.lower() else last}
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="llamagen-3b")
    parser.add_argument("--folder", default=None, help="where to write the saved generator (default: a temporary one)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--memory-limit-gb", type=float, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(args.folder) if args.folder else Path(scratch) / args.preset
        if not (folder / "model.safetensors").is_file():
            start = time.perf_counter()
            save(args.preset, folder)
            print(f"saved {args.preset} to {folder} in {time.perf_counter() - start:.0f} s "
                  f"({(folder / 'model.safetensors').stat().st_size / 1e9:.1f} GB)")
        rows = {"random init + copy": [], "meta + assign": []}
        for _ in range(args.repeats):
            for way in rows:
                rows[way].append(run_child(folder, way, args.memory_limit_gb))
        print(f"| {args.preset} | seconds (min of {args.repeats}) | peak resident MB |")
        print("|---|---|---|")
        for way, results in rows.items():
            errors = [result["error"] for result in results if "error" in result]
            if errors:
                print(f"| {way} | {errors[0]} | — |")
                continue
            print(f"| {way} | {min(r['seconds'] for r in results):.1f} | {max(r['peak_mb'] for r in results):.0f} |")


if __name__ == "__main__":
    main()
