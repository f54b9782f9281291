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


def test_paper_kept_count_distribution():
    config = ResTokConfig(image_size=32, patch_size=4, cnn=False, width=8, encoder_depth=1, decoder_depth=1,
                          num_heads=1, num_latent_tokens=128, merge_layers=(), imagenet_normalize=False,
                          codebook_size=8)
    with torch.device("meta"):
        model = ResTokTokenizer(config)
    torch.manual_seed(0)
    kept = ResTokTokenizer.sample_kept_counts(model, 15500)
    assert set(kept.tolist()) <= {4, 8, 16, 32, 64, 128}
    expected_all = 0.8 + 0.2 * 124 / 155
    assert abs((kept == 128).float().mean().item() - expected_all) < 1e-3


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
