"""VQTokenizer: shapes, encode/decode consistency, input validation, config validation, preset sizes."""

import pytest
import torch

from arvis.tokenizers import TOKENIZERS, TokenLayout, VQConfig, VQTokenizer


@pytest.fixture(scope="module")
def tokenizer() -> VQTokenizer:
    torch.manual_seed(0)
    return TOKENIZERS.build("vq-tiny").eval()


def _pixels(batch: int = 2, size: int = 16) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    return torch.rand(batch, 3, size, size, generator=generator) * 2 - 1


def test_properties(tokenizer):
    assert tokenizer.layout == TokenLayout(((4, 4),))
    assert tokenizer.vocab_size == 64
    assert tokenizer.image_size == (16, 16)
    assert tokenizer.downsample_factor == 4


def test_encode_decode_shapes(tokenizer):
    with torch.no_grad():
        tokens = tokenizer.encode(_pixels())
        images = tokenizer.decode(tokens)
    assert tokens.shape == (2, 16) and tokens.dtype == torch.long
    assert 0 <= tokens.min() and tokens.max() < 64
    assert images.shape == (2, 3, 16, 16)


def test_eval_forward_matches_decode_of_encode(tokenizer):
    pixels = _pixels()
    with torch.no_grad():
        output = tokenizer(pixels)
        tokens = tokenizer.encode(pixels)
        assert torch.equal(output.tokens, tokens)
        assert torch.allclose(output.reconstruction, tokenizer.decode(tokens), atol=1e-5)
    assert set(output.losses) == {"codebook", "commitment"}
    assert 0 < output.metrics["codebook_usage"].item() <= 1


def test_tokens_are_raster_order(tokenizer):
    with torch.no_grad():
        latents = tokenizer.quant_conv(tokenizer.encoder(_pixels()))
        grid = tokenizer.quantizer.nearest_indices(latents)
        tokens = tokenizer.encode(_pixels())
    assert torch.equal(tokens[:, :4], grid[:, 0, :])  # first row of the grid comes first
    assert torch.equal(tokens[:, 4:8], grid[:, 1, :])


def test_training_forward_backward_reaches_every_parameter():
    torch.manual_seed(0)
    tokenizer = TOKENIZERS.build("vq-tiny", entropy_loss_ratio=0.1).train()
    output = tokenizer(_pixels())
    assert set(output.losses) == {"codebook", "commitment", "entropy"}
    loss = ((output.reconstruction - _pixels()) ** 2).mean() + sum(output.losses.values())
    loss.backward()
    without_grad = [name for name, p in tokenizer.named_parameters() if p.grad is None]
    assert without_grad == []


@pytest.mark.parametrize("pixels, message", [
    (torch.zeros(1, 3, 32, 32), "shape"),
    (torch.zeros(1, 1, 16, 16), "shape"),
    (torch.zeros(3, 16, 16), "shape"),
    (torch.full((1, 3, 16, 16), 2.0), "from_unit_range"),
    (torch.zeros(1, 3, 16, 16, dtype=torch.uint8), "uint8"),
])
def test_bad_pixels_raise(tokenizer, pixels, message):
    with pytest.raises(ValueError, match=message):
        tokenizer.encode(pixels)
    with pytest.raises(ValueError, match=message):
        tokenizer(pixels)


@pytest.mark.parametrize("tokens", [
    torch.full((1, 16), 64, dtype=torch.long),
    torch.full((1, 16), -1, dtype=torch.long),
    torch.zeros(1, 15, dtype=torch.long),
    torch.zeros(1, 16, dtype=torch.int32),
])
def test_bad_tokens_raise(tokenizer, tokens):
    with pytest.raises(ValueError):
        tokenizer.decode(tokens)


@pytest.mark.parametrize("changes, field", [
    ({"image_size": 18}, "image_size"),
    ({"ch": 48}, "ch_mult"),
    ({"decoder_ch_mult": (1, 2)}, "decoder_ch_mult"),
    ({"codebook_size": 0}, "codebook_size"),
    ({"entropy_temperature": 0.0}, "entropy_temperature"),
    ({"dropout": 1.0}, "dropout"),
])
def test_config_validation_names_the_field(changes, field):
    base = TOKENIZERS.preset("vq-tiny")
    with pytest.raises(ValueError, match=field):
        base.replace(**changes)


def test_config_round_trip():
    config = TOKENIZERS.preset("vq-demo")
    assert VQConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="unknown"):
        VQConfig.from_dict({**config.to_dict(), "codebook_dimension": 8})


def test_state_dict_excludes_usage_window(tokenizer):
    assert not any("recent_indices" in key for key in tokenizer.state_dict())


@pytest.mark.parametrize("name, expected", [("vq-f16", 71.9e6), ("vq-f8", 70.1e6)])
def test_llamagen_preset_parameter_counts(name, expected):
    with torch.device("meta"):
        model = TOKENIZERS.build(name)
    assert abs(model.num_parameters() - expected) / expected < 0.01
