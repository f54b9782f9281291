"""Static KV caches and compiled decoding passes give the samples of dynamic caches in eager mode."""

from __future__ import annotations

import copy

import pytest
import torch

from arvis.generators.base import GENERATORS
from arvis.nn.kv_cache import KVCache
from arvis.samplers import sampler_for
from arvis.samplers.logits import per_sample_generators
from arvis.testing import example_condition, randomize_parameters_


def _model_and_condition(preset: str):
    torch.manual_seed(0)
    model = randomize_parameters_(GENERATORS.build(preset)).eval()
    condition = example_condition(model, 3)
    if condition.labels is not None:
        condition = condition.replace(labels=condition.labels.clamp(max=model.num_classes - 1))
    return model, condition


def _samples(model, condition, sampler=None, **settings) -> tuple[torch.Tensor, torch.Tensor]:
    greedy = sampler_for(model, sampler, top_k=1, cfg_scale=2.0, **settings)(model, condition)
    seeded = sampler_for(model, sampler, top_k=8, cfg_scale=2.0, **settings)(
        model, condition, rng=per_sample_generators(3, 0, 3))
    return greedy, seeded


@pytest.mark.parametrize("preset", ["raster-tiny", "raster-t2i-tiny", "sequence-tiny", "har-tiny", "var-tiny",
                                    "controlar-raster-tiny", "sdar-raster-tiny", "token-shuffle-tiny",
                                    "interleaved-tiny"])
def test_static_caches_decode_as_dynamic_ones(preset):
    """``backend="eager"`` traces the passes with dynamo and runs them as they are: the static-cache path alone."""
    model, condition = _model_and_condition(preset)
    dynamic = _samples(model, condition)
    assert not model.new_cache(6).static
    model.compile_decoding(backend="eager")
    assert model.new_cache(6).static
    static = _samples(model, condition)
    assert torch.equal(static[0], dynamic[0]) and torch.equal(static[1], dynamic[1])


def test_speculative_jacobi_rewinds_a_static_cache():
    model, condition = _model_and_condition("raster-tiny")
    dynamic = _samples(model, condition, "speculative-jacobi", draft_window=4)
    model.compile_decoding(backend="eager")
    static = _samples(model, condition, "speculative-jacobi", draft_window=4)
    assert torch.equal(static[0], dynamic[0]) and torch.equal(static[1], dynamic[1])


def test_inductor_compiled_decoding_gives_the_eager_samples():
    model, condition = _model_and_condition("raster-tiny")
    dynamic = _samples(model, condition)
    model.compile_decoding()  # inductor: C++ kernels on the CPU
    static = _samples(model, condition)
    assert torch.equal(static[0], dynamic[0]) and torch.equal(static[1], dynamic[1])


def test_a_static_cache_hides_unwritten_slots_and_refuses_overflow():
    cache = KVCache(1, 5, static=True)
    mask = cache.static_mask(None, 2, torch.device("cpu"))
    assert mask.tolist() == [[True, True, False, False, False]] * 2
    keys = torch.randn(1, 1, 2, 4)
    full_keys, _ = cache.append(0, keys, keys)
    assert full_keys.shape == (1, 1, 5, 4) and torch.equal(full_keys[:, :, :2], keys)
    cache.advance(2)
    causal = torch.tensor([[True, True, True, False], [True, True, True, True]])
    assert cache.static_mask(causal, 2, torch.device("cpu"))[:, 4:].any().item() is False
    with pytest.raises(ValueError, match="overflow"):
        cache.static_mask(None, 4, torch.device("cpu"))
    with pytest.raises(ValueError, match="static_mask"):
        KVCache(1, 5, static=True).append(0, keys, keys)
    with pytest.raises(ValueError, match="boolean masks over the 4"):
        cache.static_mask(causal[:, :3], 2, torch.device("cpu"))
    with pytest.raises(ValueError, match="boolean masks"):
        cache.static_mask(causal.float(), 2, torch.device("cpu"))


def test_a_copy_of_a_compiled_generator_decodes_with_its_own_weights():
    model, condition = _model_and_condition("raster-tiny")
    model.compile_decoding(backend="eager")
    copied = copy.deepcopy(model)
    assert copied.trunk.decoding.compiled and copied.trunk.decoding.layer_stack.__self__ is copied.trunk
    with torch.no_grad():
        for parameter in copied.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    eager_copy = copy.deepcopy(copied)
    eager_copy.trunk.decoding.compiled_stack = None  # the same weights, decoded eagerly with a dynamic cache
    assert not eager_copy.new_cache(6).static
    assert torch.equal(_samples(copied, condition)[0], _samples(eager_copy, condition)[0])
    assert not torch.equal(_samples(copied, condition)[0], _samples(model, condition)[0])


def test_a_generator_without_a_trunk_refuses_to_compile():
    model = randomize_parameters_(GENERATORS.build("dd-raster-tiny"))
    with pytest.raises(ValueError, match="no KV-cached trunk"):
        model.compile_decoding()
