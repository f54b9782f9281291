"""The interleaved generators (discrete, Orthus), their samplers, the diffusion schedule and the orthus method."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import arvis
from arvis.conditions import Condition
from arvis.data.captions import caption_vocabulary
from arvis.generators.base import GENERATORS, IGNORE_INDEX
from arvis.generators.interleaved import InterleavedGenerator
from arvis.generators.orthus import OrthusGenerator
from arvis.nn.noise_schedule import NoiseScheduleConfig, sampling_scheduler, training_scheduler, v_prediction_loss
from arvis.nn.norms import HeadLayerNorm
from arvis.nn.soft_embedding import SoftCodeEmbedding
from arvis.pipeline import Pipeline
from arvis.samplers import sampler_for
from arvis.samplers.diffusion_head import DiffusionHeadSettings, ddim_sample
from arvis.samplers.interleaved import InterleavedSettings
from arvis.samplers.logits import per_sample_generators
from arvis.testing import example_condition, randomize_parameters_
from arvis.text import TextTokenizer
from arvis.tokenizers.base import TOKENIZERS
from arvis.train.posttrain import PostTrainConfig, post_train

KINDS = torch.tensor([0, 1, 2])


def _model(name: str) -> InterleavedGenerator:
    torch.manual_seed(0)
    return randomize_parameters_(GENERATORS.build(name), std=0.2).eval()


def _images(model, batch: int = 3, seed: int = 0) -> torch.Tensor:
    rng = torch.Generator().manual_seed(seed)
    if isinstance(model, OrthusGenerator):
        return torch.nn.functional.normalize(torch.randn(batch, model.layout.length, model.config.latent_dim,
                                                         generator=rng), dim=-1)
    return torch.randint(0, model.vocab_size, (batch, model.layout.length), generator=rng)


def _stream_condition(model, documents) -> Condition:
    """The condition whose prompt segment the documents start with (emptied rows included)."""
    p = model.prompt_length
    return Condition(prompt=documents.ids[:, 1:1 + p], prompt_mask=documents.attendable[:, 1:1 + p])


# ---------------------------------------------------------------------------------------------- documents


def test_documents_lay_out_the_three_kinds_with_their_targets():
    model = _model("interleaved-tiny")
    images, condition = _images(model), example_condition(model, 3)
    documents = model.documents(images, condition, KINDS)
    stream, p, l = model.stream, model.prompt_length, model.layout.length
    caption = [condition.prompt[row][condition.prompt_mask[row]].tolist() for row in range(3)]
    codes = [(images[row] + stream.image_offset).tolist() for row in range(3)]
    prompt = [0] * (p - len(caption[0])) + caption[0]
    assert documents.ids[0, :1 + p + l + 2].tolist() == [stream.bos, *prompt, stream.boi, *codes[0], stream.eoi]
    assert documents.targets[0, p + l + 2] == stream.eos  # at <eoi>
    assert documents.ids[1, :1 + p].tolist() == [stream.bos] + [0] * p  # captioning runs under the empty prompt
    assert documents.ids[1, 1 + p:].tolist()[:l + 2 + len(caption[1])] == [stream.boi, *codes[1], stream.eoi, *caption[1]]
    assert documents.ids[2, 1 + p:].tolist()[:2 * l + 4 + len(caption[0])] == \
        [stream.boi, *codes[2], stream.eoi, *caption[0], stream.boi, *codes[0], stream.eoi]
    # the prompt is never a target; <eos> ends every document; padding is never attended to or predicted
    assert (documents.targets[:, :p] == IGNORE_INDEX).all()
    for row in range(3):
        valid = documents.targets[row][documents.targets[row] != IGNORE_INDEX]
        assert valid[0] == stream.boi and valid[-1] == stream.eos
    assert not documents.attendable[1, 1:1 + p].any()


def test_training_draws_the_kinds_from_the_mix_and_eval_writes_text_to_image():
    model = _model("interleaved-tiny")
    assert (model.draw_kinds(50, torch.device("cpu")) == 0).all()
    model.train()
    torch.manual_seed(1)
    kinds = model.draw_kinds(4000, torch.device("cpu"))
    fractions = torch.bincount(kinds, minlength=3).float() / 4000
    torch.testing.assert_close(fractions, torch.tensor(model.config.document_mix), atol=0.03, rtol=0)


# ---------------------------------------------------------------------------------------------- stepping


@pytest.mark.parametrize("name", ["interleaved-tiny", "orthus-tiny"])
def test_cached_stepping_in_text_and_image_modes_equals_the_full_forward(name):
    """Every kind (text then image, image then text, text image text image), fed one position at a time
    after a prefix, gives the teacher-forced logits and hidden states at every real position."""
    model = _model(name)
    documents = model.documents(_images(model), example_condition(model, 3), KINDS)
    condition = _stream_condition(model, documents)
    with torch.no_grad():
        hidden = model.run_trunk(documents)
        expected = model.logits(hidden)
        cache = model.new_cache(3)
        start = model.prompt_length + 2
        latents = documents.latents
        outputs = [model.step_stream(documents.ids[:, :start], condition, cache,
                                     latents=None if latents is None else latents[:, :start])]
        for position in range(start, documents.ids.shape[1]):
            outputs.append(model.step_stream(documents.ids[:, position:position + 1], condition, cache,
                                             latents=None if latents is None else latents[:, position:position + 1]))
    stepped = torch.cat([output.logits for output in outputs], dim=1)
    stepped_hidden = torch.cat([output.hidden for output in outputs], dim=1)
    real = documents.attendable[:, start - 1:]
    torch.testing.assert_close(stepped[real], expected[:, start - 1:][real], atol=1e-5, rtol=0)
    torch.testing.assert_close(stepped_hidden[real], hidden[:, start - 1:][real], atol=1e-5, rtol=0)
    image_rows = model.stream.is_image(documents.ids)
    assert image_rows[1].any() and (documents.ids[1] < model.stream.text_size).sum() > 1 + model.prompt_length


def test_orthus_steps_image_latents_and_its_loss_has_both_parts():
    model = _model("orthus-tiny")
    images, condition = _images(model), example_condition(model, 3)
    torch.manual_seed(0)
    output = model(images, condition, kinds=KINDS)
    assert output.text_loss > 0 and output.diffusion_loss > 0
    torch.testing.assert_close(output.loss, output.text_loss + model.config.diffusion_weight * output.diffusion_loss)
    with torch.no_grad():
        cache = model.new_cache(3)
        first = model.step(None, condition, cache)
        second = model.step(images[:, :1], condition, cache, output="both")
        documents = model.documents(images, condition, torch.zeros(3, dtype=torch.long))
        hidden = model.run_trunk(documents)
    start = model.prompt_length + 1
    torch.testing.assert_close(first, hidden[:, start:start + 1], atol=1e-5, rtol=0)
    torch.testing.assert_close(second.hidden, hidden[:, start + 1:start + 2], atol=1e-5, rtol=0)


def test_the_soft_input_at_a_vanishing_temperature_is_the_hard_vq_embedding():
    torch.manual_seed(0)
    codes = torch.nn.functional.normalize(torch.randn(64, 8), dim=-1)
    rows = torch.randn(64, 16)
    soft = SoftCodeEmbedding(64, 8, temperature=1e-4)
    soft.reset_parameters(codes)
    ids = torch.randint(0, 64, (3, 10))
    latents = codes[ids] + 0.01 * torch.randn(3, 10, 8)
    torch.testing.assert_close(soft(latents, rows), rows[ids], atol=1e-5, rtol=0)
    # upstream's tau = 1 on such unit codes (distances <= 4) gives the nearest code at most a fifth of the mix,
    # tau = 0.05 nearly all of it: the reason tau is a setting
    for temperature, bounds in ((1.0, (0.0, 0.2)), (0.05, (0.9, 1.0))):
        mixing = SoftCodeEmbedding(64, 8, temperature=temperature)
        mixing.reset_parameters(codes)
        nearest = mixing.weights(latents).gather(-1, ids[..., None])
        assert bounds[0] < nearest.min() and nearest.max() <= bounds[1] + 1e-6, temperature


def test_qk_norm_layer_norms_each_head_with_its_own_weight_and_bias():
    norm = HeadLayerNorm(3, 8)
    with torch.no_grad():
        norm.weight.normal_()
        norm.bias.normal_()
    x = torch.randn(2, 3, 5, 8)
    expected = torch.stack([torch.nn.functional.layer_norm(x[:, h], (8,), norm.weight[h, 0], norm.bias[h, 0])
                            for h in range(3)], dim=1)
    torch.testing.assert_close(norm(x), expected)
    assert "trunk.layers.0.attention.q_norm.weight" in GENERATORS.build("orthus-tiny").state_dict()


# ---------------------------------------------------------------------------------------------- diffusion schedule


def _alphas_cumprod(steps: int = 1000) -> torch.Tensor:
    """Orthus's schedule written out: scaled-linear betas, rescaled to zero terminal SNR (Lin et al. 2024)."""
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, steps, dtype=torch.float64) ** 2
    root = (1 - betas).cumprod(0).sqrt()
    first, last = root[0].clone(), root[-1].clone()
    root = (root - last) * first / (first - last)
    alphas = root ** 2
    alphas = torch.cat([alphas[:1], alphas[1:] / alphas[:-1]])
    return (1 - (1 - alphas)).cumprod(0)


def test_the_v_target_add_noise_and_ddim_step_match_the_written_out_schedule():
    config = NoiseScheduleConfig()
    train, sample = training_scheduler(config), sampling_scheduler(config, 100)
    bar = _alphas_cumprod()
    torch.testing.assert_close(train.alphas_cumprod.double(), bar, atol=1e-6, rtol=0)
    assert bar[-1] == 0  # zero terminal SNR
    rng = torch.Generator().manual_seed(0)
    clean, noise = torch.randn(6, 8, generator=rng), torch.randn(6, 8, generator=rng)
    t = torch.tensor([0, 10, 500, 900, 998, 999])
    a, s = bar[t].float().sqrt()[:, None], (1 - bar[t]).float().sqrt()[:, None]
    torch.testing.assert_close(train.add_noise(clean, noise, t), a * clean + s * noise, atol=1e-5, rtol=0)
    torch.testing.assert_close(train.get_velocity(clean, noise, t), a * noise - s * clean, atol=1e-5, rtol=0)
    # trailing spacing: 999, 989, ..., 9; each eta = 0 step is x_prev = sqrt(a_prev) x0 + sqrt(1 - a_prev) eps
    assert sample.timesteps.tolist() == list(range(999, 0, -10))
    x, v = torch.randn(4, 8, generator=rng), torch.randn(4, 8, generator=rng)
    for step in sample.timesteps[:3].tolist() + [9]:
        previous = step - 10
        a_t, a_prev = bar[step].float(), (bar[previous] if previous >= 0 else torch.tensor(1.0)).float()
        x0 = a_t.sqrt() * x - (1 - a_t).sqrt() * v
        eps = a_t.sqrt() * v + (1 - a_t).sqrt() * x
        torch.testing.assert_close(sample.step(v, step, x).prev_sample, a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps,
                                   atol=1e-5, rtol=0)


def test_the_diffusion_loss_is_the_mse_of_v_over_repeated_rows():
    scheduler = training_scheduler(NoiseScheduleConfig())
    clean, condition = torch.randn(3, 4), torch.randn(3, 5)
    seen = {}

    def denoise(noisy, timesteps, z):
        seen.update(noisy=noisy, timesteps=timesteps, z=z)
        return torch.zeros_like(noisy)

    torch.manual_seed(0)
    loss = v_prediction_loss(denoise, clean, condition, scheduler, repeats=4)
    torch.manual_seed(0)
    t = torch.randint(0, 1000, (12,))
    noise = torch.randn(12, 4)
    assert torch.equal(seen["timesteps"], t) and torch.equal(seen["z"], condition.repeat(4, 1))
    torch.testing.assert_close(loss, scheduler.get_velocity(clean.repeat(4, 1), noise, t).pow(2).mean())


# ---------------------------------------------------------------------------------------------- samplers


def test_the_interleaved_sampler_draws_text_to_image_as_the_next_token_sampler():
    model = _model("interleaved-tiny")
    condition = example_condition(model, 3)
    settings = dict(cfg_scale=2.0, cfg_schedule="linear", top_k=10, temperature=1.1)
    expected = sampler_for(model, "next-token", **settings)(model, condition, rng=per_sample_generators(0, 0, 3))
    drawn = sampler_for(model, "interleaved", **settings)(model, condition, rng=per_sample_generators(0, 0, 3))
    assert torch.equal(drawn, expected)


@pytest.mark.parametrize("eta", [0.0, 0.5])
def test_head_sampling_is_deterministic_given_the_noise_and_a_batch_is_its_rows_one_by_one(eta):
    model = _model("orthus-tiny")
    condition = example_condition(model, 3)
    sampler = sampler_for(model, cfg_scale=3.0, ddim_steps=8, ddim_eta=eta)
    first = sampler(model, condition, rng=per_sample_generators(5, 0, 3))
    again = sampler(model, condition, rng=per_sample_generators(5, 0, 3))
    other = sampler(model, condition, rng=per_sample_generators(6, 0, 3))
    one_by_one = torch.cat([sampler(model, condition.select(slice(row, row + 1)), rng=per_sample_generators(5, row, 1))
                            for row in range(3)])
    assert first.shape == (3, model.layout.length, model.config.latent_dim) and first.dtype == torch.float32
    assert torch.equal(first, again) and not torch.allclose(first, other)
    torch.testing.assert_close(first, one_by_one, atol=1e-4, rtol=1e-4)


def test_ddim_with_guidance_mixes_the_v_predictions():
    scheduler = sampling_scheduler(NoiseScheduleConfig(), 5)
    cond, uncond = torch.randn(2, 3), torch.randn(2, 3)

    def denoise(x, t, z):  # v depends only on the condition
        return z.repeat(1, 2)[:, :4] * 0 + z[:, :1]

    guided = ddim_sample(denoise, cond, uncond, torch.tensor([3.0, 1.0]), scheduler, 4, eta=0.0, temperature=1.0,
                         rng=per_sample_generators(0, 0, 2))
    mixed = uncond[:, :1] + torch.tensor([[3.0], [1.0]]) * (cond[:, :1] - uncond[:, :1])
    reference = ddim_sample(lambda x, t, z: mixed.expand(-1, 4), cond, None, None, scheduler, 4, eta=0.0,
                            temperature=1.0, rng=per_sample_generators(0, 0, 2))
    torch.testing.assert_close(guided, reference)


@pytest.mark.parametrize("name", ["interleaved-tiny", "orthus-tiny"])
def test_batched_captions_and_documents_equal_one_by_one(name):
    model = _model(name)
    condition = example_condition(model, 3)
    sampler = sampler_for(model, model.samplers[-1], **({"ddim_steps": 4} if name == "orthus-tiny" else {}))
    images = _images(model)
    captions = sampler.caption(model, images, rng=per_sample_generators(0, 0, 3))
    alone = torch.cat([sampler.caption(model, images[row:row + 1], rng=per_sample_generators(0, row, 1))
                       for row in range(3)])
    assert torch.equal(captions, alone) and captions.shape == (3, model.prompt_length)
    assert (captions < model.stream.text_size).all()
    sampler = sampler_for(model, settings=sampler.settings.replace(cfg_scale=2.0, cfg_schedule="linear"))
    documents = sampler.interleave(model, condition, rng=per_sample_generators(0, 0, 3), images=2)
    for row in range(3):
        single = sampler.interleave(model, condition.select(slice(row, row + 1)), rng=per_sample_generators(0, row, 1))
        width = single.ids.shape[1]
        assert torch.equal(documents.ids[row, :width], single.ids[0])
        assert (documents.ids[row, width:] == 0).all()
        ids = single.ids[0]
        assert (ids == model.stream.boi).sum() == 2 and (ids == model.stream.eoi).sum() == 2
        assert ids[-1] == model.stream.eos


def test_samplers_refuse_documents_that_do_not_fit_and_bad_settings():
    model = _model("orthus-tiny")
    condition = example_condition(model, 2)
    with pytest.raises(ValueError, match="may need .* positions; the generator holds"):
        sampler_for(model, ddim_steps=2).interleave(model, condition, images=3)
    with pytest.raises(ValueError, match="got 3 per-sample generators for a batch of 2"):
        sampler_for(model, ddim_steps=2)(model, condition, rng=per_sample_generators(0, 0, 3))
    with pytest.raises(ValueError, match="at least one image"):
        sampler_for(model).interleave(model, condition, images=0)
    with pytest.raises(ValueError, match="ddim_steps cannot exceed|cannot exceed"):
        sampler_for(model, ddim_steps=2000)(model, condition)
    for bad in ({"ddim_steps": 0}, {"ddim_eta": -1.0}, {"head_temperature": 0.0}, {"max_text_tokens": -1},
                {"ddim_eta": float("nan")}):
        with pytest.raises(ValueError):
            DiffusionHeadSettings(**bad)
    with pytest.raises(ValueError, match="max_text_tokens"):
        InterleavedSettings(max_text_tokens=-2)


# ---------------------------------------------------------------------------------------------- input checks


def test_bad_inputs_get_errors_that_name_them():
    orthus, discrete = _model("orthus-tiny"), _model("interleaved-tiny")
    condition = example_condition(orthus, 2)
    latents = _images(orthus, 2)
    with pytest.raises(ValueError, match=r"expected image latents \(b, 16, 4\)"):
        orthus(latents[:, :3], condition)
    with pytest.raises(ValueError, match="NaN or infinite"):
        orthus(latents.masked_fill(torch.ones_like(latents, dtype=torch.bool), float("nan")), condition)
    with pytest.raises(ValueError, match="builds its targets"):
        discrete(_images(discrete, 2), condition, targets=_images(discrete, 2))
    with pytest.raises(ValueError, match="kinds must be"):
        discrete(_images(discrete, 2), condition, kinds=torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="latent_scale is unset"):
        OrthusGenerator(orthus.config.replace(latent_scale=None))(latents, condition)
    with pytest.raises(ValueError, match="prompt token ids must lie in"):
        discrete(_images(discrete, 2), Condition(prompt=torch.full((2, 10), 99), prompt_mask=torch.ones(2, 10, dtype=torch.bool)))
    with pytest.raises(ValueError, match="document_mix"):
        orthus.config.replace(document_mix=(0.0, 0.0, 0.0))
    with pytest.raises(ValueError, match="give text_vocab_size"):
        discrete.config.replace(text_vocab_size=None)


# ---------------------------------------------------------------------------------------------- pipelines and the method


def _discrete_pipeline() -> Pipeline:
    torch.manual_seed(0)
    tokenizer = TOKENIZERS.build("vq-tiny").eval()
    generator = randomize_parameters_(GENERATORS.build("interleaved-tiny"), std=0.2).eval()
    return Pipeline(tokenizer, generator, InterleavedSettings(top_k=8), text_tokenizer=TextTokenizer.word_level(
        caption_vocabulary()))


def test_orthus_base_trains_only_the_added_modules_and_the_unified_stage_everything(tmp_path):
    path = _discrete_pipeline().save_pretrained(tmp_path / "discrete")
    before = {p.name: p.read_bytes() for p in path.rglob("*") if p.is_file()}
    run = {"max_steps": 12, "batch_size": 8, "progress": False, "log_every": 1}
    base, history = post_train(PostTrainConfig.from_dict({
        "method": "orthus", "pipeline": str(path),
        "method_config": {"stage": "base", "preset": "orthus-tiny", "generator": {"latent_scale": None},
                          "data": {"image_size": 16, "num_samples": 32}},
        "optim": {"learning_rate": 3e-3}, "run": {**run, "output_dir": str(tmp_path / "base")}}))
    assert before == {p.name: p.read_bytes() for p in path.rglob("*") if p.is_file()}
    losses = [entry["diffusion_loss"] for entry in history]
    assert np.mean(losses[-4:]) < np.mean(losses[:4])
    discrete, orthus = arvis.load(path).generator, arvis.load(base).generator
    assert isinstance(orthus, OrthusGenerator) and arvis.load(base).sampler_name == "diffusion-head"
    assert orthus.config.latent_scale == pytest.approx(1 / 0.5, rel=0.5)  # 1 / std of the 4-d unit latents
    shared = discrete.state_dict()
    changed = {name for name, value in orthus.state_dict().items()
               if name not in shared or not torch.equal(value, shared[name])}
    assert changed and all(name.startswith(("soft_embedding.", "diffusion_head.")) for name in changed)
    unified, _ = post_train(PostTrainConfig.from_dict({
        "method": "orthus", "pipeline": str(base), "method_config": {"stage": "unified", "data": {"image_size": 16,
                                                                                               "num_samples": 32}},
        "optim": {"learning_rate": 3e-3}, "run": {**run, "max_steps": 2, "output_dir": str(tmp_path / "unified")}}))
    tuned = arvis.load(unified).generator
    assert not torch.equal(tuned.trunk.layers[0].attention.wqkv.weight, orthus.trunk.layers[0].attention.wqkv.weight)


def test_the_generator_trainer_refuses_a_generator_of_latents(tmp_path):
    from arvis.train.generator import GeneratorTrainConfig, train_generator

    TOKENIZERS.build("vq-tiny").save_pretrained(tmp_path / "tokenizer")
    config = GeneratorTrainConfig.from_dict({"tokenizer_path": str(tmp_path / "tokenizer"), "generator": "orthus-tiny",
                                             "data": {"image_size": 16, "num_samples": 8},
                                             "run": {"output_dir": str(tmp_path / "run"), "progress": False}})
    with pytest.raises(ValueError, match="models continuous latents.*--method orthus"):
        train_generator(config)


def test_the_method_refuses_a_pipeline_of_the_wrong_stage(tmp_path):
    from arvis.posttrain.orthus import Orthus, OrthusMethodConfig

    pipeline = _discrete_pipeline()
    with pytest.raises(ValueError, match="run stage=base on the discrete pipeline first"):
        Orthus(OrthusMethodConfig.from_dict({"stage": "unified", "data": {"image_size": 16}}), pipeline,
               pipeline_path="x", output_dir=tmp_path)
    with pytest.raises(ValueError, match="random_flip"):
        OrthusMethodConfig.from_dict({"data": {"random_flip": True}})


def test_pipelines_round_trip_and_caption_and_interleave_through_the_api(tmp_path, tiny_pipeline):
    discrete = _discrete_pipeline()
    tokenizer = discrete.tokenizer
    orthus = OrthusGenerator.from_discrete(discrete.generator, tokenizer, GENERATORS.preset("orthus-tiny"))
    randomize_parameters_(orthus.diffusion_head, std=0.2)
    pipeline = Pipeline(tokenizer, orthus.eval(), DiffusionHeadSettings(ddim_steps=4, cfg_scale=2.0),
                        text_tokenizer=discrete.text_tokenizer)
    loaded = arvis.load(pipeline.save_pretrained(tmp_path / "orthus"))
    assert loaded.generator.config == orthus.config and loaded.sampling == pipeline.sampling
    for name, value in orthus.state_dict().items():
        assert torch.equal(loaded.generator.state_dict()[name], value), name
    prompts = ["a small red ring at the top left", "a large blue cross in the centre"]
    images = arvis.generate(loaded, prompts=prompts, seed=3, output_type="pt")
    assert images.shape == (2, 3, 16, 16)
    torch.testing.assert_close(images, arvis.generate(pipeline, prompts=prompts, seed=3, output_type="pt"))
    for model in (discrete, loaded):
        captions = arvis.caption(model, images, seed=1)
        assert len(captions) == 2 and all(isinstance(text, str) for text in captions)
        assert captions == arvis.caption(model, images, seed=1, batch_size=1)  # seeded per image
        assert len(arvis.caption(model, [Image.fromarray(a) for a in arvis.api.to_uint8(images)], seed=1)) == 2
        documents = arvis.interleave(model, prompts[:1], images=2, num_samples=2, seed=0)
        assert len(documents) == 2
        for document in documents:
            assert sum(isinstance(part, Image.Image) for part in document) == 2
            assert all(isinstance(part, (str, Image.Image)) for part in document)
    with pytest.raises(ValueError, match="writes no text"):
        arvis.caption(tiny_pipeline, images)
    with pytest.raises(ValueError, match=r"images must be 16x16"):
        arvis.caption(discrete, torch.rand(1, 3, 8, 8))
    with pytest.raises(ValueError, match=r"lie in \[0, 1\]"):
        arvis.caption(discrete, torch.rand(1, 3, 16, 16) * 2)


def test_the_cli_captions_image_files(tmp_path, capsys):
    from arvis.cli import main

    path = _discrete_pipeline().save_pretrained(tmp_path / "discrete")
    files = []
    for index in range(2):
        files.append(str(tmp_path / f"glyph{index}.png"))
        Image.fromarray((np.random.default_rng(index).random((16, 16, 3)) * 255).astype(np.uint8)).save(files[-1])
    assert main(["caption", str(path), *files, "--seed", "2", "--top-k", "4"]) == 0
    captions = __import__("json").loads(capsys.readouterr().out.strip().splitlines()[-1])["captions"]
    assert sorted(captions) == sorted(files) and all(isinstance(text, str) for text in captions.values())
    assert main(["caption", str(path), str(tmp_path / "missing.png")]) != 0
