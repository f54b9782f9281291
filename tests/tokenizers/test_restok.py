"""ResTok tokenizer: level sizes, residual latent init, hierarchical mask, prefix decoding, nested dropout."""

from __future__ import annotations

import pytest
import torch

from arvis.tokenizers import TOKENIZERS
from arvis.tokenizers.restok import (
    ResTokConfig,
    ResTokTokenizer,
    hierarchical_mask,
    level_grid,
    level_sizes,
    merge_image_tokens,
    residual_level_pooling,
)


@pytest.fixture(scope="module")
def tiny() -> ResTokTokenizer:
    torch.manual_seed(0)
    return TOKENIZERS.build("restok-tiny").eval()


def pixels(batch: int = 2, side: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, 3, side, side, generator=torch.Generator().manual_seed(seed))


def test_level_sizes_halve():
    assert level_sizes(128) == (1, 1, 2, 4, 8, 16, 32, 64)
    assert level_sizes(8) == (1, 1, 2, 4)
    assert [level_grid(s) for s in level_sizes(128)] == [(1, 1), (1, 1), (1, 2), (2, 2), (2, 4), (4, 4), (4, 8),
                                                        (8, 8)]
    with pytest.raises(ValueError):
        level_sizes(96)


def test_tiny_layout_matches_token_count(tiny):
    assert tiny.layout.shapes == ((1,), (1,), (2,), (4,))
    assert tiny.layout.length == tiny.config.num_latent_tokens == 8
    assert tiny.prefix_lengths == (1, 2, 4, 8)
    assert tiny.pixel_range == (0.0, 1.0)


def test_residual_pooling_second_token_is_zero_and_levels_reconstruct():
    image_map = torch.randn(2, 5, 8, 8, dtype=torch.float64)
    sizes = level_sizes(32)
    tokens = residual_level_pooling(image_map, sizes)
    assert tokens.shape == (2, 32, 5)
    torch.testing.assert_close(tokens[:, 0], image_map.mean(dim=(2, 3)))
    assert tokens[:, 1].abs().max() < 1e-12  # the residual of the global mean has zero mean
    # Summing every level's nearest upsampling gives the map back up to the finest level's residual.
    total, start = torch.zeros_like(image_map), 0
    for size in sizes:
        rows, cols = level_grid(size)
        grid = tokens[:, start:start + size].transpose(1, 2).reshape(2, 5, rows, cols)
        total += torch.nn.functional.interpolate(grid, size=(8, 8), mode="nearest")
        start += size
    residual = image_map - total
    pooled = torch.nn.functional.interpolate(residual, size=level_grid(sizes[-1]), mode="area")
    assert pooled.abs().max() < 1e-12


@pytest.mark.parametrize("mode", ["subsample", "average"])
def test_merge_image_tokens(mode):
    tokens = torch.randn(2, 8, 3)
    merged, residual = merge_image_tokens(tokens, mode)
    assert merged.shape == (2, 4, 3) and residual.shape == (2, 8, 3)
    torch.testing.assert_close(merged.repeat_interleave(2, dim=1) + residual, tokens)
    if mode == "subsample":
        assert torch.equal(residual[:, ::2], torch.zeros_like(residual[:, ::2]))
    else:
        torch.testing.assert_close(residual[:, ::2], -residual[:, 1::2])


def test_hierarchical_mask_rule():
    mask = hierarchical_mask(3, (1, 1, 2))
    assert mask[:3, :3].all() and not mask[:3, 3:].any()
    assert mask[3:, :3].all()
    expected = torch.tensor([[1, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 1], [1, 1, 1, 1]], dtype=torch.bool)
    assert torch.equal(mask[3:, 3:], expected)


def test_encoder_mask_through_merges(tiny):
    torch.manual_seed(1)
    image = torch.randn(2, tiny.num_image_tokens, tiny.config.width)
    latents = torch.randn(2, 8, tiny.config.width)
    with torch.no_grad():
        image_out, latent_out = tiny.encoder_transformer(image, latents)
        perturbed = latents.clone()
        perturbed[:, 4:] += 10.0  # the last level
        image_p, latent_p = tiny.encoder_transformer(image, perturbed)
        all_perturbed = latents + 10.0
        image_all, _ = tiny.encoder_transformer(image, all_perturbed)
    assert image_out.shape[1] == tiny.num_image_tokens * 3 // 2  # one merge: n/2 merged + n residual
    torch.testing.assert_close(image_p, image_out, atol=0, rtol=0)
    torch.testing.assert_close(image_all, image_out, atol=0, rtol=0)  # image tokens never see latents
    torch.testing.assert_close(latent_p[:, :4], latent_out[:, :4], atol=1e-6, rtol=0)
    assert not torch.allclose(latent_p[:, 4:], latent_out[:, 4:])


def test_encoded_prefix_depends_on_image_only(tiny):
    # Latent level j sees levels <= j: perturbing the initial latents of level 3 leaves the first 4 codes.
    x = pixels()
    with torch.no_grad():
        image = tiny.image_tokens(x)
        initial = tiny.initial_latents(image)
        _, out = tiny.encoder_transformer(image, initial)
        bumped = initial.clone()
        bumped[:, 4:] = 0.0
        _, out_bumped = tiny.encoder_transformer(image, bumped)
    torch.testing.assert_close(out[:, :4], out_bumped[:, :4], atol=1e-6, rtol=0)


def test_encode_decode_shapes_every_prefix(tiny):
    x = pixels()
    with torch.no_grad():
        tokens = tiny.encode(x)
        assert tokens.shape == (2, 8) and tokens.dtype == torch.long
        for k in tiny.prefix_lengths:
            decoded = tiny.decode(tokens[:, :k])
            assert decoded.shape == x.shape and torch.isfinite(decoded).all()
            # Tokens beyond k do not matter: any tail gives the same prefix decoding.
            other = tokens.clone()
            other[:, k:] = (other[:, k:] + 7) % tiny.vocab_size
            torch.testing.assert_close(tiny.decode(other[:, :k]), decoded, atol=0, rtol=0)
        assert not torch.allclose(tiny.decode(tokens[:, :1]), tiny.decode(tokens))


def test_nested_dropout_only_in_training(tiny):
    x = pixels(batch=4)
    torch.manual_seed(0)
    tiny.train()
    try:
        output = tiny(x)
        assert "kept_tokens" in output.metrics
        kept = tiny.sample_kept_counts(1000)
        assert set(kept.tolist()) == {4, 8}
        assert abs((kept == 4).float().mean().item() - 0.5) < 1e-9  # stratified: exactly half at batch 1000
    finally:
        tiny.eval()
    with torch.no_grad():
        first, second = tiny(x), tiny(x)
        torch.testing.assert_close(first.reconstruction, tiny.decode(tiny.encode(x)))
    assert "kept_tokens" not in first.metrics
    torch.testing.assert_close(first.reconstruction, second.reconstruction, atol=0, rtol=0)


def test_paper_kept_count_distribution_keeps_all_tokens_80_percent_of_the_time():
    # Upstream (drop_prob 0.2, counts 4..128): weights 1, 2, 4, 8, 16 for 4..64 and 31 * 4 = 124 for all 128.
    with torch.device("meta"):
        model = TOKENIZERS.build("restok-l-128")
    kept = model.sample_kept_counts(15500, generator=torch.Generator().manual_seed(0))
    for count, weight in zip((4, 8, 16, 32, 64, 128), (1, 2, 4, 8, 16, 124), strict=True):
        assert abs((kept == count).float().mean().item() - weight / 155) < 1e-3, count
    legacy = model.config.replace(nested_dropout_counts=(4, 8, 16, 32, 64, 128),
                                  nested_dropout_weights=(1.0, 2.0, 4.0, 8.0, 16.0, 124.0))  # arvis 0.1's preset
    with torch.device("meta"):
        old = ResTokTokenizer(legacy)
    kept = old.sample_kept_counts(15500, generator=torch.Generator().manual_seed(0))
    assert abs((kept == 128).float().mean().item() - (0.8 + 0.2 * 124 / 155)) < 1e-3  # 0.96: the fixed bug


def test_kept_counts_come_from_the_explicit_generator_only():
    with torch.device("meta"):
        model = TOKENIZERS.build("restok-l-128")
    state = torch.random.get_rng_state()
    first = model.sample_kept_counts(64, generator=torch.Generator().manual_seed(7))
    again = model.sample_kept_counts(64, generator=torch.Generator().manual_seed(7))
    other = model.sample_kept_counts(64, generator=torch.Generator().manual_seed(8))
    assert torch.equal(first, again) and not torch.equal(first, other)
    assert torch.equal(torch.random.get_rng_state(), state)  # the global RNG is not touched


def test_upstream_architecture_details():
    torch.manual_seed(0)
    model = TOKENIZERS.build("restok-tiny")
    layer_norms = [m for m in model.modules() if isinstance(m, torch.nn.LayerNorm)]
    assert layer_norms and all(m.eps == 1e-5 for m in layer_norms)
    assert isinstance(model.encoder_ln_pre, torch.nn.LayerNorm) and isinstance(model.decoder_ln_pre, torch.nn.LayerNorm)
    attention = model.encoder[0].attn
    assert attention.qkv.bias is None and torch.equal(attention.k_bias, torch.zeros_like(attention.k_bias))
    names = set(model.state_dict())
    assert "encoder.0.attn.q_bias" in names and "encoder.0.attn.k_bias" not in names  # a buffer, not stored
    linears = [m.weight for m in model.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))
               and m is not model.quantizer.codebook]
    weights = torch.cat([w.flatten() for w in linears])
    # torch's trunc_normal_(std=0.02) truncates at +-2 (absolute), as upstream calls it: in effect N(0, 0.02).
    assert abs(weights.std().item() - 0.02) < 2e-3 and abs(weights.mean().item()) < 2e-3
    assert abs(model.enc_level_embed.std().item() - model.config.width ** -0.5) < 0.06


def test_the_merge_embedding_is_added_after_the_block_that_merges():
    torch.manual_seed(0)
    model = TOKENIZERS.build("restok-tiny").eval()  # one merge, after block 0 of 2
    model = ResTokTokenizer(model.config.replace(encoder_depth=1, merge_layers=(0,))).eval()
    image = model.image_tokens(pixels(1))
    latents = model.initial_latents(image)
    with torch.no_grad():
        with_embedding, _ = model.encoder_transformer(image, latents)
        embedding = model.merge_embed[0].clone()
        model.merge_embed.zero_()
        without, _ = model.encoder_transformer(image, latents)
    merged = model.num_image_tokens // 2
    torch.testing.assert_close(with_embedding[:, :merged] - without[:, :merged], embedding.expand(1, merged, -1))
    torch.testing.assert_close(with_embedding[:, merged:], without[:, merged:])


def test_bad_inputs_raise(tiny):
    with pytest.raises(ValueError, match="shape"):
        tiny.encode(torch.rand(1, 3, 32, 32))
    with pytest.raises(ValueError, match="level boundary"):
        tiny.decode(torch.zeros(1, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="level boundary"):
        tiny.decode(torch.zeros(1, 9, dtype=torch.long))
    with pytest.raises(ValueError, match="vocabulary"):
        tiny.decode(torch.full((1, 8), 64, dtype=torch.long))
    with pytest.raises(ValueError, match="long"):
        tiny.decode(torch.zeros(1, 8))
    with pytest.raises(ValueError, match="level boundaries"):
        ResTokConfig(image_size=16, patch_size=4, cnn=False, num_latent_tokens=8, merge_layers=(),
                     nested_dropout_counts=(3,), nested_dropout_weights=(1.0,), imagenet_normalize=False)
    with pytest.raises(ValueError, match="merge"):
        ResTokConfig(image_size=16, patch_size=4, cnn=False, width=32, num_heads=2, encoder_depth=2,
                     num_latent_tokens=8, merge_layers=(0, 1, 1), nested_dropout_counts=(8,),
                     nested_dropout_weights=(1.0,), imagenet_normalize=False)


def test_paper_config_builds_on_meta():
    with torch.device("meta"):
        model = TOKENIZERS.build("restok-l-128")
    assert model.layout.length == 128
    assert model.config.level_sizes == (1, 1, 2, 4, 8, 16, 32, 64)
    assert model.num_image_tokens == 256
    assert 600e6 < sum(p.numel() for p in model.parameters()) < 700e6
