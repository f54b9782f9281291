"""ControlAR on the glyph pipelines: how closely samples follow held-out control maps, against the base and the
conditional-prefilling baseline.

    python docs/scripts/controlar_toy.py arvis-quickstart/pipeline --control mask \
        "prefill=outputs/controlar-prefill-mask/pipeline" "ControlAR=outputs/controlar-mask/pipeline" \
        --num-samples 500 --grid docs/controlar_mask_grid.png

Held-out data: ``--num-samples`` glyphs rendered with seed 777 (never trained on); sample i is asked for glyph i's
class and, except for the base, its control map (``--control``: ``mask`` or ``edges``, computed from the image by
:mod:`arvis.data.control`). Rows, with each pipeline's stored sampler (guidance and filtering as trained; sample i
seeded by i):

* reconstruction: the tokenizer's reconstruction of the held-out glyphs themselves (the practical ceiling);
* base: the starting pipeline, class only (how well a sample matches a map it never saw: the floor);
* each named pipeline at ``control_strength`` 1.0, and ControlAR (decoding-mode) pipelines also at each of
  ``--strengths``.

Columns: mask IoU or edge F1 against the control (:mod:`arvis.eval.control_metrics`), glyph accuracy and fd-glyphs
(against 1000 other glyphs of seed 777), the sequence length the generator runs, the parameters added to the base,
and seconds per image (``--timing-batches`` batches of 100 per row, the rows taken in turn, the median kept).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

import arvis
from arvis.conditions import Condition
from arvis.data import GlyphDataset
from arvis.data.control import control_map
from arvis.eval.control_metrics import edge_f1, mask_iou
from arvis.eval.glyph_classifier import load_glyph_classifier
from arvis.eval.glyph_metrics import glyph_metrics
from arvis.eval.images import to_uint8_chw
from arvis.folders import write_file_atomically
from arvis.posttrain.controlar import ControlARRaster
from arvis.samplers.logits import per_sample_generators
from arvis.visualize import image_grid

HELD_OUT_SEED = 777
BATCH = 100


def draw(pipeline, labels: torch.Tensor, controls: torch.Tensor | None, strength: float | None) -> torch.Tensor:
    """Images (n, 3, H, W) in [0, 1]: sample i from (labels[i], controls[i]) seeded by i."""
    overrides = {} if strength is None else {"control_strength": strength}
    sampler, images = pipeline.sampler(**overrides), []
    for start in range(0, len(labels), BATCH):
        condition = labels[start:start + BATCH]
        if controls is not None:
            condition = Condition(labels=condition, control=controls[start:start + BATCH])
        count = len(labels[start:start + BATCH])
        tokens = sampler(pipeline.generator, condition, rng=per_sample_generators(0, start, count))
        images.append(pipeline.tokenizer.to_unit_range(pipeline.tokenizer.decode(tokens)).clamp(0, 1))
    return torch.cat(images)


def follows(images: torch.Tensor, controls: torch.Tensor, kind: str) -> float:
    return (mask_iou(images, controls) if kind == "mask" else edge_f1(images, controls)).mean().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base", help="the pipeline ControlAR started from")
    parser.add_argument("runs", nargs="*", help="NAME=PIPELINE of each controlled pipeline")
    parser.add_argument("--control", choices=["mask", "edges"], default="mask")
    parser.add_argument("--num-samples", type=int, default=500)
    parser.add_argument("--strengths", type=float, nargs="*", default=[0.6])
    parser.add_argument("--timing-batches", type=int, default=3)
    parser.add_argument("--grid", help="write a (real | control | one sample per row) grid of 8 held-out glyphs here")
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_intermixed_args()
    torch.set_grad_enabled(False)
    torch.manual_seed(0)
    base = arvis.load(args.base)
    size = base.tokenizer.image_size[0]
    held_out = GlyphDataset(args.num_samples + 1000, image_size=size, seed=HELD_OUT_SEED)
    images, labels = held_out.tensors()
    images, real, labels = images[:args.num_samples], images[args.num_samples:], labels[:args.num_samples]
    controls = control_map(images, args.control)
    real = to_uint8_chw(real, value_range=(0, 1))
    classifier = load_glyph_classifier()
    if any("=" not in run for run in args.runs):
        parser.error("give each controlled pipeline as NAME=PIPELINE_DIR")
    rows = [("base", base, None)]
    for name, path in (run.split("=", 1) for run in args.runs):
        pipeline = arvis.load(path)
        if not isinstance(pipeline.generator, ControlARRaster):
            parser.error(f"{path} is not a ControlAR pipeline")
        strengths = [1.0, *args.strengths] if pipeline.generator.config.mode == "decoding" else [1.0]
        rows += [(f"{name} @ {strength:g}", pipeline, strength) for strength in strengths]

    reconstruction = base.tokenizer.to_unit_range(base.tokenizer.decode(base.tokenizer.encode(
        base.tokenizer.from_unit_range(images)))).clamp(0, 1)
    metric = "mask IoU" if args.control == "mask" else "edge F1"
    print(f"| row | {metric} | glyph accuracy | fd-glyphs | sequence | added parameters | s/image |")
    print("|---|---|---|---|---|---|---|")
    recon = glyph_metrics(to_uint8_chw(reconstruction, value_range=(0, 1)), labels, real, classifier)
    print(f"| reconstruction (ceiling) | {follows(reconstruction, controls, args.control):.3f} | "
          f"{recon['glyph_accuracy']:.1%} | {recon['fd_glyphs']:.3f} | | | |", flush=True)

    seconds: dict[str, list[float]] = {name: [] for name, _, _ in rows}
    for _, pipeline, strength in rows:  # warm-up
        draw(pipeline, labels[:8], controls[:8] if strength is not None else None, strength)
    for _ in range(args.timing_batches):  # the rows in turn, so each sees the same machine load
        for name, pipeline, strength in rows:
            count = min(BATCH, args.num_samples)
            started = time.perf_counter()
            draw(pipeline, labels[:count], controls[:count] if strength is not None else None, strength)
            seconds[name].append((time.perf_counter() - started) / count)

    results, samples = {}, {}
    for name, pipeline, strength in rows:
        generated = draw(pipeline, labels, controls if strength is not None else None, strength)
        samples[name] = generated[:8]
        scores = glyph_metrics(to_uint8_chw(generated, value_range=(0, 1)), labels, real, classifier)
        generator = pipeline.generator
        added = generator.added_parameters() if isinstance(generator, ControlARRaster) else 0
        length = generator.prefix_length + generator.layout.length - 1
        row = {"follows": follows(generated, controls, args.control), "accuracy": scores["glyph_accuracy"],
               "fd_glyphs": scores["fd_glyphs"], "sequence": length, "added_parameters": added,
               "seconds_per_image": statistics.median(seconds[name])}
        results[name] = row
        print(f"| {name} | {row['follows']:.3f} | {row['accuracy']:.1%} | {row['fd_glyphs']:.3f} | {length} | "
              f"{added / 1e3:.0f}k | {row['seconds_per_image'] * 1e3:.1f} ms |", flush=True)
    if args.grid:
        shown = [images[:8], controls[:8].expand(-1, 3, -1, -1), *samples.values()]
        columns = torch.stack(shown, dim=1).flatten(0, 1)  # row i: real, control, then each row's sample i
        image_grid(columns, 8, scale=3).save(args.grid)
        print(f"grid columns: real, control, {', '.join(samples)}")
    if args.json:
        write_file_atomically(args.json, lambda path: path.write_text(json.dumps(results, indent=1)))


if __name__ == "__main__":
    main()
