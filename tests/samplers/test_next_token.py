import torch

from arvis.generators.base import GENERATORS
from arvis.samplers import NextTokenSampler, NextTokenSettings
from arvis.samplers.logits import cfg_mix, sample_categorical
from arvis.testing import randomize_parameters_


def tiny_model():
    torch.manual_seed(0)
    return randomize_parameters_(GENERATORS.build("raster-tiny"), std=0.3).eval()


def test_cfg_one_equals_conditional_only_sampling():
    model = tiny_model()
    labels = torch.tensor([1, 2, 3])
    guided_off = NextTokenSampler(NextTokenSettings(cfg_scale=1.0))(model, labels, rng=torch.Generator().manual_seed(3))
    cache, inputs, tokens = model.new_cache(3), None, []
    rng = torch.Generator().manual_seed(3)
    for _ in range(model.layout.length):
        logits = model.step(inputs, labels, cache)[:, -1]
        tokens.append(sample_categorical(logits, rng)[:, None])
        inputs = tokens[-1]
    assert torch.equal(guided_off, torch.cat(tokens, dim=1))


def test_guided_greedy_decoding_uses_mixed_logits():
    model = tiny_model()
    labels = torch.tensor([4, 5])
    tokens = NextTokenSampler(NextTokenSettings(cfg_scale=3.0, top_k=1))(model, labels)
    null = torch.full_like(labels, model.null_class)
    with torch.no_grad():
        cond = model(tokens, labels).logits
        uncond = model(tokens, null).logits
    assert torch.equal(tokens, cfg_mix(cond, uncond, 3.0).argmax(-1))
    assert not torch.equal(tokens, cond.argmax(-1))  # guidance changed the choice somewhere


def test_sampler_rejects_bad_labels():
    import pytest

    model = tiny_model()
    with pytest.raises(ValueError, match="class ids"):
        NextTokenSampler()(model, torch.tensor([model.num_classes + 1]))
    with pytest.raises(ValueError, match="torch.long"):
        NextTokenSampler()(model, torch.tensor([1.0]))


def test_sampler_refuses_a_model_in_training_mode():
    import pytest

    model = tiny_model().train()
    with pytest.raises(ValueError, match=r"training mode.*model.eval\(\)"):
        NextTokenSampler()(model, torch.tensor([1]))


def test_cfg_interval_guides_the_first_tokens_and_then_uses_conditional_logits():
    """LlamaGen's ``cfg_interval`` k: tokens 0 .. k + 1 guided, later ones from the conditional logits alone."""
    model = tiny_model()
    labels = torch.tensor([4, 5])
    tokens = NextTokenSampler(NextTokenSettings(cfg_scale=3.0, top_k=1, cfg_interval=2))(model, labels)
    with torch.no_grad():
        cond = model(tokens, labels).logits
        uncond = model(tokens, torch.full_like(labels, model.null_class)).logits
    assert torch.equal(tokens[:, :4], cfg_mix(cond, uncond, 3.0)[:, :4].argmax(-1))
    assert torch.equal(tokens[:, 4:], cond[:, 4:].argmax(-1))
    assert not torch.equal(tokens[:, 4:], cfg_mix(cond, uncond, 3.0)[:, 4:].argmax(-1))  # guidance would differ
    everywhere = NextTokenSampler(NextTokenSettings(cfg_scale=3.0, top_k=1, cfg_interval=-1))(model, labels)
    assert torch.equal(everywhere, NextTokenSampler(NextTokenSettings(cfg_scale=3.0, top_k=1))(model, labels))
