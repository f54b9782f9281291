"""VARTokenizer: layout, encode/decode consistency, teacher forcing, odd schedules, gradients, validation."""

import pytest
import torch
import torch.distributed as dist

from arvis.tokenizers import TOKENIZERS, TokenLayout
from arvis.tokenizers.var import VARTokenizer, VARTokenizerConfig


@pytest.fixture(scope="module")
def tokenizer() -> VARTokenizer:
    torch.manual_seed(0)
    return TOKENIZERS.build("var-vae-tiny").eval()


def _pixels(batch: int = 2, size: int = 16) -> torch.Tensor:
    return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(1)) * 2 - 1


def test_layout_of_the_released_schedule_without_building_the_model():
    config = TOKENIZERS.preset("var-vae-f16")
    assert config.layout.shapes == tuple((p, p) for p in (1, 2, 3, 4, 5, 6, 8, 10, 13, 16))
    assert config.layout.length == 680
    assert TOKENIZERS.preset("var-vae-demo").layout.length == 1 + 4 + 9 + 16 + 36 + 64


def test_released_vae_parameter_count_matches_upstream():
    with torch.device("meta"):
        model = TOKENIZERS.build("var-vae-f16")

    def count(module: torch.nn.Module) -> int:
        return sum(p.numel() for p in module.parameters())

    assert count(model) / 1e6 == pytest.approx(108.9, abs=0.05)  # reference: 108.9M total
    assert count(model.encoder) / 1e6 == pytest.approx(44.1, abs=0.05)
    assert count(model.decoder) / 1e6 == pytest.approx(64.7, abs=0.05)
    assert count(model.quantizer) / 1e6 == pytest.approx(0.17, abs=0.005)
    assert model.quantizer.phi_indices == (0, 0, 1, 1, 1, 2, 2, 3, 3, 3)


def test_properties_and_tokens_per_scale(tokenizer):
    assert tokenizer.layout == TokenLayout(((1, 1), (2, 2), (3, 3), (4, 4)))
    assert tokenizer.vocab_size == 64 and tokenizer.image_size == (16, 16)
    with torch.no_grad():
        scales = tokenizer.encode_scales(_pixels())
        tokens = tokenizer.encode(_pixels())
    assert [tuple(s.shape) for s in scales] == [(2, 1, 1), (2, 2, 2), (2, 3, 3), (2, 4, 4)]
    assert tokens.shape == (2, 30) and tokens.dtype == torch.long
    assert torch.equal(tokens, torch.cat([s.flatten(1) for s in scales], dim=1))  # coarse to fine, raster order


def test_decode_of_encode_is_consistent(tokenizer):
    pixels = _pixels()
    with torch.no_grad():
        tokens = tokenizer.encode(pixels)
        decoded = tokenizer.decode(tokens)
        scales = tokenizer.encode_scales(pixels)
        torch.testing.assert_close(decoded, tokenizer.decode_scales(scales), atol=0, rtol=0)
        output = tokenizer(pixels)
    assert decoded.shape == pixels.shape
    assert torch.equal(output.tokens, tokens)
    torch.testing.assert_close(output.reconstruction, decoded, atol=1e-5, rtol=1e-5)
    assert set(output.losses) == {"vq"}
    assert set(output.metrics) == {"codebook_usage", "codebook_usage_1x1", "codebook_usage_2x2",
                                   "codebook_usage_3x3", "codebook_usage_4x4"}
    assert all(0 < value <= 1 for value in output.metrics.values())


def test_teacher_forcing_matches_sampling_steps_on_encoded_images(tokenizer):
    quantizer = tokenizer.quantizer
    with torch.no_grad():
        scales = tokenizer.encode_scales(_pixels())
        teacher = quantizer.teacher_forcing_inputs(scales)
        f_hat, stepped = None, []
        for k, indices in enumerate(scales):
            f_hat, next_input = quantizer.next_scale_input(k, f_hat, quantizer.lookup(indices))
            stepped.append(next_input)
        assert teacher.shape == (2, 30 - 1, 8)
        torch.testing.assert_close(torch.cat(stepped[:-1], dim=1), teacher, atol=1e-5, rtol=0)
        assert stepped[-1] is None
        torch.testing.assert_close(tokenizer.decode_latents(f_hat), tokenizer.decode_scales(scales),
                                   atol=1e-5, rtol=1e-5)


def test_non_power_of_two_schedule_trains():
    torch.manual_seed(0)
    tokenizer = TOKENIZERS.build("var-vae-tiny", image_size=20, patch_nums=[1, 3, 5]).train()
    pixels = _pixels(size=20)
    output = tokenizer(pixels)
    assert output.tokens.shape == (2, 35) and output.reconstruction.shape == pixels.shape
    ((output.reconstruction - pixels) ** 2).mean().add(output.losses["vq"]).backward()
    assert tokenizer.decode(output.tokens).shape == pixels.shape


def test_loss_is_finite_and_reaches_encoder_decoder_and_codebook_without_process_group():
    assert not dist.is_initialized()
    torch.manual_seed(0)
    tokenizer = TOKENIZERS.build("var-vae-tiny").train()
    pixels = _pixels()
    output = tokenizer(pixels)
    loss = ((output.reconstruction - pixels) ** 2).mean() + output.losses["vq"]
    assert torch.isfinite(loss)
    loss.backward()
    for module in (tokenizer.encoder, tokenizer.quant_conv, tokenizer.quantizer.codebook, tokenizer.quantizer.phis,
                   tokenizer.post_quant_conv, tokenizer.decoder):
        assert all(p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0
                   for p in module.parameters())


@pytest.mark.parametrize("pixels, message", [
    (torch.zeros(1, 3, 32, 32), "shape"),
    (torch.zeros(1, 1, 16, 16), "shape"),
    (torch.full((1, 3, 16, 16), 2.0), "from_unit_range"),
])
def test_bad_pixels_raise(tokenizer, pixels, message):
    with pytest.raises(ValueError, match=message):
        tokenizer.encode(pixels)
    with pytest.raises(ValueError, match=message):
        tokenizer(pixels)


def test_bad_tokens_raise(tokenizer):
    with pytest.raises(ValueError, match=r"\(batch, 30\)"):
        tokenizer.decode(torch.zeros(2, 29, dtype=torch.long))
    with pytest.raises(ValueError, match="vocabulary"):
        tokenizer.decode(torch.full((2, 30), 64, dtype=torch.long))
    with pytest.raises(ValueError, match="list of 4"):
        tokenizer.decode_scales([torch.zeros(2, 1, 1, dtype=torch.long)])


@pytest.mark.parametrize("changes, message", [
    ({"patch_nums": (1, 2, 8)}, "latent side 4"),
    ({"patch_nums": (1, 3, 2, 4)}, "strictly increasing"),
    ({"image_size": 18}, "divisible"),
    ({"ch": 20}, "num_groups"),
    ({"quant_resi": 1.5}, "quant_resi"),
])
def test_bad_config_raises(changes, message):
    with pytest.raises(ValueError, match=message):
        TOKENIZERS.preset("var-vae-tiny").replace(**changes)
    assert isinstance(VARTokenizerConfig().layout, TokenLayout)
