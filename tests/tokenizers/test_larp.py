"""LARP: holistic video tokens, deterministic encoding, the AR prior and its scheduled sampling."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from arvis.nn.sincos import sincos_1d, sincos_3d
from arvis.tokenizers import TOKENIZERS
from arvis.tokenizers.base import Tokenizer
from arvis.tokenizers.larp import LARPTokenizer
from arvis.tokenizers.larp_prior import prior_loss, scheduled_sampling_ratio


def tiny(**changes) -> LARPTokenizer:
    torch.manual_seed(0)
    config = dataclasses.replace(TOKENIZERS.preset("larp-tiny"), **changes)
    return LARPTokenizer(config)


def clips(batch: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, 3, 4, 16, 16, generator=torch.Generator().manual_seed(seed))


def test_paper_sizes():
    with torch.device("meta"):
        model = TOKENIZERS.build("larp-l")
    prior = sum(p.numel() for name, p in model.named_parameters() if name.startswith("prior."))
    assert round((model.num_parameters() - prior) / 1e6, 1) == 172.2  # reference: about 172M without the prior
    assert round(prior / 1e6, 1) == 21.7  # gptc-S
    assert model.layout.length == 1024 and model.pixel_shape == (3, 16, 128, 128)
    assert model.config.patch_grid == (4, 16, 16)


def test_3d_sincos_table_is_upstreams_sum_of_a_2d_and_a_frame_table():
    import numpy as np

    def sincos(dim, positions):  # upstream's formula: omega_i = 1 / 10000^(i / (dim/2)); [sin, cos]
        omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
        angles = np.einsum("m,d->md", np.asarray(positions, dtype=np.float64), omega)
        return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)

    dim, frames, side = 16, 3, 4
    rows, cols = np.meshgrid(np.arange(side), np.arange(side), indexing="ij")
    spatial = np.concatenate([sincos(dim // 2, cols.reshape(-1)), sincos(dim // 2, rows.reshape(-1))], axis=1)
    expected = (spatial[None] + sincos(dim, np.arange(frames))[:, None]).reshape(-1, dim)
    torch.testing.assert_close(sincos_3d(dim, frames, side, side), torch.from_numpy(expected).float(), atol=0, rtol=0)
    assert sincos_3d(dim, frames, side, side, "concat").shape == (48, 16)  # arvis 0.1's layout, for old folders
    assert TOKENIZERS.build("larp-tiny").config.sincos_layout == "additive"


def test_sincos_tables():
    table = sincos_3d(32, 2, 3, 4, "concat")  # (t h w) order; 8 dims for the frame, 24 for (column, row)
    assert table.shape == (24, 32)
    assert torch.equal(table[0, :8], table[11, :8]) and not torch.equal(table[0, :8], table[12, :8])
    assert torch.equal(table[1, 8:], table[13, 8:])  # same (row, column) in the next frame
    torch.testing.assert_close(sincos_1d(4, torch.tensor([0.0, 1.0])),
                               torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.8414710, 0.0099998, 0.5403023, 0.99995]]))


def test_encoding_is_deterministic_even_in_training_mode_while_training_draws_codes():
    model = tiny(temperature=1.0).train()
    x = clips(4)
    with torch.no_grad():
        first, second = model.encode(x), model.encode(x)
        assert torch.equal(first, second)
        drawn = model(x).tokens
    assert not torch.equal(drawn, first)  # τ = 1 spreads the draws over the codebook
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x).tokens, first)


def test_decode_shape_and_clear_errors():
    model = tiny().eval()
    with torch.no_grad():
        tokens = model.encode(clips())
        assert model.decode(tokens).shape == (2, 3, 4, 16, 16)
    with pytest.raises(ValueError, match="clips of 4 frames"):
        model.encode(torch.rand(2, 3, 8, 16, 16))
    with pytest.raises(ValueError, match="shape"):
        model.encode(torch.rand(2, 3, 16, 16))
    with pytest.raises(ValueError):
        model.decode(tokens[:, :4])


def test_scheduled_sampling_ramp():
    assert [scheduled_sampling_ratio(p, 0.5, 0.3) for p in (0.0, 0.15, 0.3, 1.0)] == [0.0, 0.25, 0.5, 0.5]


def test_second_round_without_replacement_repeats_the_first():
    model = tiny().eval()
    codes = torch.nn.functional.normalize(torch.randn(3, 8, 8), dim=-1)
    indices = torch.randint(0, 64, (3, 8), generator=torch.Generator().manual_seed(1))
    codebook = model.quantizer.codes()
    one, accuracy = prior_loss(model.prior, codes, indices, codebook, rounds=1, replace_ratio=0.0)
    two, _ = prior_loss(model.prior, codes, indices, codebook, rounds=2, replace_ratio=0.0)
    torch.testing.assert_close(one, two)
    replaced, _ = prior_loss(model.prior, codes, indices, codebook, rounds=2, replace_ratio=1.0,
                             generator=torch.Generator().manual_seed(0))
    assert not torch.allclose(one, replaced) and 0.0 <= accuracy <= 1.0


def test_prior_loss_trains_the_encoder_and_follows_the_progress():
    model = tiny(vq_weight=0.0).train()
    model.set_training_progress(0.6)
    output = model(clips())
    assert set(output.losses) == {"codebook", "commitment", "prior"} and "prior_accuracy" in output.metrics
    output.losses["prior"].backward()
    assert model.queries.grad.abs().sum() > 0 and model.prior.input_proj.weight.grad.abs().sum() > 0
    assert model.training_progress == 0.6


def test_optional_entropy_loss_is_reported_unscaled_by_the_vq_weight():
    assert set(tiny(prior=False).train()(clips()).losses) == {"codebook", "commitment"}  # off by default (LARP)
    outputs = []
    for vq_weight in (0.1, 1.0):
        model = tiny(entropy_loss_ratio=0.5, vq_weight=vq_weight, prior=False).train()
        torch.manual_seed(1)  # the same stochastic draw
        outputs.append(model(clips()).losses)
    assert set(outputs[0]) == {"codebook", "commitment", "entropy"}
    torch.testing.assert_close(outputs[1]["codebook"], 10 * outputs[0]["codebook"])
    torch.testing.assert_close(outputs[1]["entropy"], outputs[0]["entropy"])
    assert outputs[0]["entropy"] < 0  # 0.5 x (mean per-sample entropy - batch entropy) with codes in use
    with pytest.raises(ValueError, match="entropy_loss_ratio"):
        tiny(entropy_loss_ratio=-1.0)


def test_the_prior_is_dropped_for_inference_and_gets_its_learning_rate(tmp_path):
    model = tiny().eval()
    assert model.learning_rate_multipliers() == {"prior.": 1.0}  # what upstream's trainer runs
    assert tiny(prior_lr_multiplier=50.0).learning_rate_multipliers() == {"prior.": 50.0}  # the paper's
    stripped = model.for_inference()
    assert stripped.prior is None and not stripped.config.prior
    assert not any(name.startswith("prior.") for name in stripped.state_dict())
    x = clips()
    with torch.no_grad():
        assert torch.equal(stripped.encode(x), model.encode(x))
        tokens = model.encode(x)
        torch.testing.assert_close(stripped.decode(tokens), model.decode(tokens), atol=0, rtol=0)
    stripped.save_pretrained(tmp_path / "larp")
    loaded = Tokenizer.from_pretrained(tmp_path / "larp")
    assert isinstance(loaded, LARPTokenizer) and loaded.prior is None


def test_bad_configs_raise():
    with pytest.raises(ValueError, match="divisible by temporal_patch_size"):
        tiny(num_frames=5)
    with pytest.raises(ValueError, match="temperature"):
        tiny(temperature=0.0)


def test_continuous_warmup_decodes_the_latents_then_the_codes():
    model = tiny(continuous_warmup=0.25, prior=False).train()
    torch.nn.init.normal_(model.output_proj.weight)  # the zero-initialised output would hide every difference
    pixels = clips()
    continuous = model.decode_codes(torch.nn.functional.normalize(model.latents(pixels), dim=1))
    model.set_training_progress(0.2)
    warm = model(pixels)
    torch.testing.assert_close(warm.reconstruction, continuous)
    assert set(warm.losses) == {"codebook", "commitment"}
    sum(warm.losses.values()).backward()  # during the warm-up the VQ losses train the codebook, not the encoder
    assert model.quantizer.codebook.weight.grad.abs().sum() > 0
    assert model.queries.grad is None and model.patch_embed.weight.grad is None
    model.zero_grad()
    model.set_training_progress(0.25)
    reference = tiny(continuous_warmup=0.0, prior=False).train()
    reference.load_state_dict(model.state_dict())
    torch.manual_seed(3)  # the same stochastic codes in both
    after = model(pixels)
    torch.manual_seed(3)
    torch.testing.assert_close(after.reconstruction, reference(pixels).reconstruction)
    assert not torch.allclose(after.reconstruction, continuous)
    model.eval().set_training_progress(0.0)  # eval (and encode/decode) always go through the codes
    torch.testing.assert_close(model(pixels).reconstruction, model.decode(model.encode(pixels)))
    with pytest.raises(ValueError, match="continuous_warmup"):
        tiny(continuous_warmup=1.5)
