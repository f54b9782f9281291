"""Continuous tokens: the token spec, ``encode_latents`` and one ``decode`` for ids or vectors (tiny tokenizers)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from einops import rearrange

from arvis.testing import randomize_parameters_
from arvis.tokenizers.base import TOKENIZERS, Tokenizer, TokenLayout, TokenSpec
from arvis.tokenizers.vq import VQTokenizer

TINY = TOKENIZERS.presets("*-tiny")
GRID = TokenLayout(((4, 4),))


def _tokenizer(name: str, **changes) -> Tokenizer:
    """A tiny tokenizer with random weights (so that encodings use many codes), in eval mode."""
    torch.manual_seed(0)
    return randomize_parameters_(TOKENIZERS.build(name, **changes), std=0.3).eval()


def _pixels(tokenizer: Tokenizer, batch_size: int = 2) -> torch.Tensor:
    images = torch.rand(batch_size, *tokenizer.pixel_shape, generator=torch.Generator().manual_seed(1))
    return tokenizer.from_unit_range(images)


def _codes(tokenizer: Tokenizer) -> torch.Tensor:
    """(v, e) the vectors ids stand for: ``code_vectors()`` (VQ, VAR), else the quantizer's lookup table."""
    return tokenizer.code_vectors() if tokenizer.config_class.__name__ in ("VQConfig", "VARTokenizerConfig") \
        else tokenizer.quantizer.codes()


# ---------------------------------------------------------------------------------------------- TokenSpec


def test_a_spec_serves_a_consumer_that_needs_what_it_has():
    spec = TokenSpec(GRID, 64, 4)
    spec.check_serves(TokenSpec(GRID, 64, 4), "generator")
    spec.check_serves(TokenSpec(GRID, 64, None), "generator")  # needs ids only
    spec.check_serves(TokenSpec(GRID, None, 4), "generator")  # needs latents only
    TokenSpec(GRID, None, 4).check_serves(TokenSpec(GRID, None, 4), "generator")


@pytest.mark.parametrize(("ours", "needed", "message"), [
    (TokenSpec(GRID, 64, 4), TokenSpec(GRID, 32, None),
     r"tokenizer vocabulary \(64\) does not match the generator's \(32\); train the generator on this tokenizer"),
    (TokenSpec(GRID, None, 4), TokenSpec(GRID, 32, None), "has no vocabulary .* needs token ids of a vocabulary of 32"),
    (TokenSpec(GRID, 64, 4), TokenSpec(TokenLayout(((8, 8),)), 64, None),
     r"token layout \(\(4, 4\),\) does not match the generator's \(\(8, 8\),\); .*another image size"),
    (TokenSpec(GRID, 64, 4), TokenSpec(GRID, None, 8),
     r"latent dimension \(4\) does not match the generator's \(8\); train the generator on this tokenizer's latents"),
    (TokenSpec(GRID, 64, None), TokenSpec(GRID, None, 8), "exposes no token latents but the generator needs 8-dim"),
])
def test_a_spec_names_what_a_consumer_cannot_take(ours, needed, message):
    with pytest.raises(ValueError, match=message):
        ours.check_serves(needed, "generator")


def test_a_spec_rejects_bad_fields():
    with pytest.raises(ValueError, match="vocab_size must be a positive integer or None"):
        TokenSpec(GRID, 0, 4)
    with pytest.raises(ValueError, match="latent_dim must be a positive integer or None"):
        TokenSpec(GRID, 64, 2.0)
    with pytest.raises(ValueError, match="layout must be a TokenLayout"):
        TokenSpec(((4, 4),), 64, 4)


@pytest.mark.parametrize(("name", "latent_dim"), [("vq-tiny", 4), ("var-vae-tiny", 8), ("restok-tiny", 4),
                                                  ("larp-tiny", 8)])
def test_token_spec_of_every_tiny_tokenizer(name, latent_dim):
    tokenizer = TOKENIZERS.build(name)
    assert tokenizer.latent_dim == latent_dim
    assert tokenizer.token_spec == TokenSpec(tokenizer.layout, tokenizer.vocab_size, latent_dim)


# ---------------------------------------------------------------------------------------------- encode_latents


@pytest.mark.parametrize("name", TINY)
def test_nearest_codes_of_the_latents_are_the_tokens(name):
    tokenizer = _tokenizer(name)
    pixels = _pixels(tokenizer)
    state = {key: value.clone() for key, value in tokenizer.state_dict().items()}
    with torch.no_grad():
        latents = tokenizer.encode_latents(pixels)
        tokens = tokenizer.encode(pixels)
    assert latents.dtype == torch.float32 and latents.shape == (2, tokenizer.layout.length, tokenizer.latent_dim)
    assert tokens.unique().numel() > 1  # random weights: the check below is not trivially true
    assert torch.equal(tokenizer.nearest_tokens(latents), tokens)
    assert all(torch.equal(value, state[key]) for key, value in tokenizer.state_dict().items())  # no state changed


@pytest.mark.parametrize("name", TINY)
def test_latents_decode_to_finite_pixels(name):
    tokenizer = _tokenizer(name)
    pixels = _pixels(tokenizer)
    with torch.no_grad():
        decoded = tokenizer.decode(tokenizer.encode_latents(pixels))
    assert decoded.shape == pixels.shape and torch.isfinite(decoded).all()


@pytest.mark.parametrize("name", TINY)
def test_encode_latents_checks_pixels_like_encode(name):
    tokenizer = _tokenizer(name)
    bad = _pixels(tokenizer)[:, :1]
    with pytest.raises(ValueError, match="expected pixels of shape"):
        tokenizer.encode_latents(bad)
    with pytest.raises(ValueError, match="floating-point pixels"):
        tokenizer.encode_latents(torch.zeros(1, *tokenizer.pixel_shape, dtype=torch.uint8))


@pytest.mark.parametrize("l2_norm", [True, False])
def test_vq_latents_are_the_quant_conv_output_in_the_codebooks_space(l2_norm):
    tokenizer = _tokenizer("vq-tiny", codebook_l2_norm=l2_norm)
    pixels = _pixels(tokenizer)
    with torch.no_grad():
        latents = tokenizer.encode_latents(pixels)
        raw = rearrange(tokenizer.quant_conv(tokenizer.encoder(pixels)), "b d h w -> b (h w) d")
    torch.testing.assert_close(latents, F.normalize(raw, dim=-1) if l2_norm else raw, atol=0, rtol=0)
    assert torch.equal(tokenizer.nearest_tokens(latents), tokenizer.encode(pixels))


@pytest.mark.parametrize("l2_norm", [False, True])
def test_var_latents_are_the_residuals_looked_up_at_each_scale(l2_norm):
    tokenizer = _tokenizer("var-vae-tiny", codebook_l2_norm=l2_norm)
    pixels = _pixels(tokenizer)
    with torch.no_grad():
        latents = tokenizer.encode_latents(pixels)
        f = tokenizer.latents(pixels).float()
        scales = tokenizer.encode_scales(pixels)
    # scale 0 looks up f itself, pooled to 1x1; scale 1 what remains once scale 0's code is taken out
    torch.testing.assert_close(latents[:, 0], f.mean(dim=(2, 3)))
    quantizer = tokenizer.quantizer
    with torch.no_grad():
        rest = f - quantizer.phi(0, quantizer._to_latent_size(0, quantizer.lookup(scales[0])))
    torch.testing.assert_close(latents[:, 1:5], rearrange(F.interpolate(rest, size=(2, 2), mode="area"),
                                                          "b z h w -> b (h w) z"))
    assert torch.equal(tokenizer.nearest_tokens(latents), tokenizer.encode(pixels))


def test_a_tokenizer_without_latents_says_so():
    class NoLatents(VQTokenizer):  # a tokenizer that exposes no vector space: the base class's behaviour
        latent_dim = Tokenizer.latent_dim
        encode_latents = Tokenizer.encode_latents
        nearest_tokens = Tokenizer.nearest_tokens
        decode_vectors = Tokenizer.decode_vectors

    tokenizer = NoLatents(TOKENIZERS.preset("vq-tiny"))
    assert tokenizer.latent_dim is None and tokenizer.token_spec.latent_dim is None
    with pytest.raises(ValueError, match="NoLatents exposes no latents"):
        tokenizer.encode_latents(_pixels(tokenizer))
    with pytest.raises(ValueError, match="NoLatents exposes no latents"):
        tokenizer.nearest_tokens(torch.zeros(1, 16, 4))
    with pytest.raises(ValueError, match=r"NoLatents exposes no token latents.*pass \(batch, 16\) long token ids"):
        tokenizer.decode(torch.zeros(1, 16, 4))


# ---------------------------------------------------------------------------------------------- decode


@pytest.mark.parametrize("name", TINY)
def test_decoding_code_vectors_equals_decoding_ids(name):
    tokenizer = _tokenizer(name)
    tokens = torch.randint(0, tokenizer.vocab_size, (2, tokenizer.layout.length),
                           generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(tokenizer.decode(_codes(tokenizer)[tokens]), tokenizer.decode(tokens),
                                   atol=1e-5, rtol=0)


def test_restok_decodes_a_prefix_of_vectors_like_a_prefix_of_ids():
    tokenizer = _tokenizer("restok-tiny")
    tokens = torch.randint(0, tokenizer.vocab_size, (2, 4), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(tokenizer.decode(tokenizer.quantizer.codes()[tokens]), tokenizer.decode(tokens),
                                   atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="a prefix must end on a level boundary"):
        tokenizer.decode(torch.zeros(2, 3, 4))


@pytest.mark.parametrize("name", TINY)
def test_decode_rejects_what_is_neither_ids_nor_vectors(name):
    tokenizer = _tokenizer(name)
    length, dim = tokenizer.layout.length, tokenizer.latent_dim
    with pytest.raises(ValueError, match="expected token ids .* or token vectors .*, got torch.int32"):
        tokenizer.decode(torch.zeros(2, length, dtype=torch.int32))
    with pytest.raises(ValueError, match="expected token ids .* or token vectors .*, got list"):
        tokenizer.decode([[0] * length])
    with pytest.raises(ValueError, match=rf"vectors of shape \(batch, {length}, {dim}\).*ids .* must be torch.long"):
        tokenizer.decode(torch.zeros(2, length))  # float ids
    with pytest.raises(ValueError, match=rf"token vectors of shape \(batch, {length}, {dim}\).*got torch.float32 "
                                         rf"\(2, {length}, {dim + 1}\)"):
        tokenizer.decode(torch.zeros(2, length, dim + 1))  # e != latent_dim
    with pytest.raises(ValueError, match="token vectors of shape|a prefix must end on a level boundary"):
        tokenizer.decode(torch.zeros(2, length + 1, dim))
