"""Contracts every registered ``*-tiny`` component must honour (new components join automatically)."""

from __future__ import annotations

import pytest
import torch

from arvis.generators.base import GENERATORS, Generator
from arvis.testing import randomize_parameters_
from arvis.samplers import SamplingConfig, sampler_for
from arvis.tokenizers.base import TOKENIZERS, Tokenizer

# teacher-forced generators; distilled ones (unit "distilled") have their contracts in tests/posttrain
GENERATOR_PRESETS = [name for name in GENERATORS.presets("*-tiny") if GENERATORS.build(name).unit != "distilled"]
TOKENIZER_PRESETS = TOKENIZERS.presets("*-tiny")


def tiny_generator(name: str) -> Generator:
    torch.manual_seed(0)
    return randomize_parameters_(GENERATORS.build(name))


def tiny_tokens(model: Generator, batch_size: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    rng = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, model.vocab_size, (batch_size, model.layout.length), generator=rng)
    labels = torch.arange(batch_size) % (model.num_classes + 1)  # includes the null class when batch > classes
    labels[-1] = model.null_class
    return tokens, labels


def assert_every_parameter_gets_a_gradient(module: torch.nn.Module) -> None:
    without = [name for name, p in module.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.abs().sum() > 0)]
    assert not without, f"parameters without gradient: {without}"
    assert all(torch.isfinite(p.grad).all() for p in module.parameters() if p.grad is not None)


@pytest.mark.parametrize("name", GENERATOR_PRESETS)
def test_generator_loss_is_finite_and_reaches_every_parameter(name):
    model = tiny_generator(name).train()
    tokens, labels = tiny_tokens(model)
    output = model(tokens, labels)
    assert output.loss.ndim == 0 and torch.isfinite(output.loss)
    assert output.logits.shape == (*tokens.shape, model.vocab_size)
    output.loss.backward()
    assert_every_parameter_gets_a_gradient(model)


@pytest.mark.parametrize("name", GENERATOR_PRESETS)
def test_cached_steps_equal_teacher_forcing(name):
    model = tiny_generator(name).eval()
    tokens, labels = tiny_tokens(model)
    with torch.no_grad():
        expected = model(tokens, labels).logits
        cache = model.new_cache(len(labels))
        stepped, consumed, inputs = [], 0, None
        while consumed < tokens.shape[1]:
            logits = model.step(inputs, labels, cache)
            stepped.append(logits)
            inputs = tokens[:, consumed:consumed + logits.shape[1]]
            consumed += logits.shape[1]
    torch.testing.assert_close(torch.cat(stepped, dim=1), expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", GENERATOR_PRESETS)
def test_same_seed_same_tokens(name):
    model = tiny_generator(name).eval()
    labels = torch.tensor([0, 1, 2])
    sampler = sampler_for(model, SamplingConfig(cfg_scale=2.0, top_k=10, top_p=0.9, temperature=1.1))
    first = sampler(model, labels, rng=torch.Generator().manual_seed(7))
    second = sampler(model, labels, rng=torch.Generator().manual_seed(7))
    other = sampler(model, labels, rng=torch.Generator().manual_seed(8))
    assert first.dtype == torch.long and first.shape == (3, model.layout.length)
    assert 0 <= first.min() and first.max() < model.vocab_size
    assert torch.equal(first, second)
    assert not torch.equal(first, other)


@pytest.mark.parametrize("name", GENERATOR_PRESETS)
def test_generator_save_load_round_trip(name, tmp_path):
    model = tiny_generator(name).eval()
    model.save_pretrained(tmp_path / "g")
    loaded = Generator.from_pretrained(tmp_path / "g")
    assert type(loaded) is type(model) and loaded.config == model.config
    assert type(model.config).from_dict(model.config.to_dict()) == model.config
    tokens, labels = tiny_tokens(model)
    with torch.no_grad():
        torch.testing.assert_close(loaded(tokens, labels).logits, model(tokens, labels).logits, atol=0, rtol=0)


def tiny_tokenizer(name: str) -> Tokenizer:
    torch.manual_seed(0)
    return TOKENIZERS.build(name)


def tiny_pixels(tokenizer: Tokenizer, batch_size: int = 2) -> torch.Tensor:
    images = torch.rand(batch_size, *tokenizer.pixel_shape, generator=torch.Generator().manual_seed(0))
    return tokenizer.from_unit_range(images)


@pytest.mark.parametrize("name", TOKENIZER_PRESETS)
def test_tokenizer_loss_is_finite_and_reaches_every_parameter(name):
    tokenizer = tiny_tokenizer(name).train()
    if name.startswith("larp"):
        randomize_parameters_(tokenizer.output_proj)  # zero-initialised as upstream, which blocks the decoder's gradients
    pixels = tiny_pixels(tokenizer)
    output = tokenizer(pixels)
    loss = (output.reconstruction - pixels).pow(2).mean() + sum(output.losses.values())
    assert torch.isfinite(loss)
    loss.backward()
    assert_every_parameter_gets_a_gradient(tokenizer)


@pytest.mark.parametrize("name", TOKENIZER_PRESETS)
def test_tokenizer_encode_decode_shapes_and_consistency(name):
    tokenizer = tiny_tokenizer(name).eval()
    pixels = tiny_pixels(tokenizer)
    with torch.no_grad():
        tokens = tokenizer.encode(pixels)
        decoded = tokenizer.decode(tokens)
        output = tokenizer(pixels)
    assert tokens.dtype == torch.long and tokens.shape == (2, tokenizer.layout.length)
    assert 0 <= tokens.min() and tokens.max() < tokenizer.vocab_size
    assert decoded.shape == pixels.shape
    assert torch.equal(output.tokens, tokens)
    torch.testing.assert_close(output.reconstruction, decoded)


@pytest.mark.parametrize("name", TOKENIZER_PRESETS)
def test_tokenizer_save_load_round_trip(name, tmp_path):
    tokenizer = tiny_tokenizer(name).eval()
    tokenizer.save_pretrained(tmp_path / "t")
    loaded = Tokenizer.from_pretrained(tmp_path / "t")
    assert loaded.config == tokenizer.config
    pixels = tiny_pixels(tokenizer)
    with torch.no_grad():
        assert torch.equal(loaded.encode(pixels), tokenizer.encode(pixels))
        tokens = tokenizer.encode(pixels)
        torch.testing.assert_close(loaded.decode(tokens), tokenizer.decode(tokens), atol=0, rtol=0)
