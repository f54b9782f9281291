"""Which LARP losses wipe the glyph's shape out of the codes once the continuous warm-up ends.

    python docs/scripts/larp_warmup_probe.py --warmup-steps 1500 --steps 500

Trains the 4-frame ``larp-demo`` tokenizer (L2 pixel loss, batch 32, lr 1e-3, the prior at 5x) as a plain
autoencoder for ``--warmup-steps`` (the ``continuous_warmup`` phase: the decoder reads the continuous latents,
the codebook and prior follow the detached latents, LARP's weights with LlamaGen's entropy loss at 0.1).
From that state each variant then trains ``--steps`` more through the codes with its own loss weights (fresh
optimizer, same batches). Prints, on 200 held-out clips (seed 12345), the pixel MSE and the glyph
classifier's accuracy of the reconstructions from the codes (real clips: 100%, chance: 10%) and how many
codes they use; the "continue warm-up" row keeps training on the continuous latents (still scored from
the codes), for reference.
About 7 minutes for the warm-up and 2.5 minutes per variant on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import torch
import torch.nn.functional as F

from arvis.data import MovingGlyphDataset
from arvis.eval.glyph_classifier import load_glyph_classifier
from arvis.eval.glyph_clip_metrics import clip_features
from arvis.registry import ensure_registered
from arvis.tokenizers.base import TOKENIZERS
from arvis.tokenizers.larp import LARPTokenizer

WARMUP_WEIGHTS = dict(entropy_loss_ratio=0.1, vq_weight=0.1, prior_weight=0.06)
VARIANTS = {  # name: (training progress after the warm-up, loss weights)
    "continue warm-up (continuous latents)": (0.0, WARMUP_WEIGHTS),
    "LARP weights + entropy 0.1": (0.9, WARMUP_WEIGHTS),
    "LARP weights, no entropy loss": (0.9, dict(entropy_loss_ratio=0.0, vq_weight=0.1, prior_weight=0.06)),
    "prior 0.06 only": (0.9, dict(entropy_loss_ratio=0.0, vq_weight=0.0, prior_weight=0.06)),
    "VQ 0.1 only": (0.9, dict(entropy_loss_ratio=0.0, vq_weight=0.1, prior_weight=0.0)),
    "reconstruction only (straight-through)": (0.9, dict(entropy_loss_ratio=0.0, vq_weight=0.0, prior_weight=0.0)),
    "all a tenth (entropy 0.01, VQ 0.01, prior 0.006)": (
        0.9, dict(entropy_loss_ratio=0.01, vq_weight=0.01, prior_weight=0.006)),
}


def make_optimizer(model: LARPTokenizer, lr: float) -> torch.optim.Optimizer:
    named = list(model.named_parameters())
    groups = [{"params": [p for n, p in named if not n.startswith("prior.")], "lr": lr},
              {"params": [p for n, p in named if n.startswith("prior.")], "lr": lr * 5}]
    return torch.optim.AdamW(groups, betas=(0.9, 0.95), weight_decay=0.0)


def train(model: LARPTokenizer, clips: torch.Tensor, steps: int, progress: float | None, seed: int) -> None:
    """``progress`` None sweeps training progress 0 -> 1 (the warm-up has it below ``continuous_warmup``)."""
    optimizer = make_optimizer(model, 1e-3)
    batches = torch.Generator().manual_seed(seed)
    model.train()
    for step in range(1, steps + 1):
        for group in optimizer.param_groups:
            group["lr"] = group.setdefault("base_lr", group["lr"]) * min(1.0, step / 100)
        model.set_training_progress(step / steps if progress is None else progress)
        batch = clips[torch.randint(0, len(clips), (32,), generator=batches)]
        output = model(batch)
        loss = F.mse_loss(output.reconstruction, batch) + sum(output.losses.values())
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()


@torch.no_grad()
def evaluate(model: LARPTokenizer, clips: torch.Tensor, labels: torch.Tensor, classifier) -> tuple[float, float, int]:
    model.eval()
    tokens = model.encode(clips)
    reconstruction = model.decode(tokens).clamp(0, 1)
    _, logits = clip_features((reconstruction * 255).round().to(torch.uint8), classifier)
    accuracy = (logits.argmax(1) == labels).float().mean().item()
    return (reconstruction - clips).pow(2).mean().item(), accuracy, tokens.unique().numel()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--warmup-steps", type=int, default=1500)
    parser.add_argument("--steps", type=int, default=500)
    args = parser.parse_args()
    ensure_registered()
    torch.manual_seed(0)
    base = dataclasses.replace(TOKENIZERS.preset("larp-demo"), num_frames=4, prior_lr_multiplier=5.0,
                               continuous_warmup=0.5, **WARMUP_WEIGHTS)
    clips, _ = MovingGlyphDataset(8000, image_size=32, num_frames=4, seed=0).tensors()
    held_out, labels = MovingGlyphDataset(200, image_size=32, num_frames=4, seed=12345).tensors()
    classifier = load_glyph_classifier()

    start = time.time()
    warm = LARPTokenizer(base)
    train(warm, clips, args.warmup_steps, progress=0.0, seed=0)
    mse, accuracy, used = evaluate(warm, held_out, labels, classifier)
    print(f"after {args.warmup_steps} warm-up steps ({time.time() - start:.0f} s): codes MSE {mse:.4f}, "
          f"accuracy {accuracy:.0%}, {used} codes in use\n")
    print(f"| {args.steps} more steps | held-out MSE | recon. clip accuracy | codes in use |")
    print("|---|---|---|---|")
    for name, (progress, weights) in VARIANTS.items():
        torch.manual_seed(1)
        model = LARPTokenizer(dataclasses.replace(base, **weights))
        model.load_state_dict(warm.state_dict())
        train(model, clips, args.steps, progress=progress, seed=1)
        mse, accuracy, used = evaluate(model, held_out, labels, classifier)
        print(f"| {name} | {mse:.4f} | {accuracy:.0%} | {used} |", flush=True)


if __name__ == "__main__":
    main()
