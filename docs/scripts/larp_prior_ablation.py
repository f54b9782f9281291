"""LARP with versus without its AR prior on the built-in moving glyphs.

    python docs/scripts/larp_prior_ablation.py \\
        "with prior" outputs/larp-demo/tokenizer outputs/larp-demo/pipeline \\
        "without prior" outputs/larp-demo-noprior/tokenizer outputs/larp-demo-noprior/pipeline

For each (name, tokenizer, pipeline): reconstruction error of 256 held-out clips (dataset seed 12345,
pixels in [0, 1]) and the clip accuracy of those reconstructions (whether the glyph's shape survives); the pipeline generator's teacher-forced cross-entropy on those clips' tokens (how
easy the tokens are to model); and ``--num-samples`` generated clips (balanced classes, seed 0, the
pipeline's sampling settings) scored with fd-glyph-clips and clip accuracy against 500 real clips
(seed 777). fd-glyph-clips is arvis's built-in glyph-feature distance, not FVD.
"""

from __future__ import annotations

import argparse
import time

import torch

import arvis
from arvis.data import MovingGlyphDataset
from arvis.eval.glyph_classifier import load_glyph_classifier
from arvis.eval.glyph_clip_metrics import clip_features, glyph_clip_metrics
from arvis.tokenizers.base import Tokenizer


def as_uint8(clips: torch.Tensor) -> torch.Tensor:
    return (clips.clamp(0, 1) * 255).round().to(torch.uint8)


@torch.inference_mode()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="triples: name tokenizer_dir pipeline_dir")
    parser.add_argument("--num-samples", type=int, default=200)
    args = parser.parse_args()
    if len(args.runs) % 3:
        raise SystemExit("give runs as triples: name tokenizer_dir pipeline_dir")
    print("| run | recon. L1 | recon. MSE | recon. clip accuracy | AR cross-entropy on held-out tokens (nats) | "
          "s / clip | fd-glyph-clips | clip accuracy |")
    print("|---|---|---|---|---|---|---|---|")
    for name, tokenizer_dir, pipeline_dir in zip(*[iter(args.runs)] * 3, strict=True):
        tokenizer = Tokenizer.from_pretrained(tokenizer_dir).eval()
        frames, size = tokenizer.pixel_shape[1], tokenizer.image_size[0]
        held_out, held_labels = MovingGlyphDataset(256, image_size=size, num_frames=frames, seed=12345).tensors()
        real, _ = MovingGlyphDataset(500, image_size=size, num_frames=frames, seed=777).tensors()
        tokens = tokenizer.encode(tokenizer.from_unit_range(held_out))
        reconstruction = tokenizer.to_unit_range(tokenizer.decode(tokens))
        l1 = (reconstruction - held_out).abs().mean().item()
        mse = (reconstruction - held_out).pow(2).mean().item()
        _, reconstruction_logits = clip_features(as_uint8(reconstruction), load_glyph_classifier())
        reconstruction_accuracy = (reconstruction_logits.argmax(dim=1) == held_labels).double().mean().item()
        pipeline = arvis.load(pipeline_dir)
        cross_entropy = pipeline.generator(tokens, held_labels).loss.item()
        labels = list(range(10))
        start = time.perf_counter()
        samples = arvis.generate(pipeline, labels, num_samples=args.num_samples // 10, seed=0, output_type="pt",
                                 batch_size=100)
        seconds = (time.perf_counter() - start) / len(samples)
        sample_labels = torch.tensor(labels).repeat_interleave(args.num_samples // 10)
        metrics = glyph_clip_metrics(as_uint8(samples), sample_labels, as_uint8(real))
        print(f"| {name} | {l1:.4f} | {mse:.4f} | {reconstruction_accuracy:.1%} | {cross_entropy:.3f} | {seconds:.4f} | "
              f"{metrics['fd_glyph_clips']:.3f} | {metrics['clip_accuracy']:.1%} |")


if __name__ == "__main__":
    main()
