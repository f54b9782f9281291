"""Small end-to-end training runs on the built-in glyphs: losses must fall, outputs must load."""

import pytest
import torch

from safetensors.torch import load_file

import arvis
from arvis.tokenizers.base import Tokenizer
from arvis.train.generator import GeneratorTrainConfig, train_generator
from arvis.train.loop import lr_multiplier
from arvis.train.options import OptimConfig
from arvis.train.recipe import load_recipe
from arvis.train.tokenizer import TokenizerTrainConfig, train_tokenizer

TINY_DATA = ["data.image_size=16", "data.num_samples=512"]


@pytest.fixture(scope="module")
def trained_tokenizer(tmp_path_factory):
    output = tmp_path_factory.mktemp("tokenizer")
    config = load_recipe(TokenizerTrainConfig, None, TINY_DATA + [
        "tokenizer=vq-tiny", "run.batch_size=16", "run.max_steps=60", "run.log_every=10", "run.progress=false",
        f"run.output_dir={output}", "optim.learning_rate=2e-3", "loss.perceptual_weight=0", "loss.disc_start=50",
        "loss.disc_ndf=8", "loss.disc_layers=2",
    ])
    path, history = train_tokenizer(config)
    return path, history


def test_tokenizer_training_reduces_reconstruction_error_and_saves(trained_tokenizer):
    path, history = trained_tokenizer
    by_step = {record["step"]: record for record in history}
    assert by_step[50]["l2"] < 0.7 * by_step[1]["l2"]  # before the discriminator starts
    assert "discriminator" in by_step[60] and "discriminator" not in by_step[50]  # D starts at step 50
    tokenizer = Tokenizer.from_pretrained(path)
    assert tokenizer.config.image_size == 16 and not tokenizer.training


@pytest.mark.parametrize("generator", ["raster-tiny", "token-shuffle-tiny"])
def test_generator_training_reduces_loss_and_saves_a_pipeline(trained_tokenizer, tmp_path, generator):
    tokenizer_path, _ = trained_tokenizer
    config = load_recipe(GeneratorTrainConfig, None, TINY_DATA + [
        f"tokenizer_path={tokenizer_path}", f"generator={generator}", "run.batch_size=32", "run.max_steps=80",
        "run.log_every=10", "run.progress=false", f"run.output_dir={tmp_path / 'pipeline'}",
        "optim.learning_rate=3e-3", "sampling.cfg_scale=2.0",
    ])
    path, history = train_generator(config)
    assert history[-1]["loss"] < history[0]["loss"] - 0.3
    pipeline = arvis.load(path)
    assert pipeline.sampling.cfg_scale == 2.0 and pipeline.generator.vocab_size == pipeline.tokenizer.vocab_size
    images = arvis.generate(pipeline, class_labels=[0, 1], num_samples=2, output_type="pt")
    assert images.shape == (4, 3, 16, 16) and torch.isfinite(images).all()


@pytest.mark.parametrize("generator", ["raster-t2i-tiny", "token-shuffle-t2i-tiny"])
def test_text_to_image_training_learns_the_captions_and_saves_their_tokenizer(trained_tokenizer, tmp_path,
                                                                              generator):
    from arvis.data import GlyphDataset

    tokenizer_path, _ = trained_tokenizer
    common = TINY_DATA + [f"tokenizer_path={tokenizer_path}", f"generator={generator}", "run.batch_size=32",
                          "run.max_steps=60", "run.log_every=10", "run.progress=false", "optim.learning_rate=3e-3",
                          "generator_config.prompt_length=12"]
    config = load_recipe(GeneratorTrainConfig, None, common + [f"run.output_dir={tmp_path / 't2i'}"])
    path, history = train_generator(config)
    assert history[-1]["loss"] < history[0]["loss"] - 0.3
    pipeline = arvis.load(path)
    assert pipeline.text_tokenizer is not None and "prompt" in pipeline.generator.condition_fields
    captions = [GlyphDataset(2, image_size=16).caption(index) for index in range(2)]
    assert arvis.generate(pipeline, prompts=captions, output_type="pt").shape == (2, 3, 16, 16)
    for bad in ("data.random_flip=true", "generator_config.text_vocab_size=8", "generator=raster-t2i-t5-tiny"):
        with pytest.raises(ValueError, match="random_flip|text_vocab_size"):
            train_generator(load_recipe(GeneratorTrainConfig, None, common + [bad, f"run.output_dir={tmp_path / 'x'}"]))


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_runs_after_an_fp32_run_in_the_same_process(trained_tokenizer, tmp_path, precision):
    tokenizer_path, _ = trained_tokenizer  # trained in fp32 earlier in this process
    config = load_recipe(GeneratorTrainConfig, None, TINY_DATA + [
        f"tokenizer_path={tokenizer_path}", "generator=raster-tiny", "run.batch_size=16", "run.max_steps=3",
        "run.progress=false", f"run.output_dir={tmp_path / precision}", f"run.mixed_precision={precision}",
    ])
    path, history = train_generator(config)
    assert all(torch.isfinite(torch.tensor(record["loss"])) for record in history)
    assert arvis.load(path).generator.vocab_size == 64


def test_flip_augmentation_encodes_mirrors(trained_tokenizer):
    from arvis.data import GlyphDataset
    from arvis.train.generator import encode_dataset

    tokenizer = Tokenizer.from_pretrained(trained_tokenizer[0])
    dataset = GlyphDataset(8, image_size=16)
    plain = encode_dataset(tokenizer, dataset, 4, torch.device("cpu"))
    mirrored = encode_dataset(tokenizer, dataset, 4, torch.device("cpu"), with_mirrors=True)
    assert len(mirrored) == 16 and len(plain) == 8
    images = torch.stack([dataset[i][0] for i in range(4)])
    expected = tokenizer.encode(tokenizer.from_unit_range(images.flip(-1)))
    assert torch.equal(mirrored.tensors[0][8:12], expected)  # rows 0..7 images, rows 8..15 their mirrors
    assert torch.equal(mirrored.tensors[0][:8], plain.tensors[0])


def test_existing_output_is_never_overwritten_by_default(trained_tokenizer):
    tokenizer_path, _ = trained_tokenizer
    assert tokenizer_path.name == "tokenizer"  # the export inside the run folder
    config = load_recipe(TokenizerTrainConfig, None, TINY_DATA + ["tokenizer=vq-tiny",
                                                                  f"run.output_dir={tokenizer_path.parent}"])
    with pytest.raises(ValueError, match="already holds a trained result.*run.overwrite=true"):
        train_tokenizer(config)


def test_generator_incompatible_with_the_tokenizer_fails_before_training(trained_tokenizer, tmp_path):
    config = load_recipe(GeneratorTrainConfig, None, TINY_DATA + [
        f"tokenizer_path={trained_tokenizer[0]}", "generator=raster-tiny", "generator_config.vocab_size=99",
        f"run.output_dir={tmp_path / 'g'}",
    ])
    with pytest.raises(ValueError, match="vocabulary"):
        train_generator(config)


def test_mismatched_image_size_is_reported(tmp_path):
    config = load_recipe(TokenizerTrainConfig, None, ["tokenizer=vq-tiny", "data.image_size=32",
                                                      f"run.output_dir={tmp_path}"])
    with pytest.raises(ValueError, match="image_size"):
        train_tokenizer(config)


def test_generator_training_needs_a_tokenizer(tmp_path):
    with pytest.raises(ValueError, match="tokenizer_path"):
        train_generator(GeneratorTrainConfig())
    config = load_recipe(GeneratorTrainConfig, None, [f"tokenizer_path={tmp_path / 'absent'}"])
    with pytest.raises(FileNotFoundError, match="absent"):
        train_generator(config)


def test_learning_rate_schedule_shapes():
    warm_cosine = OptimConfig(warmup_steps=10, schedule="cosine", min_lr_ratio=0.1)
    assert lr_multiplier(0, warm_cosine, 110) == pytest.approx(0.1)
    assert lr_multiplier(9, warm_cosine, 110) == pytest.approx(1.0)
    assert lr_multiplier(60, warm_cosine, 110) == pytest.approx(0.55)
    assert lr_multiplier(110, warm_cosine, 110) == pytest.approx(0.1)
    assert lr_multiplier(60, OptimConfig(schedule="linear"), 100) == pytest.approx(0.4)
    assert lr_multiplier(99, OptimConfig(), 100) == 1.0


def _folder_with(tmp_path, problem: str):
    """An image folder root with one kind of problem (or none)."""
    from PIL import Image

    root = tmp_path / "images"
    if problem == "missing folder":
        return root
    (root / "cat").mkdir(parents=True)
    if problem == "empty folder":
        return root
    Image.new("RGB", (16, 16), (200, 10, 10)).save(root / "cat" / "good.png")
    (root / "cat" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    return root


@pytest.mark.parametrize("problem, error, message", [
    ("missing folder", FileNotFoundError, "images"),
    ("empty folder", ValueError, "no images"),
    ("corrupt image", ValueError, "corrupt.png"),
])
@pytest.mark.parametrize("trainer", ["tokenizer", "generator"])
def test_bad_data_fails_before_training_starts(trainer, problem, error, message, tmp_path, monkeypatch):
    import arvis.train.generator as generator_module
    import arvis.train.tokenizer as tokenizer_module

    module = tokenizer_module if trainer == "tokenizer" else generator_module

    def training_started(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr(module, "ProgressLog", training_started)
    overrides = ["data.name=folder", f"data.root={_folder_with(tmp_path, problem)}", "data.image_size=16",
                 f"run.output_dir={tmp_path / 'run'}"]
    if trainer == "tokenizer":
        config = load_recipe(TokenizerTrainConfig, None, ["tokenizer=vq-tiny", *overrides])
    else:
        arvis.build("vq-tiny").save_pretrained(tmp_path / "tokenizer")
        config = load_recipe(GeneratorTrainConfig, None, [f"tokenizer_path={tmp_path / 'tokenizer'}",
                                                          "generator=raster-tiny", *overrides])
    with pytest.raises(error, match=message):
        (train_tokenizer if trainer == "tokenizer" else train_generator)(config)
    assert not (tmp_path / "run" / trainer).exists() and not (tmp_path / "run" / "pipeline").exists()


def test_optimizer_groups_follow_decay_rules_and_learning_rate_multipliers():
    from torch import nn

    from arvis.train.loop import build_optimizer

    class WithPrior(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Linear(4, 4)
            self.prior = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))

        def learning_rate_multipliers(self):
            return {"prior.": 50.0}

    model = WithPrior()
    optimizer = build_optimizer(model, OptimConfig(learning_rate=1e-4, weight_decay=0.1))
    by_param = {id(p): group for group in optimizer.param_groups for p in group["params"]}
    assert by_param[id(model.body.weight)]["lr"] == 1e-4 and by_param[id(model.body.weight)]["weight_decay"] == 0.1
    assert by_param[id(model.body.bias)]["weight_decay"] == 0.0
    assert by_param[id(model.prior[0].weight)]["lr"] == pytest.approx(5e-3)
    assert by_param[id(model.prior[0].weight)]["weight_decay"] == 0.1
    assert by_param[id(model.prior[1].weight)]["lr"] == pytest.approx(5e-3)
    assert by_param[id(model.prior[1].weight)]["weight_decay"] == 0.0
    assert sum(len(group["params"]) for group in optimizer.param_groups) == len(list(model.parameters()))


def test_video_tokenizer_trains_on_moving_glyphs_and_saves_without_its_prior(tmp_path):
    config = load_recipe(TokenizerTrainConfig, None, [
        "tokenizer=larp-tiny", "data.name=moving_glyphs", "data.image_size=16", "data.num_frames=4",
        "data.num_samples=256", "run.batch_size=8", "run.max_steps=40", "run.log_every=1", "run.progress=false",
        f"run.output_dir={tmp_path}", "optim.learning_rate=3e-3", "loss.l2_weight=0", "loss.l1_weight=1",
        "loss.perceptual_weight=0",
    ])
    path, history = train_tokenizer(config)
    first, last = sum(h["l1"] for h in history[:5]) / 5, sum(h["l1"] for h in history[-5:]) / 5
    assert last < 0.8 * first, (first, last)
    assert {"prior", "prior_cross_entropy", "prior_accuracy"} <= set(history[-1])
    tokenizer = Tokenizer.from_pretrained(path)
    assert tokenizer.prior is None and not tokenizer.config.prior
    # Stage 2 on the same clips: the sequence generator over the 1D tokens, then clips from the pipeline.
    pipeline_path, generator_history = train_generator(load_recipe(GeneratorTrainConfig, None, [
        f"tokenizer_path={path}", "generator=sequence-tiny", "data.name=moving_glyphs", "data.image_size=16",
        "data.num_frames=4", "data.num_samples=64", "run.batch_size=16", "run.max_steps=40", "run.log_every=1",
        "run.progress=false", f"run.output_dir={tmp_path / 'video-pipeline'}", "optim.learning_rate=3e-3",
    ]))
    assert generator_history[-1]["loss"] < generator_history[0]["loss"] - 0.3
    clips = arvis.generate(pipeline_path, [0, 1], output_type="pt")
    assert clips.shape == (2, 3, 4, 16, 16)
    with pytest.raises(ValueError, match="takes clips"):
        train_tokenizer(load_recipe(TokenizerTrainConfig, None, [
            "tokenizer=larp-tiny", "data.image_size=16", f"run.output_dir={tmp_path / 'images'}"]))
    with pytest.raises(ValueError, match="num_frames"):
        train_tokenizer(load_recipe(TokenizerTrainConfig, None, [
            "tokenizer=larp-tiny", "data.name=moving_glyphs", "data.image_size=16", "data.num_frames=8",
            f"run.output_dir={tmp_path / 'frames'}"]))


def test_larp_adversarial_recipe_trains_and_resumes_to_the_same_weights(tmp_path, kill_at_step):
    """LARP's GAN set-up (video transformer D on whole clips, smoothed labels, D every 2nd step, LeCam): a
    run killed after its step-3 checkpoint resumes to the uninterrupted run's weights and D logs."""
    def recipe(output_dir):
        return load_recipe(TokenizerTrainConfig, None, [
            "tokenizer=larp-tiny", "data.name=moving_glyphs", "data.image_size=16", "data.num_frames=4",
            "data.num_samples=64", "run.batch_size=4", "run.max_steps=6", "run.log_every=1", "run.progress=false",
            "run.checkpoint_every=3", f"run.output_dir={output_dir}", "loss.perceptual_weight=0", "loss.l1_weight=1",
            "loss.disc_start=0", "loss.discriminator=video_transformer", "loss.disc_loss=non_saturating_smooth",
            "loss.disc_every=2", "loss.lecam_weight=0.001", "loss.disc_weight=0.3", "loss.video_disc.width=32",
            "loss.video_disc.depth=1", "loss.video_disc.num_heads=2", "loss.video_disc.temporal_patch_size=2",
        ])

    reference, history = train_tokenizer(recipe(tmp_path / "whole"))
    assert [entry["step"] for entry in history if "lecam" in entry] == [1, 3, 5]  # D updates at steps 0, 2, 4
    assert all("adversarial" in entry for entry in history)
    kill_at_step(4)
    with pytest.raises(KeyboardInterrupt):
        train_tokenizer(recipe(tmp_path / "split"))
    kill_at_step(None)
    resumed, resumed_history = train_tokenizer(recipe(tmp_path / "split"))
    last, resumed_last = history[-2], resumed_history[-2]  # step 5: a D update, after the resume
    assert resumed_last["step"] == last["step"] == 5
    for name in ("lecam", "discriminator", "adversarial"):
        assert resumed_last[name] == pytest.approx(last[name], rel=1e-6), name
    first, second = load_file(reference / "model.safetensors"), load_file(resumed / "model.safetensors")
    for name in first:
        torch.testing.assert_close(second[name], first[name], atol=0, rtol=0, msg=name)


def test_restok_nested_dropout_resumes_exactly_and_differs_per_step(tmp_path, kill_at_step):
    """ResTok's kept counts come from a generator seeded by (seed, step, micro-batch, process): a killed run
    resumes to the uninterrupted run's weights with no extra state, and the counts change from step to step."""
    def recipe(output_dir):
        return load_recipe(TokenizerTrainConfig, None, [
            "tokenizer=restok-tiny", "tokenizer_config.nested_dropout_prob=0.3", "data.image_size=16",
            "data.num_samples=64", "run.batch_size=8",
            "run.max_steps=6", "run.log_every=1", "run.progress=false", "run.checkpoint_every=3",
            "run.gradient_accumulation_steps=2", f"run.output_dir={output_dir}", "loss.perceptual_weight=0",
            "loss.disc_start=100"])

    reference, history = train_tokenizer(recipe(tmp_path / "whole"))
    assert len({round(entry["kept_tokens"], 6) for entry in history}) > 1  # not the same draw every step
    kill_at_step(4)
    with pytest.raises(KeyboardInterrupt):
        train_tokenizer(recipe(tmp_path / "split"))
    kill_at_step(None)
    resumed, _ = train_tokenizer(recipe(tmp_path / "split"))
    first, second = load_file(reference / "model.safetensors"), load_file(resumed / "model.safetensors")
    for name in first:
        torch.testing.assert_close(second[name], first[name], atol=0, rtol=0, msg=name)
