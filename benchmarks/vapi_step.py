"""Seconds per VA-π update: arvis's one pass per image against upstream's pass structure, same process, interleaved.

    python benchmarks/vapi_step.py                                   # the quickstart models, B 16, G 8
    python benchmarks/vapi_step.py --tokenizer vq-f16 --generator llamagen-b --batch-size 4 --repeats 3

Both sides run the same random-weight generator and tokenizer on the same real-image batch (uniform noise pixels:
the time does not depend on them), in eval mode, with the same random stream (so the same noise and draws),
decoding and reward:

* **arvis** (``VAPi.loss`` + backward): one teacher-forced pass over the B images, with gradients; the G draws
  per image and their log-probabilities come from it.
* **upstream's structure** (``train_c2i_grpo.py``, rebuilt from arvis's modules, not the official code): a no-grad
  pass over the B images for the draws and old log-probabilities, then the gradient pass over all B·G sequences
  (each image's context repeated G times), PPO loss + β·CE.

The two updates are equal (the test suite checks arvis's gradient); only the passes differ. Each repeat times
both sides in alternating order after a warm-up of each; medians are printed with the reward's share (decoding
B·G sequences), which the two share. Asserts nothing.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import types

import torch
from einops import repeat

from arvis.generators.base import GENERATORS
from arvis.pipeline import Pipeline
from arvis.posttrain import TrainingContext
from arvis.posttrain.vapi import VAPi, VAPiConfig
from arvis.posttrain.vapi.objective import (group_advantages, noise_context, policy_loss,
                                            reconstruction_reward, sample_per_position)
from arvis.testing import randomize_parameters_
from arvis.tokenizers.base import TOKENIZERS


def upstream_structured_update(method: VAPi, model, pixels, tokens, labels, rng) -> torch.Tensor:
    """Upstream's passes: no-grad draws on B rows, then the gradient pass on B·G repeated rows; returns the loss
    (already back-propagated)."""
    config = method.config
    noised = noise_context(tokens, config.context_noise, model.vocab_size, rng)
    with torch.no_grad():
        old_logits = model(noised, labels, targets=tokens).logits
    samples, old_log_probs = sample_per_position(old_logits, config.group_size, rng)
    mse, distance = method.sample_costs(model, samples, pixels)
    rewards = reconstruction_reward(mse, distance, mse_weight=config.mse_weight, lpips_weight=config.lpips_weight)
    advantages = group_advantages(rewards, config.advantage_clip)
    group = config.group_size
    output = model(repeat(noised, "b l -> (b g) l", g=group), repeat(labels, "b -> (b g)", g=group),
                   targets=repeat(tokens, "b l -> (b g) l", g=group))
    log_probs = output.logits.log_softmax(-1)  # ((b g), l, v): each row scores its own draw
    new_log_probs = log_probs.gather(-1, samples.flatten(0, 1)[..., None])[..., 0].view_as(samples)
    loss = policy_loss(new_log_probs, old_log_probs, advantages, config.clip) + config.ce_weight * output.loss
    loss.backward()
    return loss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokenizer", default="vq-demo")
    parser.add_argument("--generator", default="raster-demo")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    tokenizer = TOKENIZERS.build(args.tokenizer).eval()
    generator = randomize_parameters_(GENERATORS.build(args.generator), std=0.02)
    pipeline = Pipeline(tokenizer, generator.eval())
    config = VAPiConfig(group_size=args.group_size)
    with tempfile.TemporaryDirectory() as unused:
        method = VAPi(config, pipeline, pipeline_path="random weights", output_dir=unused)
    method.setup(types.SimpleNamespace(device=torch.device("cpu"), process_index=0, is_main_process=False))
    model = method.build_model().eval()
    pixels = torch.rand(args.batch_size, *tokenizer.pixel_shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        tokens = tokenizer.encode(tokenizer.from_unit_range(pixels))
    labels = torch.arange(args.batch_size) % generator.num_classes
    batch = {"pixels": pixels, "tokens": tokens, "labels": labels}
    context = TrainingContext(model=model, unwrapped=model, device=torch.device("cpu"))

    def arvis_update() -> None:
        model.zero_grad(set_to_none=True)
        method.before_step(0)
        method.loss(context, batch)[0].backward()

    def upstream_update() -> None:
        model.zero_grad(set_to_none=True)
        method.before_step(0)
        upstream_structured_update(method, model, pixels, tokens, labels, method.random_stream(torch.device("cpu")))

    def reward_only() -> None:
        samples = torch.randint(0, generator.vocab_size, (args.batch_size, args.group_size, generator.layout.length))
        method.sample_costs(model, samples, pixels)

    arvis_name, upstream_name = "arvis (one pass per image)", "upstream's structure"
    sides = {arvis_name: arvis_update, upstream_name: upstream_update, "reward alone (decode B·G + MSE)": reward_only}
    for side in sides.values():
        side()  # warm-up
    times = {name: [] for name in sides}
    for index in range(args.repeats):
        order = list(sides.items()) if index % 2 == 0 else list(reversed(sides.items()))
        for name, side in order:
            start = time.perf_counter()
            side()
            times[name].append(time.perf_counter() - start)
    parameters = sum(p.numel() for p in model.parameters()) / 1e6
    print(f"{args.generator} ({parameters:.1f}M) on {args.tokenizer}: B {args.batch_size}, G {args.group_size}, "
          f"{generator.layout.length} tokens, {torch.get_num_threads()} threads, {args.repeats} repeats")
    print("| update | median s | min s |")
    print("|---|---|---|")
    for name, values in times.items():
        print(f"| {name} | {statistics.median(values):.3f} | {min(values):.3f} |")
    ratio = statistics.median(times[upstream_name]) / statistics.median(times[arvis_name])
    print(f"upstream's structure / arvis: {ratio:.2f}x")


if __name__ == "__main__":
    main()
