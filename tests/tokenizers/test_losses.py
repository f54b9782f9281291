"""Tokenizer GAN objective: LPIPS, the PatchGAN and video transformer discriminators, hinge and non-saturating losses, LeCam, VQGANLoss scheduling."""

import logging

import pytest
import torch
from safetensors.torch import save_file

from arvis.tokenizers import adversarial
from arvis.tokenizers.adversarial import hinge_discriminator_loss, hinge_generator_loss
from arvis.tokenizers.discriminators import PatchDiscriminator, VideoDiscriminatorConfig, VideoTransformerDiscriminator
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


# ---------------------------------------------------------------- LARP's adversarial pieces


def _clips(seed: int, batch: int = 2) -> torch.Tensor:
    return torch.rand(batch, 3, 4, 16, 16, generator=torch.Generator().manual_seed(seed))


TINY_VIDEO_DISC = VideoDiscriminatorConfig(width=32, depth=2, num_heads=2, patch_size=8, temporal_patch_size=2)


def test_video_discriminator_gives_one_logit_per_clip_and_sees_time():
    torch.manual_seed(0)
    discriminator = VideoTransformerDiscriminator(TINY_VIDEO_DISC, (3, 4, 16, 16))
    clips = _clips(0)
    logits = discriminator(clips)
    assert logits.shape == (2, 1)
    assert not torch.allclose(discriminator(clips.flip(2)), logits)  # frame order matters (3D positions)
    logits.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in discriminator.parameters())
    with pytest.raises(ValueError, match="built for clips"):
        discriminator(torch.rand(2, 3, 8, 16, 16))
    with pytest.raises(ValueError, match="not divisible"):
        VideoTransformerDiscriminator(TINY_VIDEO_DISC, (3, 3, 16, 16))
    with pytest.raises(ValueError, match="patch"):
        VideoTransformerDiscriminator(TINY_VIDEO_DISC, (3, 16, 16))
    with pytest.raises(ValueError, match="by 4 .additive"):
        VideoDiscriminatorConfig(width=42, num_heads=2)
    with pytest.raises(ValueError, match="by 16 .concat"):
        VideoDiscriminatorConfig(width=40, num_heads=2, sincos_layout="concat")


def test_non_saturating_losses_on_hand_cases():
    real, fake = torch.tensor([2.0, -1.0]), torch.tensor([0.5, -3.0])
    softplus = torch.nn.functional.softplus
    expected = softplus(-real).mean() + softplus(fake).mean()  # BCE(real, 1) + BCE(fake, 0)
    assert adversarial.discriminator_loss("non_saturating", real, fake).item() == pytest.approx(expected.item())
    assert adversarial.generator_loss("non_saturating_smooth", fake).item() == pytest.approx(
        softplus(-fake).mean().item())
    assert adversarial.generator_loss("hinge", fake).item() == pytest.approx(1.25)
    with pytest.raises(ValueError, match="unknown GAN loss"):
        adversarial.discriminator_loss("wasserstein", real, fake)


def test_smoothed_labels_follow_larps_one_sided_noise():
    logits = torch.zeros(200_000)
    real, fake = adversarial.smoothed_targets(logits, logits, torch.Generator().manual_seed(0))
    assert real.min() >= 0.7 and real.max() <= 1.0 and fake.min() >= 0.0 and fake.max() <= 0.3
    # E[min(0.15 |Z|, 0.3)] = 0.15 (2 (φ(0) - φ(2)) + 2 P(|Z| > 2)) = 0.117135; standard error ~2e-4.
    assert fake.mean().item() == pytest.approx(0.117135, abs=1.5e-3)
    assert (1 - real).mean().item() == pytest.approx(0.117135, abs=1.5e-3)
    assert (fake == 0.3).float().mean().item() == pytest.approx(0.0455, abs=3e-3)  # P(|Z| > 2)
    again, _ = adversarial.smoothed_targets(logits, logits, torch.Generator().manual_seed(0))
    torch.testing.assert_close(again, real)
    # With these labels the loss is the BCE against them, not against hard 0/1 labels.
    loss = adversarial.discriminator_loss("non_saturating_smooth", logits[:4], logits[:4], torch.Generator().manual_seed(1))
    assert loss.item() == pytest.approx(2 * torch.log(torch.tensor(2.0)).item())  # logits 0: BCE = log 2 whatever the target


def test_lecam_penalty_and_its_ema_state():
    lecam = adversarial.LeCamRegularizer(decay=0.9)
    real, fake = torch.tensor([1.0, 3.0]), torch.tensor([-1.0, -1.0])
    assert lecam(real, fake).item() == pytest.approx(2.0 ** 2 + 1.0 ** 2)  # EMAs start at 0
    assert lecam.ema_real.item() == pytest.approx(0.2) and lecam.ema_fake.item() == pytest.approx(-0.1)
    assert lecam(real, fake).item() == pytest.approx(2.1 ** 2 + 1.2 ** 2)
    restored = adversarial.LeCamRegularizer(decay=0.9)
    restored.load_state_dict(lecam.state_dict())
    assert restored.ema_real.item() == pytest.approx(lecam.ema_real.item())
    assert lecam(torch.tensor([-5.0]), torch.tensor([5.0])).item() == 0.0  # a D that is not overconfident


def test_video_loss_judges_whole_clips_every_few_steps_with_lecam():
    torch.manual_seed(0)
    config = TokenizerLossConfig(perceptual_weight=0.0, l1_weight=1.0, disc_weight=0.3, disc_start=2,
                                 discriminator="video_transformer", disc_loss="non_saturating_smooth",
                                 disc_every=5, lecam_weight=0.001, video_disc=TINY_VIDEO_DISC)
    loss = VQGANLoss(config, pixel_range=(0.0, 1.0), pixel_shape=(3, 4, 16, 16))
    assert [step for step in range(15) if loss.discriminator_update(step)] == [2, 7, 12]
    assert loss.num_discriminator_updates(15) == 3 and loss.num_discriminator_updates(1) == 1
    inputs, reconstruction = _clips(0), _clips(1).requires_grad_(True)
    total, logs = loss.generator_loss(inputs, reconstruction, {}, step=2)
    adversarial_term = -torch.nn.functional.logsigmoid(loss.discriminator(reconstruction)).mean()
    assert logs["adversarial"].item() == pytest.approx(adversarial_term.item(), rel=1e-5)
    pixel = ((reconstruction - inputs) ** 2).mean() + (reconstruction - inputs).abs().mean()
    assert total.item() == pytest.approx((pixel + 0.3 * adversarial_term).item(), rel=1e-5)
    value, logs = loss.discriminator_loss(inputs, reconstruction, step=2, generator=torch.Generator().manual_seed(0))
    gan = adversarial.discriminator_loss("non_saturating_smooth", loss.discriminator(inputs),
                                         loss.discriminator(reconstruction), torch.Generator().manual_seed(0))
    real_mean = loss.discriminator(inputs).mean()
    fake_mean = loss.discriminator(reconstruction).mean()
    penalty = torch.relu(real_mean).square() + torch.relu(-fake_mean).square()  # against EMAs of 0
    assert value.item() == pytest.approx((0.3 * (gan + 0.001 * penalty)).item(), rel=1e-5)
    assert logs["lecam"].item() == pytest.approx(penalty.item(), rel=1e-5)
    assert loss.lecam.ema_real.item() == pytest.approx(0.001 * real_mean.item(), rel=1e-4)
    with pytest.raises(ValueError, match="judges clips"):
        loss.generator_loss(inputs[:, :, 0], reconstruction[:, :, 0], {}, step=2)
    with pytest.raises(ValueError, match="pixel_shape"):
        VQGANLoss(config)


def test_patch_discriminator_judges_each_frame_of_a_clip():
    loss = _loss()
    loss.discriminator.eval()  # batch norm on running statistics: per-frame calls see the same normalisation
    clips = _clips(0) * 2 - 1
    value, logs = loss.generator_loss(clips, clips, {}, step=10)
    frames = torch.cat([loss.discriminator(clips[:, :, t]) for t in range(4)])
    assert logs["adversarial"].item() == pytest.approx(-frames.mean().item(), rel=1e-5)
    assert value.item() == pytest.approx(0.5 * -frames.mean().item(), rel=1e-5)


def test_adversarial_config_validation():
    for change, message in [({"discriminator": "stylegan"}, "discriminator"), ({"disc_loss": "wgan"}, "disc_loss"),
                            ({"disc_every": 0}, "disc_every"), ({"lecam_weight": -1.0}, "lecam_weight"),
                            ({"lecam_decay": 1.0}, "lecam_decay")]:
        with pytest.raises(ValueError, match=message):
            TokenizerLossConfig(**change)


def test_lpips_with_llamagens_dropout_is_noisy_in_training_only(lpips):
    noisy = LPIPS(train_dropout=True)
    noisy.load_state_dict(lpips.state_dict())  # the same weight files load: the heads keep their names
    images, references = _images(0), _images(1)
    noisy.eval()
    torch.testing.assert_close(noisy(images, references), lpips(images, references))
    noisy.train()
    assert noisy.training
    torch.manual_seed(0)
    first = noisy(images, references)
    assert not torch.allclose(first, noisy(images, references))  # dropout 0.5 before the lin heads
    assert not any(p.requires_grad for p in noisy.parameters())
