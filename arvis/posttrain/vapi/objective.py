"""VA-π's objective (VA-π, variational policy alignment: arXiv 2512.19680, CVPR 2026), as pure functions.

The token sequence is the latent of a VAE whose decoder is the frozen tokenizer; the AR policy run under teacher
forcing on the ground-truth ids x* is the posterior. One optimiser step (upstream ``train_c2i_grpo.py``):

1. the context x* is noised (:func:`noise_context`: each id replaced by a uniform code with probability ξ);
2. one teacher-forced pass gives logits (b, l, v); G sequences per image are drawn from them position by
   position (:func:`sample_per_position`: no free-running rollout) with their log-probabilities (upstream: a
   no-grad pass in eval mode; arvis: the gradient pass itself, also in eval mode, see :mod:`.method`);
3. the frozen tokenizer decodes them; the reward is −(MSE + λ_p·LPIPS) against the real image
   (:func:`reconstruction_costs`, :func:`reconstruction_reward`);
4. advantages are normalised within each image's group of G (:func:`group_advantages`);
5. the gradient pass (upstream: a second pass, in train mode) gives the log-probabilities on the same contexts,
   and the loss is :func:`policy_loss` (per-token PPO clip) + β · cross-entropy of the ground truth on the noised
   context (+ an optional :func:`k3_divergence` to the starting policy).

Shapes: b images, g samples per image, l tokens, v vocabulary.
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import Tensor


def noise_context(tokens: Tensor, probability: float, vocab_size: int, rng: torch.Generator | None) -> Tensor:
    """tokens (b, l) long -> a copy whose ids are each replaced, with ``probability``, by a uniform id in
    [0, vocab_size) (VA-π's ξ; upstream's C2I script: 0, T2I: 0.5, Janus: 1). ξ = 0 returns ``tokens`` itself."""
    if not 0.0 <= probability <= 1.0:
        raise ValueError(f"the context noise probability must be in [0, 1], got {probability}")
    if probability == 0.0:
        return tokens
    replace = torch.rand(tokens.shape, generator=rng, device=tokens.device) < probability
    random_ids = torch.randint(0, vocab_size, tokens.shape, generator=rng, device=tokens.device)
    return torch.where(replace, random_ids, tokens)


def sample_per_position(logits: Tensor, group_size: int, rng: torch.Generator | None) -> tuple[Tensor, Tensor]:
    """logits (b, l, v) of one teacher-forced pass -> (samples (b, g, l) long, their log-probabilities (b, g, l)):
    every position drawn independently from its softmax (temperature 1, no top-k/top-p), g times."""
    log_probs = logits.float().log_softmax(-1)
    samples = draw_per_position(log_probs, group_size, rng)
    return samples, gathered_log_probs(log_probs, samples)


def draw_per_position(log_probs: Tensor, group_size: int, rng: torch.Generator | None) -> Tensor:
    """log_probs (b, l, v) (normalised) -> samples (b, g, l) long: every position drawn independently, g times."""
    if group_size < 1:
        raise ValueError(f"the group size must be at least 1, got {group_size}")
    flat = rearrange(log_probs, "b l v -> (b l) v").exp()
    draws = torch.multinomial(flat, group_size, replacement=True, generator=rng)  # ((b l), g)
    return rearrange(draws, "(b l) g -> b g l", b=log_probs.shape[0])


def gathered_log_probs(log_probs: Tensor, samples: Tensor) -> Tensor:
    """log_probs (b, l, v) and samples (b, g, l) -> each sample's per-token log-probabilities (b, g, l), gathered
    with a (b, l, g) index: no (b, g, l, v) tensor, forward or backward."""
    index = rearrange(samples, "b g l -> b l g")
    return rearrange(log_probs.gather(-1, index), "b l g -> b g l")


def reconstruction_costs(decoded: Tensor, images: Tensor, lpips=None) -> tuple[Tensor, Tensor | None]:
    """decoded and images (n, c, h, w), or clips (n, c, t, h, w), both in [-1, 1] -> (per-item MSE (n,), LPIPS
    (n,) or None without ``lpips``: a module mapping two (m, 3, h, w) image batches to (m,) distances; a clip's
    is the mean over its frames)."""
    if decoded.shape != images.shape:
        raise ValueError(f"decoded images {tuple(decoded.shape)} and real images {tuple(images.shape)} differ in shape")
    if decoded.ndim not in (4, 5):
        raise ValueError(f"expected images (n, c, h, w) or clips (n, c, t, h, w), got {tuple(decoded.shape)}")
    decoded, images = decoded.float(), images.float()
    mse = (decoded - images).pow(2).flatten(1).mean(dim=1)
    if lpips is None:
        return mse, None
    if decoded.ndim == 4:
        return mse, lpips(decoded, images).float()
    frames = decoded.shape[2]
    distance = lpips(rearrange(decoded, "n c t h w -> (n t) c h w"), rearrange(images, "n c t h w -> (n t) c h w"))
    return mse, rearrange(distance.float(), "(n t) -> n t", t=frames).mean(dim=1)


def reconstruction_reward(mse: Tensor, distance: Tensor | None = None, *, mse_weight: float = 1.0,
                          lpips_weight: float = 1.0) -> Tensor:
    """Per-sample costs from :func:`reconstruction_costs` -> rewards −(mse_weight · MSE + lpips_weight · LPIPS)
    (the LPIPS term only when ``distance`` is given), of the same shape."""
    cost = mse_weight * mse
    return -cost if distance is None else -(cost + lpips_weight * distance)


def group_advantages(rewards: Tensor, clip: float = 5.0) -> Tensor:
    """rewards (b, g) -> advantages (b, g): (r − group mean) / (group std + 1e-8), the std with n − 1, clipped to
    ±clip (upstream's GRPO normalisation). A group of identical rewards gives 0."""
    if rewards.ndim != 2 or rewards.shape[1] < 2:
        raise ValueError(f"expected rewards (images, samples per image) with at least 2 samples, got "
                         f"{tuple(rewards.shape)}")
    centred = rewards - rewards.mean(dim=1, keepdim=True)
    return (centred / (rewards.std(dim=1, keepdim=True) + 1e-8)).clamp(-clip, clip)


def k3_divergence(log_probs: Tensor, reference_log_probs: Tensor) -> Tensor:
    """The per-token k3 estimate of KL(π_θ ‖ π_ref) on tokens drawn from the policy: exp(r) − r − 1 with
    r = log π_ref − log π_θ (>= 0, and 0 where the two agree); shapes (b, g, l) -> (b, g, l). Upstream's optional
    GRPO KL term (coefficient 0.01, added per token), which no released script enables."""
    difference = reference_log_probs.detach() - log_probs
    return difference.exp() - difference - 1


def policy_loss(log_probs: Tensor, old_log_probs: Tensor, advantages: Tensor, clip: float = 0.2) -> Tensor:
    """Per-token PPO clip, meaned over tokens then sequences: log_probs, old_log_probs (b, g, l), advantages (b, g)
    -> scalar mean_seq mean_t −min(ρA, clip(ρ, 1 ± clip)A), ρ = exp(log_probs − old_log_probs). With one optimiser
    step per rollout ρ = 1, the clip never acts and the gradient is −mean(A · ∇log π) (group-normalised
    REINFORCE), as upstream."""
    ratio = (log_probs - old_log_probs.detach()).exp()
    advantage = advantages.detach()[..., None]
    clipped = ratio.clamp(1 - clip, 1 + clip)
    return (-torch.minimum(ratio * advantage, clipped * advantage)).mean(dim=-1).mean()
