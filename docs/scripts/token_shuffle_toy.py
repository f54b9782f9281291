"""Token-Shuffle on 64 px glyphs: steps, speed and sample quality at window sides 1, 2 and 4, beside the 32 px
quickstart (the old budget).

    python docs/scripts/token_shuffle_toy.py "s 1=outputs/ts64/s1/pipeline" "s 2=outputs/ts64/s2/pipeline" \
        "s 4=outputs/ts64/s4/pipeline" "quickstart 32 px=outputs/ts64/quickstart/pipeline" \
        --grid docs/token_shuffle_samples.png

Each NAME=PIPELINE row is sampled with its stored sampler settings (CFG 2 constant, top-p 0.9 in the recipes), or
with settings changed as NAME=PIPELINE:key=value,key=value (``"s 2, linear CFG=outputs/ts64/s2/pipeline:
cfg_schedule=linear"``), sample i seeded by i, classes balanced. Columns: tokens per image, trunk positions per image (the prefix and the fed inputs),
decoding steps per image, seconds per image of drawing the tokens at batch 1 and at batch 100 and seconds per
training step (batch 64, AdamW, random token ids: the cost does not depend on their values); the timed parts of the
rows are taken in turn after a warm-up, the median of ``--timing-repeats``. Then glyph accuracy and fd-glyphs of
``--num-samples`` samples against 1000 rendered glyphs (seed 777) at each pipeline's resolution (the classifier
resizes to 32 px). ``--grid`` writes one row per class: 4 samples of each 64 px row, those rows side by side in their order.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import yaml

import arvis
from arvis.data import GlyphDataset
from arvis.eval.glyph_classifier import load_glyph_classifier
from arvis.eval.glyph_metrics import glyph_metrics
from arvis.eval.images import to_uint8_chw
from arvis.folders import write_file_atomically
from arvis.samplers.logits import per_sample_generators
from arvis.visualize import image_grid

from toy_sampling import BATCH, draw, to_images  # docs/scripts/toy_sampling.py

TRAIN_BATCH = 64


def steps_per_image(pipeline, sampler) -> int:
    """Generator steps that draw tokens for one image (the prefix step draws the first unit)."""
    generator, calls = pipeline.generator, [0]
    original = generator.step

    def counted(*args, **kwargs):
        calls[0] += 1
        return original(*args, **kwargs)

    generator.step = counted
    try:
        sampler(generator, torch.tensor([0]), rng=per_sample_generators(0, 0, 1))
    finally:
        del generator.step
    return calls[0]


class TrainingStep:
    """One AdamW step of a fresh copy of a pipeline's generator on random token ids of batch 64."""

    def __init__(self, generator) -> None:
        torch.manual_seed(0)
        self.model = type(generator)(generator.config).train()
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=2e-3, weight_decay=0.05)
        rng = torch.Generator().manual_seed(0)
        self.tokens = torch.randint(0, generator.vocab_size, (TRAIN_BATCH, generator.layout.length), generator=rng)
        self.labels = torch.arange(TRAIN_BATCH) % generator.num_classes

    def __call__(self) -> None:
        with torch.enable_grad():
            self.optimizer.zero_grad(set_to_none=True)
            self.model(self.tokens, self.labels).loss.backward()
            self.optimizer.step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="NAME=PIPELINE of each row")
    parser.add_argument("--num-samples", type=int, default=500)
    parser.add_argument("--timing-repeats", type=int, default=3)
    parser.add_argument("--grid", help="write a grid of the 64 px rows' samples here (PNG)")
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args()
    if any("=" not in run for run in args.runs):
        parser.error("give each pipeline as NAME=PIPELINE_DIR")
    torch.set_grad_enabled(False)
    rows = []
    for name, spec in (run.split("=", 1) for run in args.runs):
        path, _, changes = spec.partition(":")
        overrides = {key: yaml.safe_load(value) for key, value in
                     (change.split("=", 1) for change in changes.split(",") if change)}
        pipeline = arvis.load(path)
        rows.append((name, pipeline, pipeline.sampler(**overrides), TrainingStep(pipeline.generator)))

    labels = torch.arange(args.num_samples) % 10
    timing = {name: {"batch 1": [], "batch 100": [], "train": []} for name, *_ in rows}
    for _, pipeline, sampler, train_step in rows:  # warm-up
        draw(pipeline, sampler, labels[:4])
        train_step()
    for _ in range(args.timing_repeats):  # the rows in turn
        for name, pipeline, sampler, train_step in rows:
            for key, batch in (("batch 1", 1), ("batch 100", BATCH)):
                started = time.perf_counter()
                draw(pipeline, sampler, labels[:batch])
                timing[name][key].append((time.perf_counter() - started) / len(labels[:batch]))
            started = time.perf_counter()
            train_step()
            timing[name]["train"].append(time.perf_counter() - started)

    classifier = load_glyph_classifier()
    real = {}
    print("| row | tokens / image | trunk positions / image | steps / image | s/image, batch 1 | s/image, batch 100 | "
          "s / training step | glyph accuracy | fd-glyphs |")
    print("|---|---|---|---|---|---|---|---|---|")
    results, grids = {}, []
    for name, pipeline, sampler, _ in rows:
        generator, size = pipeline.generator, pipeline.tokenizer.image_size[0]
        if size not in real:
            images, _ = GlyphDataset(1000, image_size=size, seed=777).tensors()
            real[size] = to_uint8_chw(images, value_range=(0, 1))
        tokens = draw(pipeline, sampler, labels)
        images = to_images(pipeline, tokens)
        scores = glyph_metrics(images, labels, real[size], classifier)
        steps = steps_per_image(pipeline, sampler)
        positions = generator.prefix_length + steps - 1
        row = {"image_size": size, "tokens_per_image": generator.layout.length, "trunk_positions": positions,
               "steps_per_image": steps, **{key: statistics.median(values) for key, values in timing[name].items()},
               "accuracy": scores["glyph_accuracy"], "fd_glyphs": scores["fd_glyphs"]}
        results[name] = row
        print(f"| {name} ({size} px) | {row['tokens_per_image']} | {positions} | {steps} | "
              f"{row['batch 1'] * 1e3:.0f} ms | {row['batch 100'] * 1e3:.1f} ms | {row['train']:.3f} s | "
              f"{row['accuracy']:.1%} | {row['fd_glyphs']:.3f} |", flush=True)
        if size == 64:
            grids.append(images)
    if args.grid and grids:  # one row per class: 4 samples of each 64 px row, the rows side by side in their order
        picked = [images[klass + 10 * column] for klass in range(10) for images in grids for column in range(4)]
        picture = image_grid(torch.stack(picked).float() / 255, num_rows=10,
                             row_labels=[f"class {klass}" for klass in range(10)])
        picture.save(args.grid)
    if args.json:
        write_file_atomically(args.json, lambda path: path.write_text(json.dumps(results, indent=1)))


if __name__ == "__main__":
    main()
