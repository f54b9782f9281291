"""The ``vapi`` method through the shared loop: what one step trains and freezes, what the pass is fed, and how
its terms combine (the objective's own invariants are in test_vapi_objective.py)."""

from __future__ import annotations

import types

import pytest
import torch
from torch.utils.data import DataLoader

import arvis
from arvis.data.captions import caption_vocabulary
from arvis.generators.base import GENERATORS
from arvis.pipeline import Pipeline
from arvis.posttrain import TrainingContext
from arvis.posttrain.vapi import VAPi, VAPiConfig
from arvis.posttrain.vapi.objective import group_advantages, noise_context
from arvis.testing import randomize_parameters_
from arvis.text import FrozenTextEncoder, TextTokenizer
from arvis.tokenizers.base import TOKENIZERS
from arvis.tokenizers.lpips import LIN_ENV, VGG_ENV
from arvis.train.posttrain import PostTrainConfig, post_train

CPU = types.SimpleNamespace(device=torch.device("cpu"), process_index=0, is_main_process=True)


@pytest.fixture(autouse=True)
def no_lpips_from_the_environment(monkeypatch):
    """These tests choose LPIPS themselves: weights the environment names must not change them."""
    monkeypatch.delenv(VGG_ENV, raising=False)
    monkeypatch.delenv(LIN_ENV, raising=False)


def _method(pipeline: Pipeline, tmp_path, **settings) -> VAPi:
    size = pipeline.tokenizer.image_size[0]
    config = VAPiConfig.from_dict({"data": {"image_size": size, "num_samples": 8}, "group_size": 4, **settings})
    method = VAPi(config, pipeline, pipeline_path="in-memory", output_dir=tmp_path)
    method.setup(CPU)
    return method


def _step(method: VAPi, model, batch, step: int = 0):
    """One micro-batch of step ``step`` -> (loss, metrics, {parameter name: gradient})."""
    model.train()
    model.zero_grad()
    method.before_step(step)
    loss, metrics = method.loss(TrainingContext(model=model, unwrapped=model, device=torch.device("cpu")), batch)
    loss.backward()
    return loss, metrics, {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def _batch(method: VAPi, size: int = 4):
    return next(iter(DataLoader(method.prepare_data(CPU), batch_size=size)))


def test_a_post_training_run_trains_the_generator_and_leaves_the_tokenizer_and_the_input(tiny_pipeline, tmp_path):
    path = tiny_pipeline.save_pretrained(tmp_path / "teacher")
    before = {p.name: p.read_bytes() for p in path.rglob("*") if p.is_file()}
    output, history = post_train(PostTrainConfig.from_dict({
        "method": "vapi", "pipeline": str(path),
        "method_config": {"data": {"image_size": 16, "num_samples": 8}, "group_size": 4, "context_noise": 0.5},
        "optim": {"learning_rate": 1e-2},
        "run": {"output_dir": str(tmp_path / "run"), "max_steps": 2, "batch_size": 4, "progress": False,
                "log_every": 1}}))
    assert before == {p.name: p.read_bytes() for p in path.rglob("*") if p.is_file()}
    trained = arvis.load(output)
    for name, value in tiny_pipeline.tokenizer.state_dict().items():
        assert torch.equal(trained.tokenizer.state_dict()[name], value), name
    changed = [name for name, value in tiny_pipeline.generator.state_dict().items()
               if not torch.equal(trained.generator.state_dict()[name], value)]
    assert changed
    assert trained.sampling == tiny_pipeline.sampling
    assert history[-1]["reward_has_lpips"] == 0.0 and history[-1]["mse"] > 0
    assert history[-1]["reward"] == pytest.approx(-history[-1]["mse"])  # MSE only: no LPIPS weights here


@pytest.mark.parametrize("noise", [0.0, 0.5])
def test_with_no_context_noise_the_pass_is_fed_the_ground_truth_and_with_noise_a_noised_copy(noise, tiny_pipeline,
                                                                                             tmp_path, monkeypatch):
    method = _method(tiny_pipeline, tmp_path, context_noise=noise)
    model = method.build_model()
    batch = _batch(method)
    fed = []
    original = type(model).forward

    def recording(self, inputs, condition, targets=None):
        fed.append((inputs.clone(), targets.clone(), self.training))
        return original(self, inputs, condition, targets=targets)

    monkeypatch.setattr(type(model), "forward", recording)
    _step(method, model, batch)
    (inputs, targets, training), = fed
    assert torch.equal(targets, batch["tokens"]) and not training  # one pass, in eval mode
    if noise == 0.0:
        assert torch.equal(inputs, batch["tokens"])
    else:
        assert 0.2 < (inputs != batch["tokens"]).float().mean() < 0.8


def test_identical_rewards_leave_only_the_cross_entropy_and_policy_weight_zero_is_the_ce_control(tiny_pipeline,
                                                                                               tmp_path):
    method = _method(tiny_pipeline, tmp_path, ce_weight=0.1)
    model = method.build_model()
    batch = _batch(method)
    method.sample_costs = lambda generator, samples, pixels: (torch.ones(samples.shape[:2]), None)
    _, metrics, gradients = _step(method, model, batch)
    assert metrics["reward_group_std"] == 0
    control = _method(tiny_pipeline, tmp_path, ce_weight=0.1, policy_weight=0.0)
    loss, control_metrics, control_gradients = _step(control, model, batch)
    assert "reward" not in control_metrics
    torch.testing.assert_close(loss, 0.1 * control_metrics["cross_entropy"])
    for name, gradient in gradients.items():
        torch.testing.assert_close(gradient, control_gradients[name], rtol=1e-5, atol=1e-8)


def test_the_policy_gradient_is_group_normalised_reinforce_on_the_drawn_samples(tiny_pipeline, tmp_path):
    """ρ = 1 in the one eval-mode pass: the gradient is −mean(A · mean_t ∇log π(x_t)) + β·∇CE with A the
    group-normalised rewards of exactly the sequences the stream drew, and the KL to the starting generator
    (itself at step 0) adds nothing."""
    method = _method(tiny_pipeline, tmp_path, ce_weight=0.1, context_noise=0.5)
    model = method.build_model()
    batch = _batch(method)
    drawn = {}
    costs = method.sample_costs

    def recording(generator, samples, pixels):
        drawn["samples"] = samples
        drawn["costs"] = costs(generator, samples, pixels)
        return drawn["costs"]

    method.sample_costs = recording
    _, metrics, gradients = _step(method, model, batch)
    with_kl = _method(tiny_pipeline, tmp_path, ce_weight=0.1, context_noise=0.5, kl_weight=0.5)
    _, kl_metrics, kl_gradients = _step(with_kl, model, batch)
    assert kl_metrics["kl"] == 0

    method.before_step(0)
    rng = method.streams.next(torch.device("cpu"))  # the same stream: step 0, micro-batch 0, replayed
    noised = noise_context(batch["tokens"], 0.5, model.vocab_size, rng)
    model.zero_grad()
    model.eval()
    output = model(noised, batch["labels"], targets=batch["tokens"])
    log_probs = output.logits.log_softmax(-1)
    samples = drawn["samples"]
    advantages = group_advantages(-drawn["costs"][0])
    chosen = log_probs[:, None].expand(-1, samples.shape[1], -1, -1).gather(-1, samples[..., None])[..., 0]
    expected = -(advantages * chosen.mean(-1)).mean() + 0.1 * output.loss
    expected.backward()
    for name, parameter in model.named_parameters():
        torch.testing.assert_close(gradients[name], parameter.grad, rtol=1e-4, atol=1e-7)
        torch.testing.assert_close(kl_gradients[name], parameter.grad, rtol=1e-4, atol=1e-7)
    assert metrics["policy_loss"].abs() < 1e-5  # −mean(A) at ρ = 1: advantages have zero mean per group


def test_the_same_seed_step_and_batch_give_the_same_loss_and_another_step_other_draws(tiny_pipeline, tmp_path):
    method = _method(tiny_pipeline, tmp_path, context_noise=0.5)
    model = method.build_model()
    batch = _batch(method)
    first, again, later = (_step(method, model, batch, step)[1] for step in (3, 3, 4))
    assert first == again
    assert first["reward"] != later["reward"]


def test_var_noises_the_ids_before_the_next_scale_inputs_and_trains(var_pipeline, tmp_path):
    method = _method(var_pipeline, tmp_path, context_noise=0.5)
    model = method.build_model()
    batch = _batch(method)
    fed = []
    original = model.teacher_forcing_inputs
    model.teacher_forcing_inputs = lambda tokens: fed.append(tokens) or original(tokens)
    _, metrics, gradients = _step(method, model, batch)
    assert 0.2 < (fed[0] != batch["tokens"]).float().mean() < 0.8
    assert metrics["mse"] > 0 and any(g.abs().sum() > 0 for g in gradients.values())
    frozen = {name for name, p in var_pipeline.generator.named_parameters() if not p.requires_grad}
    assert frozen and frozen == {name for name, p in model.named_parameters() if not p.requires_grad}
    assert all(name.startswith("quantizer.") for name in frozen)  # the frozen codebook stays frozen
    assert all(name in gradients for name, p in model.named_parameters() if p.requires_grad)


@pytest.mark.parametrize("prompts", ["learned table", "frozen encoder"])
def test_a_text_conditional_generator_trains_on_the_captions(prompts, tmp_path, request):
    preset = GENERATORS.preset("raster-t2i-tiny")
    if prompts == "learned table":
        text = {"text_tokenizer": TextTokenizer.word_level(caption_vocabulary())}
        preset = preset.replace(text_vocab_size=text["text_tokenizer"].vocab_size, prompt_length=12)
    else:
        text = {"text_encoder": FrozenTextEncoder.load(request.getfixturevalue("tiny_t5_folder"))}
        preset = preset.replace(text_vocab_size=None, text_feature_dim=16, prompt_length=12)
    generator = randomize_parameters_(GENERATORS.class_for_config(preset)(preset))
    pipeline = Pipeline(TOKENIZERS.build("vq-tiny"), generator, **text)
    method = _method(pipeline, tmp_path)
    batch = _batch(method)
    assert set(batch) == {"pixels", "tokens", "prompt", "prompt_mask"}
    assert batch["prompt"].is_floating_point() == (prompts == "frozen encoder")
    _, metrics, gradients = _step(method, method.build_model(), batch)
    assert metrics["mse"] > 0 and gradients
    with pytest.raises(ValueError, match="num_images"):
        _method(pipeline, tmp_path, num_images=4).prepare_data(CPU)


@pytest.mark.parametrize("settings, message", [
    ({"group_size": 1}, "group_size"),
    ({"context_noise": 1.5}, "context_noise"),
    ({"ce_weight": float("nan")}, "ce_weight"),
    ({"clip": 1.0}, "clip"),
    ({"mse_weight": 0.0, "lpips_weight": 0.0}, "reward"),
    ({"policy_weight": 0.0, "ce_weight": 0.0}, "CE-only"),
    ({"num_images": 0}, "num_images"),
    ({"lpips_weight": 0.0, "lpips_vgg_path": "vgg.pth"}, "lpips_weight is 0"),
])
def test_bad_settings_are_refused(settings, message):
    with pytest.raises(ValueError, match=message):
        VAPiConfig.from_dict(settings)


def test_data_that_does_not_fit_the_pipeline_is_refused(tiny_pipeline, tmp_path):
    with pytest.raises(ValueError, match="image_size"):
        VAPi(VAPiConfig.from_dict({"data": {"image_size": 32}}), tiny_pipeline, pipeline_path="x",
             output_dir=tmp_path).prepare_data(CPU)
    with pytest.raises(ValueError, match="classes"):
        _method(tiny_pipeline, tmp_path, data={"image_size": 16, "num_samples": 8, "num_classes": 4}).prepare_data(CPU)
    with pytest.raises(ValueError, match="random_flip"):
        _method(tiny_pipeline, tmp_path, data={"image_size": 16, "num_samples": 8, "random_flip": True}
                ).prepare_data(CPU)
    with pytest.raises(ValueError, match="holds 8"):
        _method(tiny_pipeline, tmp_path, num_images=9).prepare_data(CPU)
    subset = _method(tiny_pipeline, tmp_path, num_images=3).prepare_data(CPU)
    assert len(subset) == 3 and subset[2]["labels"] == 7  # evenly spaced: items 0, 4 (rounded from 3.5), 7


def test_each_group_is_scored_against_its_own_image(tiny_pipeline, tmp_path, monkeypatch):
    """A decoder whose image is the grey level its first id names: draw j of image i costs (level − image i)²."""
    method = _method(tiny_pipeline, tmp_path, decode_batch_size=4)  # two chunks: 4 + 2 draws
    monkeypatch.setattr(tiny_pipeline.tokenizer, "decode",
                        lambda tokens: (tokens[:, 0].float() / 32 - 1)[:, None, None, None].expand(-1, 3, 16, 16))
    pixels = torch.stack([torch.full((3, 16, 16), 0.25), torch.full((3, 16, 16), 0.75)])  # -0.5 and 0.5 in [-1, 1]
    first_ids = torch.tensor([[16, 16, 48], [48, 16, 16]])  # levels -0.5 or 0.5
    samples = first_ids[..., None].expand(-1, -1, 16)
    mse, distance = method.sample_costs(tiny_pipeline.generator, samples, pixels)
    assert distance is None
    torch.testing.assert_close(mse, torch.tensor([[0.0, 0.0, 1.0], [0.0, 1.0, 1.0]]))


def test_lpips_enters_the_reward_and_the_metrics(tiny_pipeline, tmp_path):
    method = _method(tiny_pipeline, tmp_path, lpips_weight=0.5)
    assert method.lpips is None and "MSE only" in method.reward_terms
    method.lpips = lambda images, references: torch.ones(len(images))
    _, metrics, _ = _step(method, method.build_model(), _batch(method))
    assert metrics["reward_has_lpips"] == 1 and metrics["lpips"] == 1
    torch.testing.assert_close(metrics["reward"], -(metrics["mse"] + 0.5))


def test_setup_refuses_missing_lpips_files_and_an_empty_reward(tiny_pipeline, tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="lpips_vgg_path .* not a file"):
        _method(tiny_pipeline, tmp_path, lpips_vgg_path=str(tmp_path / "absent.pth"))
    with pytest.raises(ValueError, match="reward would be empty"):
        _method(tiny_pipeline, tmp_path, mse_weight=0.0)
    (tmp_path / "vgg.pth").write_bytes(b"")
    with pytest.raises(ValueError, match="LPIPS was asked for \\(lpips_vgg_path\\) but did not load"):
        _method(tiny_pipeline, tmp_path, lpips_vgg_path=str(tmp_path / "vgg.pth"))  # the lin heads are missing
    monkeypatch.setenv(VGG_ENV, str(tmp_path / "absent.pth"))
    with pytest.raises(ValueError, match="LPIPS was asked for \\(ARVIS_LPIPS_VGG\\)"):
        _method(tiny_pipeline, tmp_path)
    assert _method(tiny_pipeline, tmp_path, policy_weight=0.0).lpips is None  # the CE-only control loads none


def test_the_kl_is_its_own_term_once_the_policy_has_moved(tiny_pipeline, tmp_path):
    method = _method(tiny_pipeline, tmp_path, kl_weight=0.3, policy_weight=0.5, ce_weight=0.1)
    model = method.build_model()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=torch.Generator().manual_seed(3)))
    loss, metrics, _ = _step(method, model, _batch(method))
    assert metrics["kl"] > 0
    torch.testing.assert_close(loss.detach(), 0.1 * metrics["cross_entropy"] + 0.5 * metrics["policy_loss"]
                               + 0.3 * metrics["kl"])


def test_rewards_are_float32_under_bf16_autocast(tiny_pipeline, tmp_path):
    method = _method(tiny_pipeline, tmp_path)
    batch = _batch(method)
    samples = batch["tokens"][:, None].expand(-1, 2, -1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mse, _ = method.sample_costs(tiny_pipeline.generator, samples, batch["pixels"])
    torch.testing.assert_close(mse, method.sample_costs(tiny_pipeline.generator, samples, batch["pixels"])[0],
                               rtol=0, atol=0)


def test_a_distilled_pipeline_is_refused(tiny_pipeline, tmp_path):
    from arvis.posttrain.distilled_decoding import DistilledRaster

    distilled = DistilledRaster.from_teacher(tiny_pipeline.generator, tiny_pipeline.tokenizer, split=4)
    pipeline = Pipeline(tiny_pipeline.tokenizer, distilled.eval())
    with pytest.raises(ValueError, match="token vectors"):
        VAPi(VAPiConfig(), pipeline, pipeline_path="x", output_dir=tmp_path)


@pytest.mark.parametrize("which", ["har", "larp"])
def test_hierarchical_and_video_generators_train(which, tmp_path):
    torch.manual_seed(0)
    if which == "har":
        tokenizer = TOKENIZERS.build("restok-tiny").eval()
        generator = GENERATORS.build("har-tiny")
        data = {"image_size": 16, "num_samples": 8}
    else:
        tokenizer = TOKENIZERS.build("larp-tiny", prior=False).eval()
        randomize_parameters_(tokenizer.output_proj)  # zero-initialised: give the clips some content
        generator = GENERATORS.build("sequence-tiny")
        data = {"name": "moving_glyphs", "image_size": 16, "num_frames": 4, "num_samples": 8}
    pipeline = Pipeline(tokenizer, randomize_parameters_(generator).eval())
    method = _method(pipeline, tmp_path, data=data)
    batch = _batch(method)
    assert batch["pixels"].shape[1:] == tokenizer.pixel_shape
    _, metrics, gradients = _step(method, method.build_model(), batch)
    assert metrics["mse"] > 0 and gradients and all(torch.isfinite(g).all() for g in gradients.values())
