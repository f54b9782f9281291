"""Checkpoints, resume, gradient accumulation and EMA of the training loop (tiny generator, CPU)."""

import pytest
import torch
import yaml
from safetensors.torch import load_file

from arvis.train.checkpoint import complete_checkpoints, latest_checkpoint
from arvis.train.ema import EMA
from arvis.train.generator import GeneratorTrainConfig, train_generator
from arvis.train.recipe import load_recipe

NO_DROPOUT = ["generator_config.class_dropout=0", "generator_config.token_dropout=0",
              "generator_config.resid_dropout=0", "generator_config.ffn_dropout=0"]


def recipe(tokenizer_path, output_dir, *overrides):
    return load_recipe(GeneratorTrainConfig, None, [
        f"tokenizer_path={tokenizer_path}", "generator=raster-tiny", "data.image_size=16", "data.num_samples=64",
        "run.batch_size=8", "run.max_steps=6", "run.progress=false", f"run.output_dir={output_dir}",
        "optim.learning_rate=3e-3", "optim.warmup_steps=2", "optim.schedule=cosine", *overrides,
    ])


def generator_weights(pipeline_path):
    return load_file(pipeline_path / "generator" / "model.safetensors")


def assert_same_weights(first, second, atol=0.0):
    assert first.keys() == second.keys()
    for name in first:
        torch.testing.assert_close(first[name], second[name], atol=atol, rtol=0, msg=name)


def test_killed_run_resumes_to_the_same_weights(tokenizer_path, tmp_path, kill_at_step):
    settings = ["run.checkpoint_every=3", "run.gradient_accumulation_steps=2", "run.ema_decay=0.9"]
    reference, _ = train_generator(recipe(tokenizer_path, tmp_path / "whole", *settings))

    kill_at_step(4)
    with pytest.raises(KeyboardInterrupt):
        train_generator(recipe(tokenizer_path, tmp_path / "split", *settings))
    kill_at_step(None)
    assert [step for step, _ in complete_checkpoints(tmp_path / "split" / "pipeline-checkpoints")] == [3]

    resumed, history = train_generator(recipe(tokenizer_path, tmp_path / "split", *settings))
    assert history[0]["step"] == 6  # continued from step 3: steps 4..6 only (the first log is the last step)
    # Same data order, RNG state (dropout is on), optimiser, schedule and EMA: bit-identical on one CPU.
    assert_same_weights(generator_weights(resumed), generator_weights(reference))


def test_a_crash_while_saving_leaves_no_checkpoint_to_resume_from(tokenizer_path, tmp_path, monkeypatch):
    from accelerate import Accelerator

    original_save = Accelerator.save_state
    calls = []

    def save_then_die(self, output_dir=None, **kwargs):
        calls.append(output_dir)
        if len(calls) == 2:  # the checkpoint of step 4: write part of it, then die
            original_save(self, output_dir, **kwargs)
            raise OSError("disk full")
        return original_save(self, output_dir, **kwargs)

    monkeypatch.setattr(Accelerator, "save_state", save_then_die)
    with pytest.raises(OSError, match="disk full"):
        train_generator(recipe(tokenizer_path, tmp_path / "run", "run.checkpoint_every=2"))
    checkpoints = tmp_path / "run" / "pipeline-checkpoints"
    assert latest_checkpoint(checkpoints).name == "checkpoint-2"
    assert (checkpoints / ".checkpoint-4.saving").is_dir()  # the half-written save is not a checkpoint

    monkeypatch.setattr(Accelerator, "save_state", original_save)
    resumed, _ = train_generator(recipe(tokenizer_path, tmp_path / "run", "run.checkpoint_every=2"))
    reference, _ = train_generator(recipe(tokenizer_path, tmp_path / "whole", "run.checkpoint_every=2"))
    assert_same_weights(generator_weights(resumed), generator_weights(reference))
    assert not (checkpoints / ".checkpoint-4.saving").exists()


def test_gradient_accumulation_matches_a_larger_batch(tokenizer_path, tmp_path):
    accumulated, _ = train_generator(recipe(tokenizer_path, tmp_path / "a", *NO_DROPOUT,
                                            "run.gradient_accumulation_steps=2", "run.max_steps=3"))
    large, _ = train_generator(recipe(tokenizer_path, tmp_path / "b", *NO_DROPOUT, "run.batch_size=16",
                                      "run.max_steps=3"))
    assert_same_weights(generator_weights(accumulated), generator_weights(large), atol=1e-6)


def test_keep_last_prunes_old_checkpoints(tokenizer_path, tmp_path):
    train_generator(recipe(tokenizer_path, tmp_path / "run", "run.checkpoint_every=1", "run.keep_last=2"))
    assert [step for step, _ in complete_checkpoints(tmp_path / "run" / "pipeline-checkpoints")] == [5, 6]


def test_resume_never_starts_over_and_an_explicit_checkpoint_is_used(tokenizer_path, tmp_path):
    train_generator(recipe(tokenizer_path, tmp_path / "run", "run.checkpoint_every=3"))
    _, history = train_generator(recipe(tokenizer_path, tmp_path / "run", "run.overwrite=true", "run.resume=never"))
    assert history[0]["step"] == 1
    checkpoint = tmp_path / "run" / "pipeline-checkpoints" / "checkpoint-3"
    _, history = train_generator(recipe(tokenizer_path, tmp_path / "run", "run.overwrite=true",
                                        f"run.resume={checkpoint}"))
    assert history[0]["step"] == 6


def test_previews_are_written_and_training_mode_is_kept(tokenizer_path, tmp_path):
    train_generator(recipe(tokenizer_path, tmp_path / "run", "run.preview_every=3", "run.ema_decay=0.5"))
    previews = sorted(p.name for p in (tmp_path / "run" / "previews").iterdir())
    assert previews == ["step-3.png", "step-6.png"]
    from PIL import Image

    assert Image.open(tmp_path / "run" / "previews" / "step-3.png").size == (4 * 36, 10 * 36)  # 16 px x2 + padding


def test_tensorboard_receives_losses_previews_and_the_recipe(tokenizer_path, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    train_generator(recipe(tokenizer_path, tmp_path / "run", "run.preview_every=3", "run.log_every=2",
                           "run.trackers=[tensorboard]"))
    event_files = sorted((tmp_path / "run" / "logs").rglob("events.out.tfevents.*"))
    assert event_files, "no tensorboard event file written"
    tags = {"scalars": set(), "images": set(), "tensors": set()}
    steps = set()
    for path in event_files:
        events = EventAccumulator(str(path), size_guidance={"images": 0, "scalars": 0}).Reload().Tags()
        for kind in tags:
            tags[kind] |= set(events[kind])
        if "loss" in events["scalars"]:
            steps |= {event.step for event in EventAccumulator(str(path)).Reload().Scalars("loss")}
    assert "loss" in tags["scalars"] and steps == {1, 2, 4, 6}
    assert "preview" in tags["images"]
    hparams = yaml.safe_load(next((tmp_path / "run" / "logs").rglob("hparams.yml")).read_text())
    assert hparams["run.max_steps"] == 6 and hparams["generator"] == "raster-tiny"


def test_ema_update_and_apply():
    model = torch.nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    ema = EMA(model, decay=0.75)
    with torch.no_grad():
        model.weight.fill_(4.0)
    ema.update(model)
    torch.testing.assert_close(ema.shadow["weight"], torch.full((2, 2), 1.0))
    with ema.applied(model):
        assert torch.equal(model.weight, torch.full((2, 2), 1.0))
    assert torch.equal(model.weight, torch.full((2, 2), 4.0))
    restored = EMA(model, decay=0.5)
    restored.load_state_dict(ema.state_dict())
    assert restored.decay == 0.75 and torch.equal(restored.shadow["weight"], ema.shadow["weight"])
    with pytest.raises(ValueError, match="decay"):
        EMA(model, decay=1.0)
