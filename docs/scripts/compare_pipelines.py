"""Sampling steps, seconds per image, fd-glyphs and glyph accuracy of trained glyph pipelines.

    python docs/scripts/compare_pipelines.py arvis-quickstart/pipeline outputs/var-demo/pipeline

Each pipeline samples ``--num-samples`` images (balanced classes, seed 0, its stored sampling
settings, batch ``--batch-size``) on the CPU, then 20 more one at a time; the times cover tokens and
decoding. Scores are
against 1000 rendered glyphs at the pipeline's image size.
"""

from __future__ import annotations

import argparse
import time

import torch

import arvis
from arvis.data import GlyphDataset
from arvis.eval.glyph_classifier import load_glyph_classifier
from arvis.eval.glyph_metrics import glyph_metrics
from arvis.eval.images import sample_pipeline, to_uint8_chw


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pipelines", nargs="+")
    parser.add_argument("--num-samples", type=int, default=500)
    parser.add_argument("--batch-size", type=int, default=100)
    args = parser.parse_args()
    classifier = load_glyph_classifier()
    print(f"| pipeline | generator | tokens | sampling steps | s / image, batch {args.batch_size} | s / image, batch 1 "
          "| fd-glyphs | glyph accuracy |")
    print("|---|---|---|---|---|---|---|---|")
    for path in args.pipelines:
        pipeline = arvis.load(path)
        size = pipeline.tokenizer.image_size[0]
        real, _ = GlyphDataset(1000, image_size=size, seed=777).tensors()
        sample_pipeline(pipeline, num_samples=2, seed=1)  # warm-up
        start = time.perf_counter()
        samples = sample_pipeline(pipeline, num_samples=args.num_samples, seed=0, batch_size=args.batch_size)
        seconds = (time.perf_counter() - start) / args.num_samples
        result = glyph_metrics(samples.tensor(), samples.labels, to_uint8_chw(real, value_range=(0, 1)), classifier)
        start = time.perf_counter()
        sample_pipeline(pipeline, num_samples=20, seed=0, batch_size=1)
        seconds_alone = (time.perf_counter() - start) / 20
        layout = pipeline.generator.layout
        generator = pipeline.generator
        steps = layout.length if generator.unit == "token" else len(generator.unit_lengths())
        print(f"| {path} | {pipeline.generator.config.__class__.__name__} | {layout.length} | {steps} | "
              f"{seconds:.4f} | {seconds_alone:.4f} | {result['fd_glyphs']:.3f} | {result['glyph_accuracy']:.1%} |")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")


if __name__ == "__main__":
    main()
