"""SDAR on the glyph pipelines: model calls, speed and sample quality of blockwise decoding against the AR teacher.

    python docs/scripts/sdar_toy.py arvis-quickstart/pipeline "B 4=outputs/sdar/b4/pipeline" \
        "B 8=outputs/sdar/b8/pipeline" --num-samples 500

Rows: the AR teacher with its stored sampler; each SDAR pipeline decoded statically (the most confident token of
each of S = B passes per block), sequentially (the leftmost B/S tokens at each of S = B, B/2 and B/4 passes)
and dynamically at each ``--thresholds`` θ (S = B, so a block takes at most B passes). Every row uses the pipeline's
guidance and filtering (CFG 2, top-p 0.9 for the quickstart), sample i seeded by i, classes balanced.

Columns: model calls per image (passes that predict tokens: an AR step, or an SDAR pass over a block; at batch 1 over
``--call-samples`` samples), tokens per call, seconds per image of drawing the tokens at batch 1 and at batch 100
(the rows taken in turn after a warm-up, the median of ``--timing-repeats``), glyph accuracy and fd-glyphs of
``--num-samples`` samples against 1000 rendered glyphs (seed 777), and the share of the samples' tokens that are the
commonest token of those glyphs' encodings (a background patch), to see whether a commit rule over-draws it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

import arvis
from arvis.data import GlyphDataset
from arvis.eval.glyph_classifier import load_glyph_classifier
from arvis.eval.glyph_metrics import glyph_metrics
from arvis.eval.images import to_uint8_chw
from arvis.folders import write_file_atomically
from arvis.posttrain.sdar import SDARRaster
from arvis.samplers.logits import per_sample_generators

from toy_sampling import BATCH, draw, to_images  # docs/scripts/toy_sampling.py


def calls_per_image(pipeline, sampler, labels: torch.Tensor) -> float:
    """Model calls per image at batch 1 that predict tokens: every step of an AR generator (its prefix pass
    predicts token 0), every step but the prefix's of an SDAR one."""
    generator, calls = pipeline.generator, [0]
    original = generator.step
    counts_prefix = not isinstance(generator, SDARRaster)

    def counted(tokens, condition, cache, **options):
        calls[0] += tokens is not None or counts_prefix
        return original(tokens, condition, cache, **options)

    generator.step = counted
    try:
        for index, label in enumerate(labels.tolist()):
            sampler(generator, torch.tensor([label]), rng=per_sample_generators(0, index, 1))
    finally:
        del generator.step
    return calls[0] / len(labels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("teacher", help="the AR pipeline SDAR started from")
    parser.add_argument("runs", nargs="*", help="NAME=PIPELINE of each SDAR pipeline")
    parser.add_argument("--thresholds", type=float, nargs="*", default=[0.5, 0.7, 0.9, 0.99])
    parser.add_argument("--num-samples", type=int, default=500)
    parser.add_argument("--call-samples", type=int, default=20)
    parser.add_argument("--timing-repeats", type=int, default=3)
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_intermixed_args()
    torch.set_grad_enabled(False)
    teacher = arvis.load(args.teacher)
    if any("=" not in run for run in args.runs):
        parser.error("give each SDAR pipeline as NAME=PIPELINE_DIR")
    rows = [("AR teacher", teacher, teacher.sampler())]
    for name, path in (run.split("=", 1) for run in args.runs):
        pipeline = arvis.load(path)
        if not isinstance(pipeline.generator, SDARRaster):
            parser.error(f"{path} is not an SDAR pipeline")
        steps = pipeline.generator.block_size
        rows.append((f"{name}, static S {steps}", pipeline,
                     pipeline.sampler(commit_strategy="low_confidence_static", denoising_steps=steps)))
        rows += [(f"{name}, sequential S {passes}", pipeline,
                  pipeline.sampler(commit_strategy="sequential", denoising_steps=passes))
                 for passes in sorted({max(steps // divisor, 1) for divisor in (1, 2, 4)}, reverse=True)]
        rows += [(f"{name}, dynamic θ {theta:g}", pipeline,
                  pipeline.sampler(commit_strategy="low_confidence_dynamic", confidence_threshold=theta,
                                   denoising_steps=steps)) for theta in args.thresholds]
    num_classes = teacher.generator.num_classes
    labels = torch.arange(args.num_samples) % num_classes
    real, _ = GlyphDataset(1000, image_size=teacher.tokenizer.image_size[0], seed=777).tensors()
    real_tokens = teacher.tokenizer.encode(teacher.tokenizer.from_unit_range(real))
    commonest = real_tokens.flatten().bincount().argmax()
    real = to_uint8_chw(real, value_range=(0, 1))
    classifier = load_glyph_classifier()

    timing = {name: {1: [], BATCH: []} for name, _, _ in rows}
    for _, pipeline, sampler in rows:  # warm-up
        draw(pipeline, sampler, labels[:4])
    for _ in range(args.timing_repeats):  # the rows in turn
        for name, pipeline, sampler in rows:
            for batch in (1, BATCH):
                started = time.perf_counter()
                draw(pipeline, sampler, labels[:batch])
                timing[name][batch].append((time.perf_counter() - started) / len(labels[:batch]))
    print(f"commonest token of the real glyphs: {commonest.item()}, "
          f"{(real_tokens == commonest).float().mean().item():.1%} of their tokens")
    print("| row | calls / image | tokens / call | s/image, batch 1 | s/image, batch 100 | glyph accuracy | "
          "fd-glyphs | commonest token |")
    print("|---|---|---|---|---|---|---|---|")
    results = {}
    for name, pipeline, sampler in rows:
        calls = calls_per_image(pipeline, sampler, labels[:args.call_samples])
        tokens = draw(pipeline, sampler, labels)
        scores = glyph_metrics(to_images(pipeline, tokens), labels, real, classifier)
        row = {"calls_per_image": calls, "tokens_per_call": pipeline.generator.layout.length / calls,
               "seconds_batch_1": statistics.median(timing[name][1]),
               "seconds_batch_100": statistics.median(timing[name][BATCH]),
               "accuracy": scores["glyph_accuracy"], "fd_glyphs": scores["fd_glyphs"],
               "commonest_token_share": (tokens == commonest).float().mean().item()}
        results[name] = row
        print(f"| {name} | {calls:.1f} | {row['tokens_per_call']:.2f} | {row['seconds_batch_1'] * 1e3:.1f} ms | "
              f"{row['seconds_batch_100'] * 1e3:.2f} ms | {row['accuracy']:.1%} | {row['fd_glyphs']:.3f} | "
              f"{row['commonest_token_share']:.1%} |", flush=True)
    if args.json:
        write_file_atomically(args.json, lambda path: path.write_text(json.dumps(results, indent=1)))


if __name__ == "__main__":
    main()
