"""Distilled Decoding on the built-in glyphs: teacher vs distilled 1 / 2 steps vs the naive parallel baseline.

    python docs/scripts/distilled_decoding_toy.py arvis-quickstart/pipeline outputs/dd-quickstart/pipeline \
        outputs/dd-quickstart/pairs --num-samples 500

Rows (the same classes, balanced; each scored by fd-glyphs and glyph accuracy against 1000 rendered glyphs):
    * the teacher with its own sampler (one step per token);
    * the distilled generator, 1 and 2 passes (``distilled_steps``);
    * teacher-involved: the teacher samples the tokens before the split, one distilled pass finishes;
    * the naive one-step baseline: every token drawn independently, in parallel, from the teacher's marginal
      at its position for the class (estimated from the teacher's pairs), which keeps each position's
      distribution and loses every dependence between tokens.
Seconds per image are measured at batch 100 and at batch 1 (tokens and decoding, after one warm-up batch).
``--grid PATH`` also saves the first 20 samples of every row (two per class; sample i has its own seed, so they
are the same images whatever ``--num-samples``).
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
from arvis.eval.images import to_uint8_chw
from arvis.posttrain.distilled_decoding import DistilledSampler
from arvis.posttrain.distilled_decoding.pairs import load_pairs
from arvis.samplers.logits import per_sample_generators
from arvis.visualize import image_grid


def naive_marginals(pairs_dir: str, num_classes: int, vocab_size: int) -> torch.Tensor:
    """(classes, l, v) per-class, per-position token frequencies of the teacher's pairs."""
    pairs, _ = load_pairs(pairs_dir)
    _, labels, tokens = pairs.tensors
    counts = torch.zeros(num_classes, tokens.shape[1], vocab_size, dtype=torch.float64)
    counts.index_put_((labels[:, None].expand_as(tokens), torch.arange(tokens.shape[1]).expand_as(tokens), tokens),
                      torch.ones(tokens.shape, dtype=torch.float64), accumulate=True)
    return counts / counts.sum(-1, keepdim=True)


def timed(draw, labels: torch.Tensor, batch_size: int) -> tuple[torch.Tensor, float]:
    """Images (n, 3, h, w) in [0, 1] from ``draw(labels_batch, start)`` and the seconds per image (after a warm-up)."""
    draw(labels[:batch_size], 0)
    images, start = [], time.perf_counter()
    for first in range(0, len(labels), batch_size):
        images.append(draw(labels[first:first + batch_size], first))
    return torch.cat(images), (time.perf_counter() - start) / len(labels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("teacher")
    parser.add_argument("distilled")
    parser.add_argument("pairs")
    parser.add_argument("--num-samples", type=int, default=500)
    parser.add_argument("--latency-samples", type=int, default=20)
    parser.add_argument("--grid", help="save the first 20 samples of each row here (PNG)")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    teacher, distilled = arvis.load(args.teacher), arvis.load(args.distilled)
    tokenizer = teacher.tokenizer
    model = distilled.generator
    split = model.config.split
    classifier = load_glyph_classifier()
    real, _ = GlyphDataset(1000, image_size=tokenizer.image_size[0], seed=777).tensors()
    real = to_uint8_chw(real, value_range=(0, 1))
    labels = torch.arange(args.num_samples) % teacher.generator.num_classes
    marginals = naive_marginals(args.pairs, teacher.generator.num_classes, teacher.generator.vocab_size)

    def pixels(tokens_or_codes):  # token ids (b, l) or code vectors (b, l, e)
        return tokenizer.to_unit_range(tokenizer.decode(tokens_or_codes))

    def teacher_draw(batch, start):
        return pixels(teacher.sampler()(teacher.generator, batch, rng=per_sample_generators(0, start, len(batch))))

    def distilled_draw(steps):
        sampler = distilled.sampler(distilled_steps=steps)
        return lambda batch, start: pixels(sampler(model, batch, rng=per_sample_generators(0, start, len(batch))))

    def teacher_involved_draw(batch, start):
        rngs = per_sample_generators(0, start, len(batch))
        return pixels(DistilledSampler().teacher_involved(model, teacher.generator, teacher.sampler(), batch,
                                                          teacher_start=0, rng=rngs))

    def naive_draw(batch, start):
        rows = [torch.multinomial(marginals[label], 1, generator=g).squeeze(-1)
                for label, g in zip(batch.tolist(), per_sample_generators(0, start, len(batch)), strict=True)]
        return pixels(torch.stack(rows))

    teacher_steps = len(teacher.generator.unit_lengths()) if teacher.generator.unit == "scale" \
        else teacher.generator.layout.length
    rows = {
        f"teacher ({teacher_steps} steps)": (teacher_steps, teacher_draw),
        "distilled, 1 step": (1, distilled_draw(1)),
        "distilled, 2 steps": (2, distilled_draw(2)),
        f"teacher-involved (teacher for tokens 0-{model.boundary(split) - 1}, then 1 distilled pass)":
            (split + 1, teacher_involved_draw),  # split teacher steps (tokens or scales), then one pass
        "naive parallel (teacher marginals, 1 step)": (1, naive_draw),
    }
    print("| sampler | steps | s / image, batch 100 | s / image, batch 1 | fd-glyphs | glyph accuracy |")
    print("|---|---|---|---|---|---|")
    results, firsts = {}, []
    for name, (steps, draw) in rows.items():
        images, per_image = timed(draw, labels, 100)
        firsts.append(images[:20])
        _, latency = timed(draw, labels[:args.latency_samples], 1)
        metrics = glyph_metrics(to_uint8_chw(images.clamp(0, 1), value_range=(0, 1)), labels, real, classifier)
        results[name] = {"steps": steps, "seconds_per_image_batch100": per_image, "seconds_per_image_batch1": latency,
                         "fd_glyphs": metrics["fd_glyphs"], "glyph_accuracy": metrics["glyph_accuracy"]}
        print(f"| {name} | {steps} | {per_image:.4f} | {latency:.4f} | {metrics['fd_glyphs']:.3f} | "
              f"{metrics['glyph_accuracy']:.1%} |", flush=True)
    print(json.dumps(results, indent=1))
    if args.grid:
        names = [name.split(" (")[0] for name in rows]
        image_grid(torch.cat(firsts).clamp(0, 1), len(rows), scale=2, row_labels=names).save(args.grid)


if __name__ == "__main__":
    main()
