"""SAR on the VAR glyph pipeline: free-running quality and the exposure-bias gap, SAR against teacher forcing alone.

    python docs/scripts/sar_toy.py outputs/sar/step-600/pipeline \
        "SAR=outputs/sar/sar-0/pipeline,outputs/sar/sar-1/pipeline,outputs/sar/sar-2/pipeline" \
        "TF only=outputs/sar/tf-0/pipeline,outputs/sar/tf-1/pipeline,outputs/sar/tf-2/pipeline"

The first pipeline is the step-600 checkpoint both branches resumed from, exported by a run that resumes it and
trains no step (``run.max_steps=600``).

Rows: that pipeline and each branch, its seeds' pipelines comma-separated, as mean ± sd over the seeds. Every
pipeline samples ``--num-samples`` images with its stored sampler (balanced classes, sample i seeded by i), scored
by fd-glyphs and glyph accuracy against 1000 rendered glyphs (seed 777).
On 1000 other held-out glyphs (seed 778, never trained on) the generator's cross-entropy against the ground truth
at the last scale is measured twice, in eval mode:

* TF CE: teacher forcing (every earlier scale the ground truth's);
* SF CE: the last scale's input rolled out from the model's own argmax at the scale before (SAR's ``rollout=last``
  student pass), so SF − TF is the exposure-bias gap of that step.
"""

from __future__ import annotations

import argparse
import statistics

import torch
import torch.nn.functional as F

import arvis
from arvis.data import GlyphDataset
from arvis.eval.glyph_classifier import load_glyph_classifier
from arvis.eval.glyph_metrics import glyph_metrics
from arvis.eval.images import sample_pipeline, to_uint8_chw
from arvis.posttrain.sar.objective import rolled_scales


@torch.no_grad()
def held_out_cross_entropies(pipeline, images: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    """-> (TF CE, SF CE) at the last scale over the held-out glyphs, in nats."""
    generator, tokenizer = pipeline.generator.eval(), pipeline.tokenizer
    tokens = tokenizer.encode(tokenizer.from_unit_range(images))
    last = slice(generator.layout.length - generator.unit_lengths()[-1], generator.layout.length)
    teacher = generator(tokens, labels).logits
    inputs = generator.student_forcing_inputs(tokens, teacher.argmax(-1),
                                              rolled_scales("last", len(generator.unit_lengths())))
    student = generator(inputs, labels, tokens).logits
    return tuple(F.cross_entropy(logits[:, last].flatten(0, 1), tokens[:, last].flatten()).item()
                 for logits in (teacher, student))


def score(path: str, args, real: torch.Tensor, held_out: tuple[torch.Tensor, torch.Tensor], classifier) -> dict:
    pipeline = arvis.load(path)
    samples = sample_pipeline(pipeline, num_samples=args.num_samples, seed=0, batch_size=100)
    metrics = glyph_metrics(samples.tensor(), samples.labels, real, classifier)
    teacher_ce, student_ce = held_out_cross_entropies(pipeline, *held_out)
    return {"fd": metrics["fd_glyphs"], "accuracy": metrics["glyph_accuracy"], "tf_ce": teacher_ce,
            "sf_ce": student_ce, "gap": student_ce - teacher_ce}


def summary(values: list[float], digits: int, percent: bool = False) -> str:
    scale = 100 if percent else 1
    mean = statistics.fmean(values) * scale
    if len(values) < 2:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {statistics.stdev(values) * scale:.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("start", help="the pipeline both branches resumed from")
    parser.add_argument("branches", nargs="+", help="NAME=PIPELINE[,PIPELINE...] of each branch's seeds")
    parser.add_argument("--num-samples", type=int, default=500)
    args = parser.parse_args()
    if any("=" not in branch for branch in args.branches):
        parser.error("give each branch as NAME=PIPELINE,PIPELINE,...")
    torch.set_grad_enabled(False)
    start = arvis.load(args.start)
    size = start.tokenizer.image_size[0]
    real, _ = GlyphDataset(1000, image_size=size, seed=777).tensors()
    real = to_uint8_chw(real, value_range=(0, 1))
    held_out = GlyphDataset(1000, image_size=size, seed=778).tensors()
    classifier = load_glyph_classifier()
    rows = [("start (step 600)", [args.start])]
    rows += [(name, paths.split(",")) for name, paths in (branch.split("=", 1) for branch in args.branches)]
    print("| row | seeds | fd-glyphs | glyph accuracy | held-out TF CE | held-out SF CE | SF − TF |")
    print("|---|---|---|---|---|---|---|")
    for name, paths in rows:
        scores = [score(path, args, real, held_out, classifier) for path in paths]
        column = {key: [s[key] for s in scores] for key in scores[0]}
        print(f"| {name} | {len(paths)} | {summary(column['fd'], 3)} | {summary(column['accuracy'], 1, True)}% | "
              f"{summary(column['tf_ce'], 4)} | {summary(column['sf_ce'], 4)} | {summary(column['gap'], 4)} |",
              flush=True)


if __name__ == "__main__":
    main()
