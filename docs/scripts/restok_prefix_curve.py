"""Reconstruction error of a trained ResTok tokenizer when decoding only the first k tokens.

    python docs/scripts/restok_prefix_curve.py outputs/restok-demo/tokenizer [--grid docs/restok_prefixes.png]

Held-out glyphs (256, dataset seed 12345) at the tokenizer's size; MSE in [0, 1] pixels and the
glyph accuracy of the reconstructions, for every allowed prefix length k. ``--grid`` also writes the
first 10 held-out glyphs (top row) and their reconstructions from k = 1, 2, 4, ... tokens (one row each).
"""

from __future__ import annotations

import argparse

import torch

from arvis.data import GlyphDataset
from arvis.eval.glyph_classifier import load_glyph_classifier
from arvis.eval.glyph_metrics import glyph_features
from arvis.eval.images import to_uint8_chw
from arvis.tokenizers.base import Tokenizer
from arvis.visualize import image_grid


@torch.inference_mode()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tokenizer")
    parser.add_argument("--grid", default=None, help="also write a PNG of reconstructions per prefix length")
    args = parser.parse_args()
    tokenizer = Tokenizer.from_pretrained(args.tokenizer).eval()
    images, labels = GlyphDataset(256, image_size=tokenizer.image_size[0], seed=12345).tensors()
    tokens = tokenizer.encode(tokenizer.from_unit_range(images))
    classifier = load_glyph_classifier()
    print("| tokens kept (k) | MSE, [0, 1] pixels | glyph accuracy of reconstructions |\n|---|---|---|")
    rows = [images[:10]]
    for k in tokenizer.prefix_lengths:
        reconstruction = tokenizer.to_unit_range(tokenizer.decode(tokens[:, :k])).clamp(0, 1)
        rows.append(reconstruction[:10])
        mse = (reconstruction - images).pow(2).mean().item()
        _, logits = glyph_features(to_uint8_chw(reconstruction, value_range=(0, 1)), classifier)
        accuracy = (logits.argmax(-1) == labels).float().mean().item()
        print(f"| {k} | {mse:.5f} | {accuracy:.1%} |")
    if args.grid:
        labels = ["input"] + [f"k={k}" for k in tokenizer.prefix_lengths]
        image_grid(torch.cat(rows), len(rows), scale=2, row_labels=labels).save(args.grid)


if __name__ == "__main__":
    main()
