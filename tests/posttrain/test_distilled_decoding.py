"""Distilled Decoding: the distilled generators' attention structure, sampling, save/load and errors."""

from __future__ import annotations

import pytest
import torch

from arvis.generators.base import GENERATORS, Generator
from arvis.pipeline import Pipeline
from arvis.posttrain.distilled_decoding import DistilledRaster, DistilledSampler, DistilledSettings, DistilledVAR
from arvis.samplers import NextScaleSampler, NextScaleSettings, NextTokenSampler, NextTokenSettings
from arvis.testing import randomize_parameters_
from arvis.tokenizers.base import TOKENIZERS


@pytest.fixture
def var_pipeline() -> Pipeline:
    torch.manual_seed(0)
    tokenizer = TOKENIZERS.build("var-vae-tiny").eval()
    generator = GENERATORS.build("var-tiny")
    randomize_parameters_(generator, std=0.05)
    generator.bind_tokenizer(tokenizer)
    return Pipeline(tokenizer, generator.eval(), NextScaleSettings(cfg_scale=2.0, cfg_schedule="linear"))


def _distilled(pipeline: Pipeline, split: int):
    cls = DistilledRaster if pipeline.generator.unit == "token" else DistilledVAR
    model = cls.from_teacher(pipeline.generator, pipeline.tokenizer, split=split)
    return randomize_parameters_(model, std=0.1, seed=1).eval()


def _outputs(model, noise, labels):
    with torch.no_grad():
        out = model(noise, torch.zeros(noise.shape[:2], dtype=torch.bool), labels)
    return torch.cat([out.logits, out.regression], dim=-1)


def test_raster_distilled_position_i_sees_exactly_the_noise_up_to_i(tiny_pipeline):
    model = _distilled(tiny_pipeline, split=5)
    labels = torch.tensor([1, 4])
    noise = torch.randn(2, model.layout.length, model.config.code_dim, generator=torch.Generator().manual_seed(0))
    base = _outputs(model, noise, labels)
    changed = noise.clone()
    changed[:, 7] += 1.0
    moved = (_outputs(model, changed, labels) - base).abs().amax(dim=(0, 2))
    assert torch.all(moved[:7] == 0) and torch.all(moved[7:] > 0)


def test_var_distilled_token_sees_earlier_scales_and_itself_only(var_pipeline):
    model = _distilled(var_pipeline, split=2)
    labels = torch.tensor([2, 9])
    noise = torch.randn(2, model.layout.length, model.config.code_dim, generator=torch.Generator().manual_seed(0))
    base = _outputs(model, noise, labels)
    changed = noise.clone()
    changed[:, 6] += 1.0  # scale 2 (3x3) covers positions 5..13
    moved = (_outputs(model, changed, labels) - base).abs().amax(dim=(0, 2))
    assert torch.all(moved[:6] == 0) and torch.all(moved[7:14] == 0)  # earlier scales and the rest of scale 2
    assert moved[6] > 0 and torch.all(moved[14:] > 0)  # itself and every later position


def test_distilled_raster_starts_from_the_teacher(tiny_pipeline):
    teacher = tiny_pipeline.generator
    model = DistilledRaster.from_teacher(teacher, tiny_pipeline.tokenizer, split=4)
    assert model.teacher.tok_embeddings is None
    assert teacher.config.resid_dropout == 0.1 and teacher.config.class_dropout == 0.1
    dropouts = {k: v for k, v in model.teacher.config.to_dict().items() if k.endswith("dropout")}
    assert dropouts and set(dropouts.values()) == {0.0}  # a deterministic map: no dropout of any kind
    for name, tensor in model.teacher.state_dict().items():
        assert torch.equal(tensor, teacher.state_dict()[name]), name
    assert torch.equal(model.code_vectors, tiny_pipeline.tokenizer.code_vectors())
    # input_proj is the least-squares fit of the teacher's embeddings from the code vectors
    design = torch.cat([model.code_vectors, torch.ones(model.vocab_size, 1)], dim=1).double()
    fitted = model.input_proj(model.code_vectors).double()
    residual = teacher.tok_embeddings.weight.double() - fitted
    assert torch.allclose(design.T @ residual, torch.zeros_like(design.T @ residual), atol=1e-4)


@pytest.mark.parametrize("which", ["raster", "var"])
def test_distilled_sampling_steps(which, tiny_pipeline, var_pipeline):
    pipeline = tiny_pipeline if which == "raster" else var_pipeline
    split = 5 if which == "raster" else 2
    model = _distilled(pipeline, split=split)
    labels = torch.tensor([0, 3, 7])
    count = model.boundary(split)
    one_step = DistilledSampler(DistilledSettings(distilled_steps=1))
    two_steps = DistilledSampler(DistilledSettings(distilled_steps=2))
    rng = lambda: [torch.Generator().manual_seed(s) for s in (0, 1, 2)]  # noqa: E731
    first = one_step(model, labels, rng=rng())
    assert first.shape == (3, model.layout.length, model.config.code_dim)
    assert torch.equal(first, one_step(model, labels, rng=rng()))  # same seeds, same samples
    # one step: argmax codes before the split, the regression output after
    noise = torch.stack([torch.randn(model.layout.length, model.config.code_dim, generator=g) for g in rng()])
    with torch.no_grad():
        out = model(noise, torch.zeros(noise.shape[:2], dtype=torch.bool), labels)
    assert torch.equal(first[:, :count], model.code_vectors[out.logits.argmax(-1)][:, :count])
    assert torch.equal(first[:, count:], out.regression[:, count:])
    # two steps keep the first step's codes before the split and re-run the rest from the same noise
    second = two_steps(model, labels, noise=noise)
    assert torch.equal(second[:, :count], first[:, :count])
    inputs, is_data = model.timestep_inputs(noise, first, split)
    with torch.no_grad():
        expected = model.assemble(model(inputs, is_data, labels))
    assert torch.equal(second[:, count:], expected[:, count:])
    assert not torch.equal(second[:, count:], first[:, count:])


@pytest.mark.parametrize("which", ["raster", "var"])
def test_teacher_involved_sampling_keeps_the_first_pass_prefix(which, tiny_pipeline, var_pipeline):
    pipeline = tiny_pipeline if which == "raster" else var_pipeline
    split, teacher_start = (6, 2) if which == "raster" else (3, 1)
    model = _distilled(pipeline, split=split)
    labels = torch.tensor([1, 2])
    noise = torch.randn(2, model.layout.length, model.config.code_dim, generator=torch.Generator().manual_seed(4))
    sampler = DistilledSampler()
    first = sampler(model, labels, noise=noise)
    rng = [torch.Generator().manual_seed(s) for s in (5, 6)]
    mixed = sampler.teacher_involved(model, pipeline.generator, pipeline.sampler(), labels, teacher_start=teacher_start,
                                     rng=rng, noise=noise)
    start = model.boundary(teacher_start)
    assert torch.equal(mixed[:, :start], first[:, :start])
    codes = model.code_vectors
    between = mixed[:, start:model.boundary(split)]
    distances = (between.unsqueeze(2) - codes).norm(dim=-1)
    assert distances.amin(-1).max() < 1e-6  # the teacher's part is made of codes
    with pytest.raises(ValueError, match="teacher_start"):
        sampler.teacher_involved(model, pipeline.generator, pipeline.sampler(), labels, teacher_start=split + 1)
    other = GENERATORS.build("var-tiny" if which == "raster" else "raster-tiny").eval()
    with pytest.raises(ValueError, match="pass the teacher it was distilled from"):
        sampler.teacher_involved(model, other, pipeline.sampler(), labels, teacher_start=0)


@pytest.mark.parametrize("which", ["raster", "var"])
def test_samplers_continue_from_a_prefix(which, tiny_pipeline, var_pipeline):
    pipeline = tiny_pipeline if which == "raster" else var_pipeline
    generator = pipeline.generator
    greedy = (NextTokenSampler(NextTokenSettings(top_k=1, cfg_scale=2.0)) if which == "raster"
              else NextScaleSampler(NextScaleSettings(top_k=1, cfg_scale=2.0)))
    labels = torch.tensor([3, 8])
    full = greedy(generator, labels)
    cut, stop = (5, 11) if which == "raster" else (5, 14)  # scale boundaries for var-tiny: 0, 1, 5, 14, 30
    assert torch.equal(greedy(generator, labels, prefix=full[:, :cut]), full)
    assert torch.equal(greedy(generator, labels, prefix=full[:, :cut], length=stop), full[:, :stop])
    if which == "var":
        with pytest.raises(ValueError, match="unit boundaries"):
            greedy(generator, labels, prefix=full[:, :3])


def test_decoding_code_vectors_matches_decoding_tokens(tiny_pipeline, var_pipeline):
    for pipeline in (tiny_pipeline, var_pipeline):
        tokenizer = pipeline.tokenizer
        tokens = torch.randint(0, tokenizer.vocab_size, (2, tokenizer.layout.length),
                               generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            assert torch.allclose(tokenizer.decode(tokenizer.code_vectors()[tokens]),
                                  tokenizer.decode(tokens), atol=1e-5)
        with pytest.raises(ValueError, match="token vectors of shape"):
            tokenizer.decode(torch.zeros(2, 3, 1))


def test_distilled_generator_round_trips_through_a_pipeline(tmp_path, tiny_pipeline):
    model = _distilled(tiny_pipeline, split=5)
    Pipeline(tiny_pipeline.tokenizer, model).save_pretrained(tmp_path / "dd")
    loaded = Pipeline.from_pretrained(tmp_path / "dd")
    assert isinstance(loaded.generator, DistilledRaster)
    noise = torch.randn(2, model.layout.length, model.config.code_dim)
    labels = torch.tensor([0, 1])
    assert torch.equal(_outputs(model, noise, labels), _outputs(loaded.generator, noise, labels))
    other = TOKENIZERS.build("vq-tiny")
    randomize_parameters_(other, seed=7)
    with pytest.raises(ValueError, match="distilled for another tokenizer"):
        Pipeline(other, loaded.generator)


def test_distilled_generator_errors(tiny_pipeline, var_pipeline):
    with pytest.raises(ValueError, match=r"split 16 must lie in \[1, 15\]"):
        DistilledRaster.from_teacher(tiny_pipeline.generator, tiny_pipeline.tokenizer, split=16)
    with pytest.raises(ValueError, match="split 99 must lie"):
        DistilledRaster.from_teacher(tiny_pipeline.generator, tiny_pipeline.tokenizer, split=99)
    with pytest.raises(ValueError, match="distils a RasterGenerator"):
        DistilledRaster.from_teacher(var_pipeline.generator, var_pipeline.tokenizer, split=1)
    model = _distilled(tiny_pipeline, split=5)
    with pytest.raises(ValueError, match="expected float inputs"):
        model(torch.zeros(1, 3, 8), torch.zeros(1, 3, dtype=torch.bool), torch.tensor([0]))
    with pytest.raises(ValueError, match="class ids"):
        DistilledSampler()(model, torch.tensor([10]))
    with pytest.raises(ValueError, match="no step-by-step decoding"):
        model.step(None, torch.tensor([0]), None)
    with pytest.raises(ValueError, match="made from a trained teacher"):
        DistilledRaster.fit_config(model.config, tokenizer=tiny_pipeline.tokenizer, num_classes=10)
    assert isinstance(model, Generator)


@pytest.mark.parametrize("name", GENERATORS.presets("dd-*-tiny"))
def test_distilled_presets_train_every_parameter_and_round_trip(name, tmp_path):
    torch.manual_seed(0)
    model = randomize_parameters_(GENERATORS.build(name)).train()
    noise = torch.randn(3, model.layout.length, model.config.code_dim)
    labels = torch.tensor([0, 1, 2])
    inputs, is_data = model.timestep_inputs(noise, torch.randn_like(noise), model.config.split)
    output = model(inputs, is_data, labels)
    (output.logits.logsumexp(-1).mean() + output.regression.pow(2).mean()).backward()
    without = [n for n, p in model.named_parameters() if p.requires_grad and not (p.grad is not None and p.grad.abs().sum() > 0)]
    assert not without, without
    model.eval().save_pretrained(tmp_path / "g")
    loaded = Generator.from_pretrained(tmp_path / "g")
    assert type(loaded) is type(model) and loaded.config == model.config
    torch.testing.assert_close(_outputs(loaded, noise, labels), _outputs(model, noise, labels), atol=0, rtol=0)
    sampler = DistilledSampler(DistilledSettings(distilled_steps=2))
    first = sampler(model, labels, rng=torch.Generator().manual_seed(7))
    assert torch.equal(first, sampler(model, labels, rng=torch.Generator().manual_seed(7)))
    assert not torch.equal(first, sampler(model, labels, rng=torch.Generator().manual_seed(8)))


def test_the_second_step_and_the_argmax_regression_switch_are_separate_settings(tiny_pipeline):
    """DD1's ``t_list`` and ``split_t``: LlamaGen-L's 130/80 is a switch after the second step's timestep."""
    model = DistilledRaster.from_teacher(tiny_pipeline.generator, tiny_pipeline.tokenizer, split=12, second_step=5)
    model = randomize_parameters_(model, std=0.1, seed=1).eval()
    assert model.second_step == 5 and model.config.split == 12
    labels = torch.tensor([1, 4])
    noise = torch.randn(2, 16, model.config.code_dim, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        first = model.assemble(model(*model.timestep_inputs(noise, noise, 0), labels))
        inputs, is_data = model.timestep_inputs(noise, first, 5)
        second = model(inputs, is_data, labels)
        codes = DistilledSampler(DistilledSettings(distilled_steps=2))(model, labels, noise=noise)
    assert torch.equal(codes[:, :5], first[:, :5])  # the second pass keeps the first one's first 5 positions
    assert torch.equal(codes[:, 5:12], model.code_vectors[second.logits[:, 5:12].argmax(-1)])  # argmax to the split
    assert torch.equal(codes[:, 12:], second.regression[:, 12:])  # regression from the split on
    assert torch.equal(is_data[:, :5], torch.ones(2, 5, dtype=torch.bool)) and not is_data[:, 5:].any()
    with pytest.raises(ValueError, match="second_step 16 must lie in"):
        DistilledRaster.from_teacher(tiny_pipeline.generator, tiny_pipeline.tokenizer, split=5, second_step=16)


def test_raster_regression_head_is_the_final_layer_on_the_pre_norm_state(tiny_pipeline):
    model = _distilled(tiny_pipeline, split=5)
    assert model.config.regression_head == "final_layer"
    trunk_states = []
    model.teacher.norm.register_forward_hook(lambda module, args, output: trunk_states.append(args[0]))
    labels = torch.tensor([1, 4])
    noise = torch.randn(2, 16, model.config.code_dim, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        regression = model(noise, torch.zeros(2, 16, dtype=torch.bool), labels).regression
        head = model.regression_head
        state = trunk_states[0]  # the token positions' state before the teacher's RMSNorm
        condition = model.teacher.cls_embedding(labels)[:, None]
        normed = torch.nn.functional.layer_norm(state, (state.shape[-1],), eps=1e-6)
        expected = head.linear(normed * (1 + head.scale_shift_table[1] + condition)
                               + head.scale_shift_table[0] + condition)
    torch.testing.assert_close(regression, expected)


@pytest.mark.parametrize("which", ["raster", "var"])
def test_the_class_position_is_marked_as_data(which, tiny_pipeline, var_pipeline):
    model = _distilled(tiny_pipeline if which == "raster" else var_pipeline, split=2)
    labels = torch.tensor([1, 4])
    noise = torch.randn(2, model.layout.length, model.config.code_dim, generator=torch.Generator().manual_seed(0))
    base = _outputs(model, noise, labels)  # timestep 0: no token position is data, only the class position
    with torch.no_grad():
        model.kind_embedding.weight[1] += 1.0
    assert not torch.allclose(_outputs(model, noise, labels), base)
    legacy = model.config.replace(mark_prefix_as_data=False)
    assert type(model)(legacy).prefix_kind(noise).abs().sum() == 0  # arvis 0.1's models: nothing there
