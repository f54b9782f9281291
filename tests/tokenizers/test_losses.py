"""VQGAN losses: LPIPS, PatchGAN discriminator, hinge losses, VQGANLoss scheduling."""

import logging

import pytest
import torch
from safetensors.torch import save_file

from arvis.tokenizers.discriminators import PatchDiscriminator, hinge_discriminator_loss, hinge_generator_loss
from arvis.tokenizers.losses import TokenizerLossConfig, VQGANLoss
from arvis.tokenizers.lpips import LPIPS, resolve_lpips


@pytest.fixture(scope="module")
def lpips() -> LPIPS:
    torch.manual_seed(0)
    model = LPIPS()
    with torch.no_grad():  # positive lin weights, as trained LPIPS heads are
        for index in range(5):
            getattr(model, f"lin{index}").model[1].weight.uniform_(0.1, 1.0)
    return model


def _images(seed: int, batch: int = 2, size: int = 16) -> torch.Tensor:
    return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_lpips_is_zero_for_identical_and_positive_for_different_images(lpips):
    images = _images(0)
    assert torch.allclose(lpips(images, images), torch.zeros(2), atol=1e-7)
    distance = lpips(images, _images(1))
    assert distance.shape == (2,) and (distance > 0).all()


def test_lpips_is_frozen_but_passes_gradients(lpips):
    assert not any(p.requires_grad for p in lpips.parameters())
    lpips.train()
    assert not lpips.training
    images = _images(0).requires_grad_(True)
    lpips(images, _images(1)).sum().backward()
    assert images.grad.abs().sum() > 0


def test_lpips_loads_from_safetensors_files(lpips, tmp_path):
    state = lpips.state_dict()
    backbone = {k: v for k, v in state.items() if k.startswith("features.")}
    backbone["classifier.0.weight"] = torch.zeros(2, 2)  # torchvision's head is ignored
    save_file(backbone, tmp_path / "vgg16.safetensors")
    save_file({k: v for k, v in state.items() if k.startswith("lin")}, tmp_path / "lin.safetensors")
    assert "lin0.model.1.weight" in state and "features.28.weight" in state
    loaded = LPIPS.from_files(tmp_path / "vgg16.safetensors", tmp_path / "lin.safetensors")
    images, other = _images(0), _images(1)
    assert torch.allclose(loaded(images, other), lpips(images, other))


def test_lpips_loads_pth_and_rejects_wrong_tensors(lpips, tmp_path):
    state = lpips.state_dict()
    torch.save({k: v for k, v in state.items() if k.startswith("features.")}, tmp_path / "vgg16.pth")
    torch.save({k: v for k, v in state.items() if k.startswith("lin")}, tmp_path / "vgg.pth")
    assert resolve_lpips(tmp_path / "vgg16.pth", tmp_path / "vgg.pth") is not None
    torch.save({"lin0.model.1.weight": torch.zeros(1, 3, 1, 1)}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="missing"):
        LPIPS.from_files(tmp_path / "vgg16.pth", tmp_path / "bad.pth")


def test_resolve_lpips_with_missing_files_logs_once_and_returns_none(tmp_path, caplog, monkeypatch):
    monkeypatch.delenv("ARVIS_LPIPS_VGG", raising=False)
    monkeypatch.setenv("ARVIS_LPIPS_LIN", str(tmp_path / "vgg.pth"))
    with caplog.at_level(logging.WARNING, logger="arvis.tokenizers.lpips"):
        assert resolve_lpips(None, None) is None
    assert len(caplog.records) == 1
    message = caplog.records[0].getMessage()
    assert "vgg16-397923af.pth" in message and str(tmp_path / "vgg.pth") in message
    assert "ARVIS_LPIPS_VGG" in message and "OFF" in message


def test_discriminator_shape_and_initialisation():
    torch.manual_seed(0)
    discriminator = PatchDiscriminator(ndf=64, num_layers=3)
    assert discriminator(torch.zeros(1, 3, 64, 64)).shape == (1, 1, 6, 6)
    first_conv = discriminator.main[0].weight
    assert abs(first_conv.std().item() - 0.02) < 0.005
    with pytest.raises(ValueError, match="too small"):
        discriminator(torch.zeros(1, 3, 16, 16))


def test_hinge_losses_on_hand_cases():
    real = torch.tensor([2.0, 0.5, -1.0])  # relu(1 - real) = 0, 0.5, 2 -> mean 5/6
    fake = torch.tensor([-2.0, 0.0, 1.0])  # relu(1 + fake) = 0, 1, 2 -> mean 1
    assert hinge_discriminator_loss(real, fake).item() == pytest.approx(0.5 * (5 / 6 + 1))
    assert hinge_generator_loss(fake).item() == pytest.approx(1 / 3)


def _loss(**changes) -> VQGANLoss:
    torch.manual_seed(0)
    config = TokenizerLossConfig(perceptual_weight=0.0, disc_start=10, disc_ndf=8, disc_layers=2, **changes)
    return VQGANLoss(config)


def test_discriminator_is_idle_before_disc_start():
    loss = _loss()
    inputs, reconstruction = _images(0), _images(1)
    assert loss.discriminator_loss(inputs, reconstruction, step=9) == (None, {})
    value, logs = loss.discriminator_loss(inputs, reconstruction.requires_grad_(True), step=10)
    value.backward()
    assert reconstruction.grad is None  # the discriminator step never reaches the tokenizer
    assert all(p.grad is not None for p in loss.discriminator_parameters())
    assert set(logs) == {"discriminator", "logits_real", "logits_fake"}


def test_generator_loss_adds_adversarial_term_only_after_disc_start():
    loss = _loss(l1_weight=0.5)
    inputs = _images(0)
    reconstruction = _images(1).requires_grad_(True)
    tokenizer_losses = {"codebook": torch.tensor(0.3), "commitment": torch.tensor(0.1)}
    before, logs = loss.generator_loss(inputs, reconstruction, tokenizer_losses, step=9)
    expected = ((reconstruction - inputs) ** 2).mean() + 0.5 * (reconstruction - inputs).abs().mean() + 0.4
    assert before.item() == pytest.approx(expected.item(), rel=1e-5)
    assert "adversarial" not in logs and logs["codebook"].item() == pytest.approx(0.3)
    after, logs = loss.generator_loss(inputs, reconstruction, tokenizer_losses, step=10)
    assert "adversarial" in logs
    assert after.item() == pytest.approx(before.item() + 0.5 * logs["adversarial"].item(), rel=1e-5)
    after.backward()
    assert reconstruction.grad.abs().sum() > 0


def test_generator_loss_uses_lpips_and_separates_parameters(lpips):
    loss = VQGANLoss(TokenizerLossConfig(disc_ndf=8, disc_layers=2), lpips=lpips)
    inputs, reconstruction = _images(0), _images(1)
    _, logs = loss.generator_loss(inputs, reconstruction, {}, step=0)
    assert logs["perceptual"].item() == pytest.approx(lpips(reconstruction, inputs).mean().item())
    assert loss.generator_parameters() == []
    assert len(loss.discriminator_parameters()) == len(list(loss.discriminator.parameters()))


def test_lpips_sees_minus_one_to_one_whatever_the_tokenizer_range(lpips):
    """A [0, 1] tokenizer (ResTok, LARP) gets the same perceptual term as the same images in [-1, 1]."""
    unit = VQGANLoss(TokenizerLossConfig(disc_ndf=8, disc_layers=2), lpips=lpips, pixel_range=(0.0, 1.0))
    signed = VQGANLoss(TokenizerLossConfig(disc_ndf=8, disc_layers=2), lpips=lpips)
    inputs, reconstruction = _images(0), _images(1)  # in [-1, 1]
    _, unit_logs = unit.generator_loss((inputs + 1) / 2, (reconstruction + 1) / 2, {}, step=0)
    _, signed_logs = signed.generator_loss(inputs, reconstruction, {}, step=0)
    assert unit_logs["perceptual"].item() == pytest.approx(signed_logs["perceptual"].item(), rel=1e-5)
    with pytest.raises(ValueError, match="pixel_range"):
        VQGANLoss(TokenizerLossConfig(), lpips=lpips, pixel_range=(1.0, 0.0))


def test_missing_lpips_turns_perceptual_term_off(caplog, monkeypatch, tmp_path):
    monkeypatch.delenv("ARVIS_LPIPS_VGG", raising=False)
    monkeypatch.delenv("ARVIS_LPIPS_LIN", raising=False)
    config = TokenizerLossConfig(lpips_vgg_path=str(tmp_path / "missing.pth"), disc_ndf=8, disc_layers=2)
    with caplog.at_level(logging.WARNING):
        loss = VQGANLoss(config)
    assert loss.lpips is None and "missing.pth" in caplog.text
    _, logs = loss.generator_loss(_images(0), _images(1), {}, step=0)
    assert "perceptual" not in logs


def test_loss_config_validation():
    with pytest.raises(ValueError, match="disc_weight"):
        TokenizerLossConfig(disc_weight=-1.0)
    with pytest.raises(ValueError, match="disc_layers"):
        TokenizerLossConfig(disc_layers=0)
