"""Contracts every registered ``*-tiny`` component must honour (new components join automatically)."""

from __future__ import annotations

import pytest
import torch

from arvis.generators.base import GENERATORS, Generator
from arvis.testing import example_condition, randomize_parameters_
from arvis.samplers import sampler_for
from arvis.tokenizers.base import TOKENIZERS, Tokenizer

ALL_GENERATOR_PRESETS = GENERATORS.presets("*-tiny")
# stepped generators of token ids; distilled ones (unit "distilled") sample in one or two passes, without a cache,
# and generators of continuous latents (unit "latent", Orthus: tests/generators/test_orthus.py) step on vectors
GENERATOR_PRESETS = [name for name in ALL_GENERATOR_PRESETS
                     if GENERATORS.build(name).unit not in ("distilled", "latent")]
# generators whose steps continue teacher forcing unit by unit (a block generator's passes denoise a block instead:
# tests/posttrain/test_sdar.py checks them against its training forward)
TEACHER_FORCED_STEPS = [name for name in GENERATOR_PRESETS if GENERATORS.build(name).unit != "block"]
TOKENIZER_PRESETS = TOKENIZERS.presets("*-tiny")


def tiny_generator(name: str) -> Generator:
    torch.manual_seed(0)
    return randomize_parameters_(GENERATORS.build(name))


def tiny_tokens(model: Generator, batch_size: int = 3, seed: int = 0):
    """Random tokens (ids, or unit latent vectors for a generator of latents) and a condition with every field the
    model takes (the null condition in the last row)."""
    rng = torch.Generator().manual_seed(seed)
    if model.token_spec.vocab_size is None:
        latents = torch.randn(batch_size, model.layout.length, model.token_spec.latent_dim, generator=rng)
        return torch.nn.functional.normalize(latents, dim=-1), example_condition(model, batch_size, seed)
    tokens = torch.randint(0, model.vocab_size, (batch_size, model.layout.length), generator=rng)
    return tokens, example_condition(model, batch_size, seed)


def assert_every_parameter_gets_a_gradient(module: torch.nn.Module) -> None:
    without = [name for name, p in module.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.abs().sum() > 0)]
    assert not without, f"parameters without gradient: {without}"
    assert all(torch.isfinite(p.grad).all() for p in module.parameters() if p.grad is not None)


def training_loss(model: Generator, tokens: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """A scalar loss through the generator's training forward: teacher forcing, or for a distilled generator
    (noise -> tokens) the cross-entropy of its logits plus its regression error at timestep 1."""
    if model.unit == "latent":  # teacher forcing of latents: the stream logits and the diffusion loss
        torch.manual_seed(0)  # the diffusion loss draws its timesteps and noise from the global RNG
        output = model(tokens, labels)
        assert output.logits.ndim == 3 and output.logits.shape[0] == tokens.shape[0]
        return output.loss
    if model.unit != "distilled":
        output = model(tokens, labels)
        assert output.logits.shape == (*tokens.shape, model.vocab_size)
        return output.loss
    noise = torch.randn(*tokens.shape, model.config.code_dim, generator=torch.Generator().manual_seed(1))
    inputs, is_data = model.timestep_inputs(noise, model.code_vectors[tokens], 1)
    output = model(inputs, is_data, labels.labels.clamp(max=model.num_classes - 1))
    assert output.logits.shape == (*tokens.shape, model.vocab_size)
    return torch.nn.functional.cross_entropy(output.logits.flatten(0, 1), tokens.flatten()) \
        + output.regression.pow(2).mean()


@pytest.mark.parametrize("name", ALL_GENERATOR_PRESETS)
def test_generator_loss_is_finite_and_reaches_every_parameter(name):
    model = tiny_generator(name).train()
    tokens, labels = tiny_tokens(model)
    loss = training_loss(model, tokens, labels)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert_every_parameter_gets_a_gradient(model)


@pytest.mark.parametrize("name", ALL_GENERATOR_PRESETS)
def test_token_order_round_trips(name):
    model = tiny_generator(name)
    tokens, _ = tiny_tokens(model)
    assert torch.equal(model.from_layout_order(model.to_layout_order(tokens)), tokens)
    assert torch.equal(model.to_layout_order(model.from_layout_order(tokens)), tokens)


@pytest.mark.parametrize("name", TEACHER_FORCED_STEPS)
def test_cached_steps_equal_teacher_forcing(name):
    """Every unit is fed twice: first without storing it (a pass that only reads the cache, at the same
    position ids the stored pass then uses again), then stored; both give the teacher-forced logits."""
    model = tiny_generator(name).eval()
    tokens, labels = tiny_tokens(model)
    tokens = model.from_layout_order(tokens)  # stepping feeds the generator's own order
    with torch.no_grad():
        expected = model(model.to_layout_order(tokens), labels).logits
        cache = model.new_cache(labels.batch_size)
        stepped, consumed, inputs = [], 0, None
        while consumed < tokens.shape[1]:
            length_before = cache.length
            peeked = model.step(inputs, labels, cache, store=False)
            assert cache.length == length_before  # nothing written
            logits = model.step(inputs, labels, cache)
            torch.testing.assert_close(peeked, logits, atol=1e-6, rtol=0)
            stepped.append(logits)
            inputs = tokens[:, consumed:consumed + logits.shape[1]]
            consumed += logits.shape[1]
    torch.testing.assert_close(torch.cat(stepped, dim=1), expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", TEACHER_FORCED_STEPS)
def test_steps_return_the_hidden_states_their_logits_come_from(name):
    model = tiny_generator(name).eval()
    labels = example_condition(model, 2)
    with torch.no_grad():
        both = model.step(None, labels, model.new_cache(2), output="both")
        hidden = model.step(None, labels, model.new_cache(2), output="hidden")
        logits = model.step(None, labels, model.new_cache(2))
    torch.testing.assert_close(both.logits, logits, atol=0, rtol=0)
    torch.testing.assert_close(both.hidden, hidden, atol=0, rtol=0)
    assert hidden.shape[:2] == logits.shape[:2] and hidden.shape[-1] != logits.shape[-1]


@pytest.mark.parametrize("name", GENERATOR_PRESETS)
def test_same_seed_same_tokens(name):
    model = tiny_generator(name).eval()
    labels = example_condition(model, 3)
    sampler = sampler_for(model, cfg_scale=2.0, top_k=10, top_p=0.9, temperature=1.1)
    first = sampler(model, labels, rng=torch.Generator().manual_seed(7))
    second = sampler(model, labels, rng=torch.Generator().manual_seed(7))
    other = sampler(model, labels, rng=torch.Generator().manual_seed(8))
    assert first.dtype == torch.long and first.shape == (3, model.layout.length)
    assert 0 <= first.min() and first.max() < model.vocab_size
    assert torch.equal(first, second)
    assert not torch.equal(first, other)


@pytest.mark.parametrize("name", ALL_GENERATOR_PRESETS)
def test_generator_save_load_round_trip(name, tmp_path):
    model = tiny_generator(name).eval()
    model.save_pretrained(tmp_path / "g")
    loaded = Generator.from_pretrained(tmp_path / "g")
    assert type(loaded) is type(model) and loaded.config == model.config
    assert type(model.config).from_dict(model.config.to_dict()) == model.config
    assert not any(tensor.is_meta for tensor in [*loaded.parameters(), *loaded.buffers()])
    tokens, labels = tiny_tokens(model)
    with torch.no_grad():
        torch.testing.assert_close(training_loss(loaded, tokens, labels), training_loss(model, tokens, labels),
                                   atol=0, rtol=0)


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
