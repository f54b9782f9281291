"""The ``vapi`` post-training method: VA-π's pixel-aware policy alignment of a generator on real images.

``accelerate launch -m arvis.train.posttrain --method vapi --pipeline DIR [key=value ...]``

Each micro-batch of the shared loop is one VA-π rollout and update (upstream ``train_c2i_grpo.py``; the
objective's pieces are in :mod:`arvis.posttrain.vapi.objective`): for B real images with ground-truth ids x*,

1. the context x* is noised with probability ξ (``context_noise``); VAR's next-scale inputs are built from the
   noised ids;
2. one teacher-forced pass ``generator(noised, condition, targets=x*)`` gives the logits; G sequences per image
   (``group_size``) are drawn from them position by position, with their log-probabilities;
3. the frozen tokenizer decodes the B·G sequences, and the reward is −(MSE + λ_p·LPIPS) against the real image;
4. group-normalised advantages; the loss is the per-token PPO clip + β·CE(x*) on the noised context
   (``ce_weight``), plus an optional k3 KL to the starting generator (``kl_weight``, off as in every released
   script).

**Deliberate deviation: one pass, in eval mode.** Upstream takes its old log-probabilities in eval mode and its
gradient pass in train mode (dropout and label dropout), so ρ ≠ 1 at its first step. arvis runs the pass in eval
mode (no dropout, no label dropout), where the old and the new pass would give the same logits, so the one pass
serves as both: ρ = 1 exactly, the clip never acts (as upstream's, at one optimiser step per rollout) and the
update is group-normalised REINFORCE + β·CE. The pass also runs once per image, not once per draw (upstream's
gradient pass repeats each image's context G times): the same gradient, without upstream's second forward pass
and with G times fewer sequences in the gradient pass.

LPIPS needs local VGG16 and LPIPS v0.1 weights (``lpips_vgg_path``/``lpips_lin_path`` or the ``ARVIS_LPIPS_*``
variables). With none named the reward is MSE only, logged at setup and recorded in every step's metrics
(``reward_has_lpips``); named weights that do not load are an error.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import os
from pathlib import Path

import torch
from accelerate import Accelerator
from einops import rearrange, repeat
from torch import Tensor

from arvis.config import Config
from arvis.conditions import Condition
from arvis.generators.base import Generator
from arvis.pipeline import Pipeline
from arvis.posttrain.base import METHODS, MicroBatchStreams, PostTrainingMethod, TrainingContext
from arvis.posttrain.vapi.data import ImagesWithTokens, real_images_with_tokens
from arvis.posttrain.vapi.objective import (draw_per_position, gathered_log_probs, group_advantages, k3_divergence,
                                            noise_context, policy_loss, reconstruction_costs,
                                            reconstruction_reward)
from arvis.tokenizers.lpips import LIN_ENV, LPIPS, VGG_ENV, resolve_lpips, to_signed_range
from arvis.train.options import DataConfig

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, kw_only=True)
class VAPiConfig(Config):
    """Settings of the ``vapi`` method (defaults: upstream's C2I script).

    Attributes:
        group_size: G, sequences drawn per image (upstream 8).
        context_noise: ξ, the probability that a context id is replaced by a uniform code (C2I script 0, T2I 0.5,
            Janus 1).
        ce_weight: β, the weight of the ground truth's cross-entropy on the noised context (0.1).
        clip: the PPO ratio clip ε (0.2; inactive here, see the module docstring).
        advantage_clip: advantages are clipped to ± this (5).
        kl_weight: weight of the per-token k3 KL to the starting generator (upstream's optional 0.01; 0 = off).
        policy_weight: weight of the policy term (1); 0 trains on β·CE alone, without rollouts: the CE-only
            fine-tuning control on the same images, noise and steps.
        mse_weight, lpips_weight: the reward's weights of the per-image MSE and LPIPS (1 and 1).
        lpips_vgg_path, lpips_lin_path: local LPIPS weights (None reads ``ARVIS_LPIPS_VGG`` / ``ARVIS_LPIPS_LIN``);
            without both files the reward is MSE only.
        data: the real images (their size must be the tokenizer's; glyphs by default, 1000 of them).
        num_images: use this many items of the data, evenly spaced (e.g. about 1% of an image folder); None: all.
        decode_batch_size: sequences decoded at once for the reward.
        encode_batch_size: images encoded at once when the ground-truth ids are made.
        sample_seed: seed of the context noise and the draws (one stream per process, step and micro-batch).
    """

    group_size: int = 8
    context_noise: float = 0.0
    ce_weight: float = 0.1
    clip: float = 0.2
    advantage_clip: float = 5.0
    kl_weight: float = 0.0
    policy_weight: float = 1.0
    mse_weight: float = 1.0
    lpips_weight: float = 1.0
    lpips_vgg_path: str | None = None
    lpips_lin_path: str | None = None
    data: DataConfig = DataConfig(num_samples=1000)
    num_images: int | None = None
    decode_batch_size: int = 64
    encode_batch_size: int = 256
    sample_seed: int = 0

    def __post_init__(self) -> None:
        for name in ("context_noise", "ce_weight", "clip", "advantage_clip", "kl_weight", "policy_weight",
                     "mse_weight", "lpips_weight"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if self.context_noise > 1:
            raise ValueError(f"context_noise is a probability in [0, 1], got {self.context_noise}")
        if not 0 < self.clip < 1:
            raise ValueError(f"clip must lie in (0, 1) (upstream 0.2), got {self.clip}")
        if self.advantage_clip <= 0:
            raise ValueError(f"advantage_clip must be > 0 (upstream 5), got {self.advantage_clip}")
        if self.policy_weight == 0 and (self.ce_weight == 0 or self.kl_weight > 0):
            raise ValueError("policy_weight 0 (the CE-only control) needs ce_weight > 0 and no KL term")
        if self.lpips_weight == 0 and (self.lpips_vgg_path is not None or self.lpips_lin_path is not None):
            raise ValueError("LPIPS weights are named but lpips_weight is 0; set lpips_weight > 0 or drop the paths")
        if self.mse_weight == 0 and self.lpips_weight == 0:
            raise ValueError("the reward needs mse_weight > 0 or lpips_weight > 0")
        if self.group_size < 2:
            raise ValueError(f"group_size must be at least 2 (advantages are normalised within a group), got "
                             f"{self.group_size}")
        for name in ("decode_batch_size", "encode_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.num_images is not None and self.num_images < 1:
            raise ValueError(f"num_images must be >= 1 (or null for all the data), got {self.num_images}")
        if self.sample_seed < 0:
            raise ValueError(f"sample_seed must be >= 0, got {self.sample_seed}")


@METHODS.register
class VAPi(PostTrainingMethod):
    """VA-π: the generator as the posterior of a VAE whose decoder is the frozen tokenizer, aligned by a
    reconstruction reward on real images (GRPO on per-position samples) plus a noised-context prior term."""

    name = "vapi"
    config_class = VAPiConfig
    description = "VA-π: pixel-aware policy alignment with the tokenizer's reconstruction reward"

    def __init__(self, config: VAPiConfig, pipeline: Pipeline, **kwargs) -> None:
        super().__init__(config, pipeline, **kwargs)
        generator = pipeline.generator
        if generator.token_spec.latent_dim is not None:
            raise ValueError(f"vapi draws token ids from a teacher-forced pass over ids; {type(generator).__name__} "
                             f"models token vectors (latent_dim {generator.token_spec.latent_dim}): post-train the "
                             "pipeline it was made from instead")
        self.lpips: LPIPS | None = None
        self.streams = MicroBatchStreams(config.sample_seed)

    def setup(self, accelerator: Accelerator) -> None:
        """Freezes the tokenizer and loads LPIPS if its files exist (not for the CE-only control). ``ValueError``
        if LPIPS was asked for (a path in the config or the ``ARVIS_LPIPS_*`` variables) but did not load, or if
        the reward would be empty (``mse_weight`` 0 and no LPIPS); with nothing asked the reward is MSE only."""
        config = self.config
        self.pipeline.tokenizer.requires_grad_(False)
        self.streams.process_index = accelerator.process_index
        named = {"lpips_vgg_path": config.lpips_vgg_path, "lpips_lin_path": config.lpips_lin_path}
        for name, path in named.items():
            if path is not None and not Path(path).is_file():
                raise ValueError(f"{name} is {path!r}, which is not a file; give the local LPIPS weights file or "
                                 "leave it null for an MSE-only reward")
        if config.lpips_weight > 0 and config.policy_weight > 0:
            self.lpips = resolve_lpips(config.lpips_vgg_path, config.lpips_lin_path)
            asked = [where for where, path in (*named.items(), (VGG_ENV, os.environ.get(VGG_ENV)),
                                               (LIN_ENV, os.environ.get(LIN_ENV))) if path is not None]
            if self.lpips is None and asked:
                raise ValueError(f"LPIPS was asked for ({', '.join(asked)}) but did not load: give both files, the "
                                 "VGG16 backbone and the LPIPS lin heads, or neither for an MSE-only reward")
            if self.lpips is not None:
                self.lpips.to(accelerator.device)
        if self.lpips is None and config.mse_weight == 0 and config.policy_weight > 0:
            raise ValueError("mse_weight is 0 and LPIPS's weights were not found, so the reward would be empty: put "
                             "the LPIPS files on local disk (lpips_vgg_path / lpips_lin_path) or set mse_weight > 0")
        if accelerator.is_main_process:
            logger.info("vapi: the reward is %s", self.reward_terms)

    @property
    def reward_terms(self) -> str:
        """The reward in words, e.g. "−(1·MSE) (LPIPS weights not found: MSE only)"."""
        config = self.config
        terms = [f"{config.mse_weight:g}·MSE"] if config.mse_weight > 0 else []
        if self.lpips is not None:
            terms.append(f"{config.lpips_weight:g}·LPIPS")
        missing = self.lpips is None and config.lpips_weight > 0 and config.policy_weight > 0
        return "−(" + " + ".join(terms) + ")" + (" (LPIPS weights not found: MSE only)" if missing else "")

    def prepare_data(self, accelerator: Accelerator) -> ImagesWithTokens:
        config = self.config
        return real_images_with_tokens(self.pipeline, config.data, config.num_images,
                                       batch_size=config.encode_batch_size, device=accelerator.device)

    def build_model(self) -> Generator:
        """A copy of the pipeline's generator, trainable where it was (VAR's quantizer stays frozen); the
        pipeline's own stays as it is, the KL term's reference."""
        return copy.deepcopy(self.pipeline.generator)

    def before_step(self, step: int) -> None:
        self.streams.start_step(step)

    def loss(self, context: TrainingContext, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        """batch: pixels (b, c, ...) in [0, 1], tokens (b, l) (x*), condition fields -> (loss, metrics)."""
        config = self.config
        pixels, tokens, condition = ImagesWithTokens.split(batch)
        generator: Generator = context.unwrapped
        rng = self.streams.next(context.device)
        noised = noise_context(tokens, config.context_noise, generator.vocab_size, rng)
        with context.eval_mode():
            output = context.model(noised, condition, targets=tokens)
        log_probs = output.logits.float().log_softmax(-1)  # (b, l, v), in the generator's order
        targets = generator.from_layout_order(tokens)
        cross_entropy = -log_probs.gather(-1, targets[..., None]).mean()  # plain CE (no label smoothing)
        detached = log_probs.detach()
        metrics = {"cross_entropy": cross_entropy.detach(), "gt_accuracy": output.metrics["accuracy"],
                   "entropy": -(detached.exp() * detached).sum(-1).mean()}
        loss = config.ce_weight * cross_entropy
        if config.policy_weight > 0:
            policy, divergence, rollout_metrics = self.policy_terms(generator, log_probs, pixels, noised,
                                                                    condition, tokens, rng)
            loss = loss + config.policy_weight * policy
            if divergence is not None:
                loss = loss + config.kl_weight * divergence
            metrics.update(rollout_metrics)
        return loss, metrics

    def policy_terms(self, generator: Generator, log_probs: Tensor, pixels: Tensor, noised: Tensor,
                     condition: Condition, tokens: Tensor, rng: torch.Generator
                     ) -> tuple[Tensor, Tensor | None, dict[str, Tensor]]:
        """Steps 2-4 on one teacher-forced pass's log_probs (b, l, v): G draws per position, their rewards and
        advantages -> (the PPO loss, the mean k3 KL to the starting generator or None, their metrics). The old
        log-probabilities are the pass's own, detached: ρ = 1 exactly."""
        config = self.config
        samples = draw_per_position(log_probs.detach(), config.group_size, rng)
        mse, distance = self.sample_costs(generator, samples, pixels)
        rewards = reconstruction_reward(mse, distance, mse_weight=config.mse_weight, lpips_weight=config.lpips_weight)
        advantages = group_advantages(rewards, config.advantage_clip)
        new_log_probs = gathered_log_probs(log_probs, samples)
        policy = policy_loss(new_log_probs, new_log_probs.detach(), advantages, config.clip)  # ρ = 1
        metrics = {"policy_loss": policy.detach(), "reward": rewards.mean(),
                   "reward_group_std": rewards.std(dim=1).mean(), "mse": mse.mean(),
                   "reward_has_lpips": torch.tensor(float(distance is not None))}
        if distance is not None:
            metrics["lpips"] = distance.mean()
        divergence = None
        if config.kl_weight > 0:
            reference = self.reference_log_probs(noised, condition, tokens, samples)
            divergence = k3_divergence(new_log_probs, reference).mean(dim=-1).mean()
            metrics["kl"] = divergence.detach()
        return policy, divergence, metrics

    @torch.no_grad()
    def sample_costs(self, generator: Generator, samples: Tensor, pixels: Tensor
                     ) -> tuple[Tensor, Tensor | None]:
        """samples (b, g, l) in the generator's order and the real pixels (b, c, ...) in [0, 1] -> per-sample
        MSE (b, g) and LPIPS (b, g) (None without LPIPS) of the frozen tokenizer's decodings, in [-1, 1] and not
        clamped, computed in float32 outside the loop's autocast (as upstream)."""
        tokenizer, group = self.pipeline.tokenizer, samples.shape[1]
        flat = generator.to_layout_order(rearrange(samples, "b g l -> (b g) l"))
        reference = repeat(to_signed_range(pixels.float(), (0.0, 1.0)), "b ... -> (b g) ...", g=group)
        costs = []
        with torch.autocast(flat.device.type, enabled=False):
            for chunk, real in zip(flat.split(self.config.decode_batch_size),
                                   reference.split(self.config.decode_batch_size), strict=True):
                decoded = to_signed_range(tokenizer.decode(chunk).float(), tokenizer.pixel_range)
                costs.append(reconstruction_costs(decoded, real, self.lpips))
        mse = rearrange(torch.cat([mse for mse, _ in costs]), "(b g) -> b g", g=group)
        if self.lpips is None:
            return mse, None
        return mse, rearrange(torch.cat([distance for _, distance in costs]), "(b g) -> b g", g=group)

    @torch.no_grad()
    def reference_log_probs(self, noised: Tensor, condition: Condition, tokens: Tensor, samples: Tensor) -> Tensor:
        """The starting generator's log-probabilities (b, g, l) of the samples on the same noised context."""
        logits = self.pipeline.generator(noised, condition, targets=tokens).logits
        return gathered_log_probs(logits.float().log_softmax(-1), samples)

    def export(self, model: Generator) -> Pipeline:
        return self.pipeline_around(model)
