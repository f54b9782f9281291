"""Which of the upstream ResTok details makes the first tokens of restok-demo collapse? Short runs, one per variant.

    python docs/scripts/restok_collapse_probe.py 1500                      # every variant, about 5 min each alone
    python docs/scripts/restok_collapse_probe.py 1500 "torch init"         # one of them

Each variant trains restok-demo for the given steps (default 1500) with the recipe of
`configs/restok_demo_tokenizer.yaml` and the overrides below, into `runs/<variant>`, then prints one JSON line:
the number of distinct codes at positions 0-7 over 256 held-out glyphs (dataset seed 12345) and the
reconstruction MSE of the 4-, 8- and 32-token prefixes.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import torch

VARIANTS = {
    "faithful (issue 17)": [],
    "arvis 0.1 (all legacy)": ["tokenizer_config.weight_init=torch", "tokenizer_config.ln_pre=false",
                               "tokenizer_config.norm_eps=1e-6", "tokenizer_config.merge_embed_after_block=false",
                               "tokenizer_config.key_bias=true", "tokenizer_config.nested_dropout_counts=[4,8,16,32]",
                               "tokenizer_config.nested_dropout_weights=[1.0,2.0,4.0,8.0]"],
    "old nested-dropout weights": ["tokenizer_config.nested_dropout_counts=[4,8,16,32]",
                                   "tokenizer_config.nested_dropout_weights=[1.0,2.0,4.0,8.0]"],
    "torch init": ["tokenizer_config.weight_init=torch"],
    "no ln_pre": ["tokenizer_config.ln_pre=false"],
    "learned key bias": ["tokenizer_config.key_bias=true"],
    "merge embedding before the MLP": ["tokenizer_config.merge_embed_after_block=false"],
}


def measure(folder):
    from arvis.data import GlyphDataset
    from arvis.tokenizers.base import Tokenizer
    tokenizer = Tokenizer.from_pretrained(folder).eval()
    images, _ = GlyphDataset(256, image_size=32, seed=12345).tensors()
    with torch.no_grad():
        tokens = tokenizer.encode(tokenizer.from_unit_range(images))
        mse = {k: float((tokenizer.to_unit_range(tokenizer.decode(tokens[:, :k])).clamp(0, 1) - images).pow(2).mean())
               for k in (4, 8, 32)}
    return [len(set(tokens[:, i].tolist())) for i in range(8)], mse


def main():
    steps = int(sys.argv[1]) if len(sys.argv) > 1 else 1500
    names = sys.argv[2:] or list(VARIANTS)
    for name in names:
        out = Path("runs") / name.replace(" ", "_").replace("(", "").replace(")", "")
        start = time.time()
        subprocess.run([sys.executable, "-m", "arvis.train.tokenizer", "--config",
                        "configs/restok_demo_tokenizer.yaml", f"run.output_dir={out}",
                        f"run.max_steps={steps}", "run.progress=false", "run.log_every=500", "run.overwrite=true",
                        "run.resume=never", *VARIANTS[name]], check=True, capture_output=True)
        codes, mse = measure(out / "tokenizer")
        print(json.dumps({"variant": name, "steps": steps, "seconds": round(time.time() - start),
                          "codes_at_positions_0_7": codes, "mse": mse}), flush=True)


if __name__ == "__main__":
    main()
