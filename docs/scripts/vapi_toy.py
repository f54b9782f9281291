"""VA-π on the glyph pipelines: the starting pipeline against its post-trained versions, on held-out glyphs.

    python docs/scripts/vapi_toy.py arvis-quickstart/pipeline \
        "ξ 0.5, β 0.1=outputs/vapi-quickstart/pipeline" "CE only=outputs/vapi-ce/pipeline" --num-samples 500

Columns, per pipeline (the same held-out glyphs and seeds for every row):
    * fd-glyphs and glyph accuracy of ``--num-samples`` samples (balanced classes, sample i seeded by i) with the
      pipeline's sampler at CFG 1.0 (unguided) and 2.0, scored against 1000 rendered glyphs (seed 777);
      ``--sample-seed`` draws other samples, to see the spread of these two metrics;
    * held-out reward: −MSE in [-1, 1] of the tokenizer's decoding of 8 per-position draws from one teacher-forced
      pass on the clean ground truth of ``--held-out`` glyphs (seed 777), as VA-π's reward is computed in training;
    * held-out NLL: the cross-entropy (nats per token) of those ground-truth ids under teacher forcing;
    * entropy: the mean per-token entropy (nats) of those teacher-forced distributions.
The ground-truth ids' own reward (the tokenizer's reconstruction) is printed first: a practical ceiling of the
held-out reward.
"""

from __future__ import annotations

import argparse
import json
import tempfile

import torch
from torch.utils.data import DataLoader

import arvis
from arvis.data import GlyphDataset
from arvis.eval.glyph_classifier import load_glyph_classifier
from arvis.eval.glyph_metrics import glyph_metrics
from arvis.eval.images import to_uint8_chw
from arvis.folders import write_file_atomically
from arvis.posttrain.vapi import VAPi, VAPiConfig
from arvis.posttrain.vapi.data import ImagesWithTokens
from arvis.posttrain.vapi.objective import draw_per_position
from arvis.samplers.logits import per_sample_generators

HELD_OUT_SEED = 777


def held_out_scores(pipeline, held_out: ImagesWithTokens, scorer: VAPi) -> dict[str, float]:
    """Held-out reward, ground-truth NLL and per-token entropy of a pipeline's generator (no context noise)."""
    generator = pipeline.generator
    rewards, nll, entropy, count = [], 0.0, 0.0, 0
    rng = torch.Generator().manual_seed(0)
    for batch in DataLoader(held_out, batch_size=100):
        pixels, tokens, condition = ImagesWithTokens.split(batch)
        output = generator(tokens, condition, targets=tokens)
        log_probs = output.logits.log_softmax(-1)
        samples = draw_per_position(log_probs, 8, rng)
        mse, _ = scorer.sample_costs(generator, samples, pixels)
        rewards.append(-mse.flatten())
        nll += output.loss.item() * len(tokens)
        entropy += -(log_probs.exp() * log_probs).sum(-1).mean().item() * len(tokens)
        count += len(tokens)
    return {"held_out_reward": torch.cat(rewards).mean().item(), "held_out_nll": nll / count,
            "entropy": entropy / count}


def ground_truth_reward(held_out: ImagesWithTokens, scorer: VAPi, pipeline) -> float:
    """−MSE of the tokenizer's reconstruction from the ground-truth ids: a practical ceiling of the reward (the
    nearest codes, not necessarily the ids whose decoding is closest)."""
    costs = [scorer.sample_costs(pipeline.generator, tokens[:, None], pixels)[0]
             for pixels, tokens, _ in map(ImagesWithTokens.split, DataLoader(held_out, batch_size=100))]
    return -torch.cat(costs).mean().item()


def sample_scores(pipeline, labels: torch.Tensor, real: torch.Tensor, classifier, cfg_scale: float,
                  seed: int = 0) -> dict:
    sampler, images = pipeline.sampler(cfg_scale=cfg_scale), []
    for start in range(0, len(labels), 100):
        batch = labels[start:start + 100]
        tokens = sampler(pipeline.generator, batch, rng=per_sample_generators(seed, start, len(batch)))
        images.append(pipeline.tokenizer.to_unit_range(pipeline.tokenizer.decode(tokens)).clamp(0, 1))
    return glyph_metrics(to_uint8_chw(torch.cat(images), value_range=(0, 1)), labels, real, classifier)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("start", help="the pipeline VA-π started from")
    parser.add_argument("runs", nargs="*", help="NAME=PIPELINE of each post-trained pipeline")
    parser.add_argument("--num-samples", type=int, default=500)
    parser.add_argument("--held-out", type=int, default=1000)
    parser.add_argument("--sample-seed", type=int, default=0, help="the samples' seed (to see the metrics' spread)")
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    start = arvis.load(args.start)
    size = start.tokenizer.image_size[0]
    config = VAPiConfig.from_dict({"data": {"image_size": size, "num_samples": args.held_out,
                                            "seed": HELD_OUT_SEED}})
    with tempfile.TemporaryDirectory() as unused:
        scorer = VAPi(config, start, pipeline_path=args.start, output_dir=unused)
        held_out = scorer.prepare_data(argparse.Namespace(device=torch.device("cpu")))
    real, _ = GlyphDataset(1000, image_size=size, seed=HELD_OUT_SEED).tensors()
    real = to_uint8_chw(real, value_range=(0, 1))
    classifier = load_glyph_classifier()
    labels = torch.arange(args.num_samples) % start.generator.num_classes
    if any("=" not in run for run in args.runs):
        parser.error("give each post-trained pipeline as NAME=PIPELINE_DIR")
    rows = {"start": args.start, **dict(run.split("=", 1) for run in args.runs)}
    ceiling = ground_truth_reward(held_out, scorer, start)
    print(f"the ground-truth ids themselves score a held-out reward of {ceiling:.4f}")
    print("| pipeline | fd-glyphs, CFG 1 | accuracy, CFG 1 | fd-glyphs, CFG 2 | accuracy, CFG 2 | held-out reward "
          "| held-out NLL | entropy |")
    print("|---|---|---|---|---|---|---|---|")
    results = {}
    for name, path in rows.items():
        pipeline = start if path == args.start else arvis.load(path)
        row = held_out_scores(pipeline, held_out, scorer)
        for cfg in (1.0, 2.0):
            metrics = sample_scores(pipeline, labels, real, classifier, cfg, args.sample_seed)
            row[f"fd_glyphs_cfg{cfg:g}"], row[f"accuracy_cfg{cfg:g}"] = metrics["fd_glyphs"], metrics["glyph_accuracy"]
        results[name] = row
        print(f"| {name} | {row['fd_glyphs_cfg1']:.3f} | {row['accuracy_cfg1']:.1%} | {row['fd_glyphs_cfg2']:.3f} | "
              f"{row['accuracy_cfg2']:.1%} | {row['held_out_reward']:.4f} | {row['held_out_nll']:.4f} | "
              f"{row['entropy']:.4f} |", flush=True)
    if args.json:
        write_file_atomically(args.json, lambda path: path.write_text(json.dumps(results, indent=1)))


if __name__ == "__main__":
    main()
