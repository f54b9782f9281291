"""Text-to-image on glyph captions: do the samples show what their prompts say?

    python docs/scripts/text_to_image_toy.py outputs/t2i-glyphs/pipeline --num-samples 500 \
        --grid docs/t2i_glyphs_samples.png

The prompts are the captions of held-out glyphs (dataset seed 12345), one sample each (sample i seeded by
(0, i)). Each sample is scored against the caption it was generated from ("matching") and against the caption
of another sample (the captions rolled by one: "shuffled", the chance level of each attribute under the
caption distribution):
    * glyph accuracy: the shipped glyph classifier finds the caption's class;
    * colour, size, position: :func:`arvis.eval.glyph_attributes.measure_attributes` on the sample's foreground,
      in the caption bins;
    * all: class and all three attributes at once.
The real held-out glyphs scored the same way give each measure's ceiling. fd-glyphs is against 1000 rendered
glyphs (seed 777). ``--grid`` saves 4 samples for each of the first 8 prompts, one row per prompt.
"""

from __future__ import annotations

import argparse
import json

import torch

import arvis
from arvis.data import GlyphDataset
from arvis.eval.glyph_attributes import ATTRIBUTES, caption_attributes, measure_attributes
from arvis.eval.glyph_classifier import load_glyph_classifier
from arvis.eval.glyph_metrics import glyph_features, glyph_metrics
from arvis.eval.images import to_uint8_chw
from arvis.visualize import image_grid


def scores(images: torch.Tensor, labels: torch.Tensor, named: dict[str, torch.Tensor], classifier) -> dict:
    """images (n, 3, h, w) in [0, 1] against the classes and attribute bins they should show."""
    _, logits = glyph_features(to_uint8_chw(images, value_range=(0, 1)), classifier)
    correct = {"glyph accuracy": logits.argmax(1) == labels}
    measured = measure_attributes(images, labels)
    for attribute in ATTRIBUTES:
        correct[attribute] = measured[attribute] == named[attribute]
    correct["all"] = torch.stack(list(correct.values())).all(0)
    return {name: round(value.float().mean().item(), 4) for name, value in correct.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pipeline")
    parser.add_argument("--num-samples", type=int, default=500)
    parser.add_argument("--grid", default=None)
    args = parser.parse_args()
    pipeline = arvis.load(args.pipeline)
    size = pipeline.tokenizer.image_size[0]
    held_out = GlyphDataset(args.num_samples, image_size=size, seed=12345)
    captions = [held_out.caption(index) for index in range(len(held_out))]
    real_images, labels = held_out.tensors()
    named = caption_attributes(labels, [held_out.params(index) for index in range(len(held_out))])
    shuffled = {name: value.roll(1) for name, value in named.items()}
    classifier = load_glyph_classifier()
    samples = arvis.generate(pipeline, prompts=captions, seed=0, output_type="pt", batch_size=100, progress=True)
    reference = to_uint8_chw(GlyphDataset(1000, image_size=size, seed=777).tensors()[0], value_range=(0, 1))
    rows = {
        "real held-out glyphs (the measures' ceiling)": scores(real_images, labels, named, classifier),
        "samples vs their own captions": scores(samples, labels, named, classifier),
        "samples vs shuffled captions": scores(samples, labels.roll(1), shuffled, classifier),
    }
    fd = glyph_metrics(to_uint8_chw(samples, value_range=(0, 1)), labels, reference, classifier)["fd_glyphs"]
    print(json.dumps({"rows": rows, "fd_glyphs": round(fd, 3), "num_samples": args.num_samples}, indent=2))
    if args.grid:
        shown = captions[:8]
        grid = arvis.generate(pipeline, prompts=shown, num_samples=4, seed=0, output_type="pt")
        image_grid(grid, len(shown), scale=3).save(args.grid)
        print(json.dumps({"grid": args.grid, "prompts": shown}))


if __name__ == "__main__":
    main()
