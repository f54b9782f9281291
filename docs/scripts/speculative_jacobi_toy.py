"""Speculative Jacobi decoding on trained pipelines: model passes per image, latency and quality against plain
next-token sampling.

    python docs/scripts/speculative_jacobi_toy.py --quickstart arvis-quickstart/pipeline \
        --t2i outputs/t2i-glyphs/pipeline --num-samples 500

For each pipeline and sampler (its stored settings; SJD with ``draft_window`` 16 and both draft inits):

    * passes / image: the generator passes (``step`` calls, the prefix pass included) one image waits for: per
      batch for plain sampling (a pass serves the whole batch), per sample for SJD (decoded row by row);
    * s / image at batch 1: the minimum over 3 interleaved rounds of ``--timed`` images per sampler;
    * fd-glyphs (against 1000 rendered glyphs, seed 777) and glyph accuracy of ``--num-samples`` samples
      (balanced classes for a class pipeline; the held-out captions, dataset seed 12345, for a text one).

Plain sampling at a second seed shows how much fd-glyphs moves between two draws of the same distribution.
"""

from __future__ import annotations

import argparse
import json
import math
import time

import torch

import arvis
from arvis.data import GlyphDataset
from arvis.eval.glyph_classifier import load_glyph_classifier
from arvis.eval.glyph_metrics import glyph_metrics
from arvis.eval.images import to_uint8_chw

SAMPLERS = {
    "next-token": {},
    "speculative-jacobi, draft_init repeat": {"sampler": "speculative-jacobi", "draft_window": 16,
                                               "draft_init": "repeat"},
    "speculative-jacobi, draft_init random": {"sampler": "speculative-jacobi", "draft_window": 16,
                                               "draft_init": "random"},
}


def conditions(pipeline, count: int) -> tuple[dict, torch.Tensor]:
    """The generate arguments of ``count`` samples (one each) and their class ids."""
    if "prompt" in pipeline.generator.condition_fields:
        held_out = GlyphDataset(count, image_size=pipeline.tokenizer.image_size[0], seed=12345)
        return {"prompts": [held_out.caption(index) for index in range(count)]}, held_out.tensors()[1]
    labels = torch.arange(count) % pipeline.generator.num_classes
    return {"class_labels": labels.tolist()}, labels


def counted_passes(pipeline) -> list[int]:
    """Counts calls of the pipeline generator's ``step`` (an instance attribute shadows the method)."""
    calls = [0]
    step = pipeline.generator.step

    def counting(*args, **kwargs):
        calls[0] += 1
        return step(*args, **kwargs)

    pipeline.generator.step = counting
    return calls


def evaluate(path: str, num_samples: int, timed: int, classifier) -> list[dict]:
    pipeline = arvis.load(path)
    calls = counted_passes(pipeline)
    size = pipeline.tokenizer.image_size[0]
    reference = to_uint8_chw(GlyphDataset(1000, image_size=size, seed=777).tensors()[0], value_range=(0, 1))
    arguments, labels = conditions(pipeline, num_samples)
    timing_arguments, _ = conditions(pipeline, timed)
    seconds = {name: float("inf") for name in SAMPLERS}
    for _ in range(3):  # interleaved rounds, batch 1
        for name, settings in SAMPLERS.items():
            start = time.perf_counter()
            arvis.generate(pipeline, **timing_arguments, seed=100, batch_size=1, output_type="pt", **settings)
            seconds[name] = min(seconds[name], (time.perf_counter() - start) / timed)
    rows = []
    for name, settings in [*SAMPLERS.items(), ("next-token, seed 1", {})]:
        calls[0] = 0
        seed = 1 if name.endswith("seed 1") else 0
        images = arvis.generate(pipeline, **arguments, seed=seed, batch_size=100, output_type="pt", **settings)
        # passes one image waits for: plain sampling serves a whole batch per pass, SJD decodes row by row
        passes = calls[0] / (num_samples if "sampler" in settings else math.ceil(num_samples / 100))
        metrics = glyph_metrics(to_uint8_chw(images, value_range=(0, 1)), labels, reference, classifier)
        rows.append({"pipeline": path, "sampler": name, "passes_per_image": round(passes, 1),
                     "tokens": pipeline.generator.layout.length,
                     "s_per_image_batch_1": None if name.endswith("seed 1") else round(seconds[name], 4),
                     "fd_glyphs": round(metrics["fd_glyphs"], 3),
                     "glyph_accuracy": round(metrics["glyph_accuracy"], 3)})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quickstart", help="a class-conditional glyph pipeline (arvis quickstart)")
    parser.add_argument("--t2i", help="a text-conditional glyph pipeline (configs/t2i_glyphs_generator.yaml)")
    parser.add_argument("--num-samples", type=int, default=500)
    parser.add_argument("--timed", type=int, default=20, help="images per sampler and timing round")
    args = parser.parse_args()
    classifier = load_glyph_classifier()
    for path in (args.quickstart, args.t2i):
        if path:
            evaluate(path, args.num_samples, args.timed, classifier)


if __name__ == "__main__":
    main()
