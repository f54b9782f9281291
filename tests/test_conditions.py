"""The condition record and its contract over every registered generator (class ids and text prompts; cached
stepping against teacher forcing for every condition field is in tests/test_contracts.py)."""

from __future__ import annotations

import pytest
import torch

from arvis.conditions import Condition, as_condition
from arvis.generators.base import GENERATORS, Generator
from arvis.samplers import sampler_for
from arvis.testing import example_condition, randomize_parameters_

STEPPED = [name for name in GENERATORS.presets("*-tiny") if GENERATORS.build(name).unit != "distilled"]


def tiny(name: str) -> Generator:
    torch.manual_seed(0)
    return randomize_parameters_(GENERATORS.build(name)).eval()


def test_condition_record_checks_its_fields():
    with pytest.raises(ValueError, match="prompt_mask"):
        Condition(prompt=torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="same batch"):
        Condition(labels=torch.zeros(2, dtype=torch.long), control=torch.zeros(3, 1, 4, 4))
    with pytest.raises(ValueError, match="at least one"):
        Condition()
    with pytest.raises(ValueError, match="Condition"):
        as_condition([1, 2])
    condition = Condition(labels=torch.tensor([1, 2, 3]), control=torch.zeros(3, 1, 4, 4))
    assert condition.fields == {"labels", "control"} and condition.batch_size == 3
    assert torch.equal(condition.select(slice(1, None)).labels, torch.tensor([2, 3]))
    joined = Condition.cat([condition, condition])
    assert joined.batch_size == 6 and joined.control.shape == (6, 1, 4, 4)
    with pytest.raises(ValueError, match="same fields"):
        Condition.cat([condition, Condition(labels=torch.tensor([0]))])


@pytest.mark.parametrize("name", STEPPED)
def test_batch_results_equal_one_by_one(name):
    """Rows with different prompt lengths (or classes) in one batch give what each gives alone."""
    model = tiny(name)
    condition = example_condition(model)
    rng = torch.Generator().manual_seed(2)
    if model.token_spec.vocab_size is None:  # a generator of latents (Orthus): unit vectors, a short DDIM
        tokens = torch.nn.functional.normalize(torch.randn(3, model.layout.length, model.token_spec.latent_dim,
                                                           generator=rng), dim=-1)
        sampler = sampler_for(model, cfg_scale=2.0, top_k=10, ddim_steps=5)
    else:
        tokens = torch.randint(0, model.vocab_size, (3, model.layout.length), generator=rng)
        sampler = sampler_for(model, cfg_scale=2.0, top_k=10)
    with torch.no_grad():
        batched = model(tokens, condition).logits
        alone = torch.cat([model(tokens[i:i + 1], condition.select(slice(i, i + 1))).logits for i in range(3)])
    torch.testing.assert_close(batched, alone, atol=1e-5, rtol=0)
    seeds = [torch.Generator().manual_seed(10 + i) for i in range(3)]
    together = sampler(model, condition, rng=seeds)
    single = torch.cat([sampler(model, condition.select(slice(i, i + 1)), rng=[torch.Generator().manual_seed(10 + i)])
                        for i in range(3)])
    if together.is_floating_point():  # latents: the same up to float rounding (products of other row counts)
        torch.testing.assert_close(together, single, atol=1e-4, rtol=1e-4)
    else:
        assert torch.equal(together, single)


@pytest.mark.parametrize("name", STEPPED)
def test_same_seed_same_samples_for_every_condition_field(name):
    model = tiny(name)
    condition = example_condition(model)
    sampler = sampler_for(model, cfg_scale=2.0, top_p=0.9)
    first = sampler(model, condition, rng=torch.Generator().manual_seed(3))
    second = sampler(model, condition, rng=torch.Generator().manual_seed(3))
    assert torch.equal(first, second)


@pytest.mark.parametrize("name", STEPPED)
def test_guidance_runs_the_joint_null_condition(name, monkeypatch):
    model = tiny(name)
    condition = example_condition(model, batch_size=2)
    seen = []
    original = model.step

    def recording_step(tokens, condition, cache, **options):
        seen.append(condition)
        return original(tokens, condition, cache, **options)

    monkeypatch.setattr(model, "step", recording_step)
    sampler_for(model, cfg_scale=3.0)(model, condition, rng=torch.Generator().manual_seed(0))
    null = model.null_condition(2)
    for ran in seen:
        assert ran.batch_size == 4 and ran.fields == condition.fields
        for field in ("labels", "prompt", "prompt_mask", "control"):
            if getattr(condition, field) is not None:
                assert torch.equal(getattr(ran, field)[:2], getattr(condition, field))
                assert torch.equal(getattr(ran, field)[2:], getattr(null, field))


def test_null_condition_is_the_null_class_or_the_empty_prompt():
    class_model, text_model = tiny("raster-tiny"), tiny("raster-t2i-tiny")
    assert torch.equal(class_model.null_condition(2).labels, torch.full((2,), class_model.null_class))
    null = text_model.null_condition(2)
    assert null.fields == {"prompt"} and not null.prompt_mask.any()
    assert text_model.prefix_length == text_model.prompt_length == 6 and class_model.prefix_length == 1


def test_text_generator_uses_the_prompt_and_hides_its_padding():
    model = tiny("raster-t2i-tiny")
    condition = example_condition(model)
    tokens = torch.randint(0, model.vocab_size, (3, model.layout.length), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        logits = model(tokens, condition).logits
        other_words = condition.replace(prompt=(condition.prompt % 31 + 1) * condition.prompt_mask)
        assert not torch.allclose(model(tokens, other_words).logits[:2], logits[:2])
        padding_changed = condition.replace(prompt=torch.where(condition.prompt_mask, condition.prompt, 5))
        torch.testing.assert_close(model(tokens, padding_changed).logits, logits, atol=0, rtol=0)


def test_bad_conditions_get_clear_errors():
    class_model, text_model = tiny("raster-tiny"), tiny("raster-t2i-tiny")
    tokens = torch.zeros(2, 16, dtype=torch.long)
    prompt = torch.ones(2, 6, dtype=torch.long)
    mask = torch.ones(2, 6, dtype=torch.bool)
    with pytest.raises(ValueError, match=r"conditioned on \['labels'\]: got \['prompt'\], which it does not take"):
        class_model(tokens, Condition(prompt=prompt, prompt_mask=mask))
    with pytest.raises(ValueError, match=r"\['prompt'\] missing"):
        text_model(tokens, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="prompt length 6"):
        text_model(tokens, Condition(prompt=torch.ones(2, 7, dtype=torch.long), prompt_mask=torch.ones(2, 7, dtype=torch.bool)))
    with pytest.raises(ValueError, match="text vocabulary"):
        text_model(tokens, Condition(prompt=prompt * 40, prompt_mask=mask))
    with pytest.raises(ValueError, match="torch.bool"):
        text_model(tokens, Condition(prompt=prompt, prompt_mask=mask.long()))
    with pytest.raises(ValueError, match="torch.long text-token ids"):
        text_model(tokens, Condition(prompt=prompt.float(), prompt_mask=mask))
    with pytest.raises(ValueError, match="samples"):
        class_model(tokens, torch.tensor([0, 1, 2]))


def test_feature_prompts_run_in_bfloat16():
    model = tiny("raster-t2i-t5-tiny").to(torch.bfloat16)
    condition = example_condition(model)  # float32 features, as a frozen encoder gives them
    tokens = torch.randint(0, model.vocab_size, (3, model.layout.length), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        logits = model(tokens, condition).logits
    assert logits.dtype == torch.float32 and torch.isfinite(logits).all()
    samples = sampler_for(model, cfg_scale=2.0)(model, condition, rng=torch.Generator().manual_seed(0))
    assert samples.shape == (3, model.layout.length)
