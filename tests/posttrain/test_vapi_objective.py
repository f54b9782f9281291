"""VA-π's objective pieces: the noised context, per-position sampling, rewards, advantages and the PPO loss."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from arvis.posttrain.vapi.objective import (
    gathered_log_probs,
    group_advantages,
    k3_divergence,
    noise_context,
    policy_loss,
    reconstruction_costs,
    reconstruction_reward,
    sample_per_position,
)


def test_no_context_noise_gives_the_plain_inputs_and_full_noise_is_uniform():
    tokens = torch.randint(0, 16, (4, 500), generator=torch.Generator().manual_seed(0))
    assert noise_context(tokens, 0.0, 16, None) is tokens
    half = noise_context(tokens, 0.5, 16, torch.Generator().manual_seed(1))
    changed = (half != tokens).float().mean().item()
    assert abs(changed - 0.5 * 15 / 16) < 0.03  # a replacement keeps the id with probability 1/16
    full = noise_context(tokens, 1.0, 16, torch.Generator().manual_seed(2))
    counts = torch.bincount(full.flatten(), minlength=16).float()
    assert (counts / counts.sum() - 1 / 16).abs().max() < 0.02
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        noise_context(tokens, 1.5, 16, None)


def test_samples_follow_each_positions_softmax_and_carry_their_log_probs():
    logits = torch.tensor([[[2.0, 0.0, -1.0], [0.0, 0.0, 0.0]]])  # (1, 2, 3)
    samples, log_probs = sample_per_position(logits, 20000, torch.Generator().manual_seed(0))
    assert samples.shape == (1, 20000, 2) and log_probs.shape == (1, 20000, 2)
    for position in range(2):
        frequencies = torch.bincount(samples[0, :, position], minlength=3).float() / 20000
        torch.testing.assert_close(frequencies, logits[0, position].softmax(-1), atol=0.015, rtol=0)
    expected = logits.log_softmax(-1)[0, torch.arange(2), samples[0]]
    torch.testing.assert_close(log_probs[0], expected)


def test_rewards_are_negative_reconstruction_costs():
    images = torch.rand(3, 3, 8, 8) * 2 - 1
    mse, distance = reconstruction_costs(images, images)
    assert distance is None and torch.equal(reconstruction_reward(mse), torch.zeros(3))
    shifted = images + 0.5
    torch.testing.assert_close(reconstruction_reward(reconstruction_costs(shifted, images)[0], mse_weight=2.0),
                               torch.full((3,), -0.5))
    lpips = lambda a, b: torch.ones(a.shape[0])  # noqa: E731
    mse, distance = reconstruction_costs(shifted, images, lpips)
    torch.testing.assert_close(reconstruction_reward(mse, distance, lpips_weight=0.5), torch.full((3,), -0.75))


def test_clip_costs_take_the_mean_lpips_over_frames():
    clips = torch.zeros(2, 3, 4, 8, 8)
    shifted = clips.clone()
    shifted[1, :, 0] = 1.0  # one of clip 1's four frames differs everywhere
    frame_lpips = lambda a, b: (a - b).abs().flatten(1).mean(1)  # noqa: E731  (1 where a frame differs)
    mse, distance = reconstruction_costs(shifted, clips, frame_lpips)
    torch.testing.assert_close(mse, torch.tensor([0.0, 0.25]))
    torch.testing.assert_close(distance, torch.tensor([0.0, 0.25]))
    with pytest.raises(ValueError, match="differ in shape"):
        reconstruction_costs(clips, clips[:, :, :2])


def test_advantages_have_zero_mean_per_group_and_vanish_for_identical_rewards():
    rewards = torch.tensor([[1.0, 2.0, 3.0, 6.0], [-1.0, -1.0, -1.0, -1.0]])
    advantages = group_advantages(rewards)
    torch.testing.assert_close(advantages.mean(dim=1), torch.zeros(2), atol=1e-6, rtol=0)
    assert torch.equal(advantages[1], torch.zeros(4))
    torch.testing.assert_close(advantages[0].std(), torch.tensor(1.0), atol=1e-6, rtol=0)
    assert group_advantages(torch.tensor([[0.0, 100.0] + [0.0] * 98]), clip=5.0).max() == 5.0


def test_at_the_first_step_the_ratio_is_one_and_the_gradient_is_reinforce_plus_ce():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 7, requires_grad=True)  # a toy policy: its logits are its parameters
    targets = torch.randint(0, 7, (2, 5))
    with torch.no_grad():
        samples, old = sample_per_position(logits, 4, torch.Generator().manual_seed(3))
    advantages = group_advantages(torch.randn(2, 4))
    new = gathered_log_probs(logits.log_softmax(-1), samples)
    assert torch.equal((new - old).exp(), torch.ones_like(new))  # ρ = 1 exactly
    beta = 0.1
    ce = F.cross_entropy(logits.reshape(-1, 7), targets.reshape(-1))
    (gradient,) = torch.autograd.grad(policy_loss(new, old, advantages) + beta * ce, logits, retain_graph=True)
    reinforce = -(advantages[..., None] * new).mean(dim=-1).mean()
    (expected,) = torch.autograd.grad(reinforce + beta * ce, logits, retain_graph=True)
    torch.testing.assert_close(gradient, expected, atol=1e-7, rtol=1e-6)
    identical = policy_loss(new, old, torch.zeros(2, 4))  # A = 0: only β·CE would act
    assert torch.autograd.grad(identical, logits)[0].abs().max() == 0


def test_the_clip_acts_once_the_policy_has_moved():
    old = torch.zeros(1, 1, 1)
    moved = torch.full((1, 1, 1), 0.5, requires_grad=True)  # ρ = e^0.5 ≈ 1.65 > 1.2
    loss = policy_loss(moved, old, torch.ones(1, 1))
    assert loss.item() == pytest.approx(-1.2)
    assert torch.autograd.grad(loss, moved)[0].item() == 0.0  # clipped: no gradient for a positive advantage


def test_the_k3_divergence_is_zero_at_the_reference_and_pulls_the_policy_back_to_it():
    reference = torch.tensor([[[-1.0, -2.0, -0.5]]])
    log_probs = torch.tensor([[[-0.5, -2.5, -0.5]]], requires_grad=True)
    divergence = k3_divergence(log_probs, reference)
    r = reference - log_probs.detach()
    torch.testing.assert_close(divergence.detach(), r.exp() - r - 1)
    assert divergence[0, 0, 2] == 0 and (divergence >= 0).all()
    divergence.sum().backward()
    # above the reference the gradient is positive (descent lowers log π), below it negative, at it zero
    assert log_probs.grad[0, 0, 0] > 0 and log_probs.grad[0, 0, 1] < 0 and log_probs.grad[0, 0, 2] == 0
