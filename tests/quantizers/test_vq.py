"""VectorQuantizer: nearest-neighbour lookup, losses, straight-through, usage statistics."""

import pytest
import torch
import torch.nn.functional as F
from einops import rearrange

from arvis.quantizers import VectorQuantizer


def _quantizer(**kwargs) -> VectorQuantizer:
    torch.manual_seed(0)
    return VectorQuantizer(16, 4, **kwargs)


@pytest.mark.parametrize("l2_norm", [True, False])
def test_indices_are_brute_force_nearest_neighbours(l2_norm):
    quantizer = _quantizer(l2_norm=l2_norm)
    latents = torch.randn(2, 4, 3, 5) * (1.0 if l2_norm else 0.05)
    indices = quantizer.nearest_indices(latents)
    flat = rearrange(latents, "b d h w -> (b h w) d")
    codes = quantizer.codebook.weight
    if l2_norm:
        flat, codes = F.normalize(flat, dim=-1), F.normalize(codes, dim=-1)
    brute = ((flat[:, None, :] - codes[None, :, :]) ** 2).sum(-1).argmin(-1)
    assert indices.shape == (2, 3, 5) and indices.dtype == torch.long
    assert torch.equal(rearrange(indices, "b h w -> (b h w)"), brute)
    assert torch.equal(quantizer(latents).indices, indices)


def test_straight_through_value_is_codebook_lookup_and_gradient_reaches_input():
    quantizer = _quantizer().eval()
    latents = torch.randn(2, 4, 3, 3, requires_grad=True)
    output = quantizer(latents)
    assert torch.allclose(output.quantized, quantizer.lookup(output.indices), atol=1e-6)
    assert torch.allclose(output.quantized.norm(dim=1), torch.ones(2, 3, 3), atol=1e-5)
    output.quantized.sum().backward()
    assert latents.grad is not None and latents.grad.abs().sum() > 0


def test_losses_on_a_hand_case():
    quantizer = VectorQuantizer(2, 2, l2_norm=False, commitment_beta=0.25)
    with torch.no_grad():
        quantizer.codebook.weight.copy_(torch.tensor([[0.0, 0.0], [1.0, 1.0]]))
    # Two positions: (0.2, 0.0) -> code 0, squared error 0.04; (1.0, 0.6) -> code 1, squared error 0.16.
    latents = torch.tensor([[0.2, 1.0], [0.0, 0.6]]).reshape(1, 2, 1, 2)
    output = quantizer(latents)
    assert output.indices.tolist() == [[[0, 1]]]
    expected = (0.04 + 0.16) / 4  # mean over (1, 2, 1, 2) elements
    assert output.losses["codebook"].item() == pytest.approx(expected)
    assert output.losses["commitment"].item() == pytest.approx(0.25 * expected)
    assert "entropy" not in output.losses
    assert torch.allclose(output.quantized, torch.tensor([[0.0, 1.0], [0.0, 1.0]]).reshape(1, 2, 1, 2))


def test_codebook_loss_trains_codebook_and_commitment_trains_encoder_only():
    quantizer = _quantizer(l2_norm=False)
    latents = torch.randn(1, 4, 2, 2, requires_grad=True)
    quantizer(latents).losses["codebook"].backward()
    assert latents.grad is None and quantizer.codebook.weight.grad.abs().sum() > 0
    quantizer.codebook.weight.grad = None
    quantizer(latents).losses["commitment"].backward()
    assert quantizer.codebook.weight.grad is None and latents.grad.abs().sum() > 0


def test_usage_window_is_a_buffer_updated_only_in_training():
    quantizer = _quantizer(usage_window=8)
    assert "recent_indices" in dict(quantizer.named_buffers())
    assert "recent_indices" not in dict(quantizer.named_parameters())
    assert torch.equal(quantizer.recent_indices, torch.full((8,), -1))
    latents = torch.randn(1, 4, 1, 3)
    output = quantizer.train()(latents)
    assert torch.equal(quantizer.recent_indices[-3:], output.indices.flatten())
    assert torch.equal(quantizer.recent_indices[:5], torch.full((5,), -1))
    assert output.usage.item() == pytest.approx(output.indices.unique().numel() / 16)
    before = quantizer.recent_indices.clone()
    quantizer.eval()(torch.randn(1, 4, 2, 2))
    assert torch.equal(quantizer.recent_indices, before)
    # More indices than the window: only the most recent ones are kept.
    many = quantizer.train()(torch.randn(1, 4, 3, 4))
    assert torch.equal(quantizer.recent_indices, many.indices.flatten()[-8:])


def test_entropy_loss_is_finite_and_has_gradient():
    quantizer = _quantizer(entropy_loss_ratio=0.1)
    latents = torch.randn(2, 4, 3, 3, requires_grad=True)
    entropy = quantizer(latents).losses["entropy"]
    assert torch.isfinite(entropy)
    entropy.backward()
    assert latents.grad.abs().sum() > 0 and quantizer.codebook.weight.grad.abs().sum() > 0


def test_lookup_and_input_validation():
    quantizer = _quantizer()
    codes = quantizer.lookup(torch.tensor([[[0, 15]]]))
    assert codes.shape == (1, 4, 1, 2)
    with pytest.raises(ValueError, match="latents"):
        quantizer(torch.randn(1, 3, 2, 2))
    with pytest.raises(ValueError, match="indices"):
        quantizer.lookup(torch.tensor([[0, 1]]))
