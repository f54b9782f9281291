"""Orthus on glyph captions: continuous image tokens against the same trunk's discrete ones, both directions.

    python docs/scripts/orthus_toy.py outputs/orthus/discrete/pipeline outputs/orthus/base/pipeline \
        outputs/orthus/unified/pipeline --num-samples 200 --document docs/orthus_interleaved.png

For each pipeline (labelled by its generator and stage):
    * caption -> image: the captions of held-out glyphs (dataset seed 12345), one sample each (sample i seeded
      by (0, i)), scored as in ``text_to_image_toy.py`` (glyph classifier; colour, size and position measured
      from the foreground into the caption's bins; all four at once) and fd-glyphs against 1000 rendered glyphs;
    * image -> caption: the held-out glyphs captioned (seed 0); each attribute word (class, colour, size,
      position) compared with the true caption's, and the whole caption;
    * s/image: caption -> image and image -> caption of ``--timed`` images in one batch, wall time per image, the
      pipelines timed in turn over two rounds (interleaved, same process), the faster round kept.
``--document`` draws one interleaved document (text, image, text, image) from the last pipeline for each of 3
prompts and saves them as one PNG, one document per row.
"""

from __future__ import annotations

import argparse
import json
import textwrap
import time

import torch
from PIL import Image, ImageDraw

import arvis
from arvis.data import GlyphDataset
from arvis.data.captions import CLASS_WORDS, HUE_NAMES, SIZE_NAMES
from arvis.eval.glyph_classifier import load_glyph_classifier
from arvis.eval.glyph_metrics import glyph_metrics
from arvis.eval.images import to_uint8_chw
from arvis.eval.glyph_attributes import caption_attributes
from text_to_image_toy import scores

CAPTION_PARTS = ("class", "colour", "size", "position")


def caption_parts(text: str) -> dict[str, str]:
    """A glyph caption's attribute words: "a small red ring at the top left" -> class "ring", colour "red", size
    "small", position "at the top left" ("" where a part is missing)."""
    words = text.split()
    parts = {"size": next((word for word in words if word in SIZE_NAMES), ""),
             "colour": next((word for word in words if word in HUE_NAMES), ""),
             "class": next((name for name in sorted(CLASS_WORDS, key=len, reverse=True) if f" {name} " in f" {text} "),
                           "")}
    parts["position"] = next((text[text.index(marker):] for marker in ("at the ", "in the ") if marker in text), "")
    return parts


def caption_scores(generated: list[str], truth: list[str]) -> dict[str, float]:
    matches = {part: [] for part in CAPTION_PARTS}
    for text, true in zip(generated, truth, strict=True):
        ours, theirs = caption_parts(text), caption_parts(true)
        for part in CAPTION_PARTS:
            matches[part].append(ours[part] == theirs[part] and ours[part] != "")
    result = {part: round(sum(values) / len(values), 4) for part, values in matches.items()}
    result["whole caption"] = round(sum(a == b for a, b in zip(generated, truth, strict=True)) / len(truth), 4)
    return result


def label_of(pipeline) -> str:
    generator = type(pipeline.generator).__name__
    return f"{generator} ({pipeline.sampler_name})"


def document_png(documents: list[list], path: str, scale: int = 4) -> None:
    """Documents (lists of strings and PIL images) -> one PNG, a row per document: images upscaled, each text
    segment in a box before the image that follows it."""
    text_width, size = 260, documents[0][[isinstance(p, Image.Image) for p in documents[0]].index(True)].size[0] * scale
    rows = []
    for document in documents:
        width = sum(size if isinstance(part, Image.Image) else text_width for part in document) + 8 * len(document)
        row = Image.new("RGB", (width, size + 8), "white")
        draw, x = ImageDraw.Draw(row), 4
        for part in document:
            if isinstance(part, Image.Image):
                row.paste(part.resize((size, size), Image.NEAREST), (x, 4))
                x += size + 8
            else:
                draw.multiline_text((x + 4, 8), "\n".join(textwrap.wrap(part, 34)), fill="black")
                x += text_width + 8
        rows.append(row)
    canvas = Image.new("RGB", (max(row.width for row in rows), sum(row.height for row in rows)), "white")
    y = 0
    for row in rows:
        canvas.paste(row, (0, y))
        y += row.height
    canvas.save(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pipelines", nargs="+")
    parser.add_argument("--num-samples", type=int, default=200)
    parser.add_argument("--document", default=None)
    parser.add_argument("--timed", type=int, default=100, help="images per timed batch")
    args = parser.parse_args()
    torch.set_num_threads(2)
    classifier = load_glyph_classifier()
    results = []
    for path in args.pipelines:
        pipeline = arvis.load(path)
        size = pipeline.tokenizer.image_size[0]
        held_out = GlyphDataset(args.num_samples, image_size=size, seed=12345)
        captions = [held_out.caption(index) for index in range(len(held_out))]
        real_images, labels = held_out.tensors()
        named = caption_attributes(labels, [held_out.params(index) for index in range(len(held_out))])
        reference = to_uint8_chw(GlyphDataset(1000, image_size=size, seed=777).tensors()[0], value_range=(0, 1))
        samples = arvis.generate(pipeline, prompts=captions, seed=0, output_type="pt", batch_size=100)
        written = arvis.caption(pipeline, real_images, seed=0, batch_size=100)
        fd = glyph_metrics(to_uint8_chw(samples, value_range=(0, 1)), labels, reference, classifier)["fd_glyphs"]
        results.append({"pipeline": path, "model": label_of(pipeline),
                        "caption -> image": scores(samples, labels, named, classifier), "fd_glyphs": round(fd, 3),
                        "image -> caption": caption_scores(written, captions),
                        "example captions": [f"{true} -> {ours}" for true, ours in zip(captions[:3], written[:3], strict=True)]})
        print(json.dumps(results[-1], indent=2), flush=True)
    timings = {path: {"s/image (caption -> image)": [], "s/caption (image -> caption)": []}
               for path in args.pipelines}
    loaded = {path: arvis.load(path) for path in args.pipelines}
    held_out = GlyphDataset(args.timed, image_size=size, seed=12345)
    prompts = [held_out.caption(index) for index in range(args.timed)]
    for _ in range(2):  # interleaved rounds
        for path, pipeline in loaded.items():
            start = time.perf_counter()
            arvis.generate(pipeline, prompts=prompts, seed=0, output_type="pt", batch_size=args.timed)
            timings[path]["s/image (caption -> image)"].append((time.perf_counter() - start) / args.timed)
            start = time.perf_counter()
            arvis.caption(pipeline, held_out.tensors()[0], seed=0, batch_size=args.timed)
            timings[path]["s/caption (image -> caption)"].append((time.perf_counter() - start) / args.timed)
    print(json.dumps({"timed batch": args.timed, "seconds (faster of two interleaved rounds)": {
        path: {name: round(min(values), 4) for name, values in entry.items()} for path, entry in timings.items()}},
        indent=2))
    if args.document:
        pipeline = arvis.load(args.pipelines[-1])
        prompts = [GlyphDataset(3, image_size=pipeline.tokenizer.image_size[0], seed=4242).caption(i) for i in range(3)]
        documents = arvis.interleave(pipeline, prompts, images=2, seed=0)
        documents = [[prompt, *document] for prompt, document in zip(prompts, documents, strict=True)]
        document_png(documents, args.document)
        print(json.dumps({"document": args.document, "parts": [[part if isinstance(part, str) else "<image>"
                                                                 for part in document] for document in documents]}))


if __name__ == "__main__":
    main()
