"""fd-glyphs and glyph accuracy of a trained pipeline against controls (docs/results.md, Evaluation).

    python docs/scripts/glyph_metric_ordering.py arvis-quickstart/pipeline --num-samples 500

Rows: rendered glyphs (what a perfect generator scores with this many samples), the
tokenizer's reconstructions of rendered glyphs (the best this tokenizer allows), the trained
generator, and the same generator architecture untrained (default initialisation), all
decoded by the same tokenizer and compared with 1000 rendered reference glyphs.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

import arvis
from arvis.data import GlyphDataset
from arvis.eval.glyph_classifier import load_glyph_classifier
from arvis.eval.glyph_metrics import glyph_metrics
from arvis.eval.images import sample_pipeline, to_uint8_chw


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pipeline")
    parser.add_argument("--num-samples", type=int, default=500)
    args = parser.parse_args()
    pipeline = arvis.load(args.pipeline)
    tokenizer, size = pipeline.tokenizer, pipeline.tokenizer.image_size[0]
    classifier = load_glyph_classifier()
    real, _ = GlyphDataset(1000, image_size=size, seed=777).tensors()
    real = to_uint8_chw(real, value_range=(0, 1))
    rendered, labels = GlyphDataset(args.num_samples, image_size=size, seed=778).tensors()
    with torch.inference_mode():
        reconstructed = tokenizer.to_unit_range(tokenizer.decode(tokenizer.encode(tokenizer.from_unit_range(rendered))))
    untrained = arvis.Pipeline(tokenizer, type(pipeline.generator)(pipeline.generator.config).eval(), pipeline.sampling)
    rows = {"rendered glyphs": (to_uint8_chw(rendered, value_range=(0, 1)), labels),
            "tokenizer reconstructions": (to_uint8_chw(reconstructed.clamp(0, 1), value_range=(0, 1)), labels)}
    for name, candidate in (("trained generator", pipeline), ("untrained generator", untrained)):
        start = time.perf_counter()
        samples = sample_pipeline(candidate, num_samples=args.num_samples, seed=0)
        print(f"sampled {name} in {time.perf_counter() - start:.1f} s")
        rows[name] = (samples.tensor(), samples.labels)
    results = {name: glyph_metrics(images, row_labels, real, classifier) for name, (images, row_labels) in rows.items()}
    print("| samples | fd-glyphs | glyph accuracy |\n|---|---|---|")
    for name, result in results.items():
        print(f"| {name} | {result['fd_glyphs']:.3f} | {result['glyph_accuracy']:.1%} |")
    print(json.dumps(next(iter(results.values()))["protocol"]))


if __name__ == "__main__":
    main()
