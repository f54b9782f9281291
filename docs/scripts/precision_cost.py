"""What lower precision costs in quality: GPT-B's logits in bf16 / fp16 / bf16 with int8 weights against fp32, and
the quickstart's samples loaded in each.

    python docs/scripts/precision_cost.py --quickstart arvis-quickstart/pipeline --num-samples 500

* GPT-B (random weights N(0, 0.02), seeded): teacher-forced logits of 4 random sequences of 256 tokens in each
  dtype against fp32: max and mean |difference|, the KL divergence KL(fp32 || dtype) per position, and how often
  the argmax changes.
* The quickstart pipeline loaded with ``arvis.load(..., dtype=..., quantize=...)``: fd-glyphs and glyph accuracy of
  ``--num-samples`` balanced samples (seed 0) per dtype.
"""

from __future__ import annotations

import argparse
import json

import torch

import arvis
from arvis.data import GlyphDataset
from arvis.eval.glyph_classifier import load_glyph_classifier
from arvis.eval.glyph_metrics import glyph_metrics
from arvis.eval.images import to_uint8_chw
from arvis.nn.quantized import quantize_int8_

PRECISIONS = {"bf16": (torch.bfloat16, None), "fp16": (torch.float16, None), "bf16+int8": (torch.bfloat16, "int8")}


def logit_divergence() -> list[dict]:
    from arvis.generators.base import GENERATORS
    from arvis.testing import randomize_parameters_

    torch.manual_seed(0)
    reference = randomize_parameters_(GENERATORS.build("llamagen-b", num_classes=1000), std=0.02).eval()
    tokens = torch.randint(0, reference.vocab_size, (4, 256), generator=torch.Generator().manual_seed(1))
    labels = torch.tensor([1, 207, 360, 999])
    with torch.inference_mode():
        exact = reference(tokens, labels).logits.float()
        rows = []
        for name, (dtype, quantize) in PRECISIONS.items():
            lowered = GENERATORS.build("llamagen-b", num_classes=1000).eval()
            lowered.load_state_dict(reference.state_dict())
            lowered.to(dtype)
            if quantize:
                quantize_int8_(lowered)
            logits = lowered(tokens, labels).logits.float()
            difference = (logits - exact).abs()
            kl = (exact.log_softmax(-1).exp() * (exact.log_softmax(-1) - logits.log_softmax(-1))).sum(-1)
            rows.append({"model": "GPT-B logits", "dtype": name, "max_abs": round(difference.max().item(), 4),
                         "mean_abs": round(difference.mean().item(), 5), "mean_kl": float(f"{kl.mean().item():.3g}"),
                         "argmax_changed": round((logits.argmax(-1) != exact.argmax(-1)).float().mean().item(), 4)})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def quickstart_cost(path: str, num_samples: int) -> list[dict]:
    classifier = load_glyph_classifier()
    labels = torch.arange(num_samples) % 10
    reference_images = to_uint8_chw(GlyphDataset(1000, image_size=32, seed=777).tensors()[0], value_range=(0, 1))
    rows = []
    for name, (dtype, quantize) in (("fp32", (None, None)), *PRECISIONS.items()):
        pipeline = arvis.load(path, dtype=dtype, quantize=quantize)
        images = arvis.generate(pipeline, class_labels=labels.tolist(), seed=0, batch_size=100, output_type="pt")
        metrics = glyph_metrics(to_uint8_chw(images, value_range=(0, 1)), labels, reference_images, classifier)
        rows.append({"model": "quickstart samples", "dtype": name, "fd_glyphs": round(metrics["fd_glyphs"], 3),
                     "glyph_accuracy": round(metrics["glyph_accuracy"], 3)})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quickstart", help="the quickstart pipeline folder")
    parser.add_argument("--num-samples", type=int, default=500)
    args = parser.parse_args()
    logit_divergence()
    if args.quickstart:
        quickstart_cost(args.quickstart, args.num_samples)


if __name__ == "__main__":
    main()
