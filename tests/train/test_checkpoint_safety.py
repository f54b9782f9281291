"""Checkpoints never run code from files on resume, and saving never deletes what arvis did not write."""

import json
import shutil
from pathlib import Path

import pytest
import torch

from arvis.train import loop
from arvis.train.checkpoint import ALLOWED_FILES, complete_checkpoints, latest_checkpoint
from arvis.train.generator import GeneratorTrainConfig, train_generator
from arvis.train.recipe import load_recipe


class Payload:
    """Unpickling this runs code: it writes ``marker`` (what a crafted checkpoint file would do)."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('ran')",)


def recipe(tokenizer_path, output_dir, *overrides):
    return load_recipe(GeneratorTrainConfig, None, [
        f"tokenizer_path={tokenizer_path}", "generator=raster-tiny", "data.image_size=16", "data.num_samples=32",
        "run.batch_size=8", "run.max_steps=2", "run.progress=false", f"run.output_dir={output_dir}",
        "run.checkpoint_every=1", "run.keep_last=5", "run.ema_decay=0.5", *overrides])


@pytest.fixture
def checkpointed_run(tokenizer_path, tmp_path):
    """A finished run with checkpoints 1 and 2; returns (output_dir, checkpoint folder of step 2)."""
    train_generator(recipe(tokenizer_path, tmp_path / "run"))
    return tmp_path / "run", tmp_path / "run" / "pipeline-checkpoints" / "checkpoint-2"


def resume(tokenizer_path, output_dir, *overrides):
    return train_generator(recipe(tokenizer_path, output_dir, "run.max_steps=3", "run.overwrite=true", *overrides))


def test_checkpoints_hold_only_files_read_without_unpickling_code(checkpointed_run):
    _, checkpoint = checkpointed_run
    names = sorted(p.name for p in checkpoint.iterdir())
    assert names == [".arvis-manifest.json", "metadata.json", "model.safetensors", "optimizer.bin",
                     "random_states_0.pkl", "training_state.json", "training_state.safetensors"]
    assert not any(name.startswith("custom_checkpoint") for name in names)
    state = json.loads((checkpoint / "training_state.json").read_text())
    assert set(state) == {"scheduler", "ema"} and state["scheduler"]["last_epoch"] == 2


@pytest.mark.parametrize("planted", ["custom_checkpoint_0.pkl", "custom_checkpoint_1.pkl", "pytorch_model.bin",
                                     "notes.txt"])
def test_files_outside_the_allow_list_are_refused_before_anything_loads(checkpointed_run, tokenizer_path, planted):
    output_dir, checkpoint = checkpointed_run
    marker = output_dir / "pwned"
    torch.save(Payload(marker), checkpoint / planted)
    with pytest.raises(ValueError, match=f"refusing to resume from .*checkpoint-2: it holds files .*{planted}"):
        resume(tokenizer_path, output_dir)
    assert not marker.exists()


@pytest.mark.parametrize("replaced", ["optimizer.bin", "scaler.pt", "random_states_0.pkl"])
def test_planted_payloads_in_accelerate_pickles_never_run(checkpointed_run, tokenizer_path, replaced):
    output_dir, checkpoint = checkpointed_run
    marker = output_dir / "pwned"
    torch.save(Payload(marker), checkpoint / replaced)
    with pytest.raises(ValueError, match="refusing to resume from .*checkpoint-2: .*weights_only=True"):
        resume(tokenizer_path, output_dir)
    assert not marker.exists()
    assert ALLOWED_FILES  # the allow-list names these files: they are read, but only with weights_only=True


def test_a_corrupt_random_state_stops_resume_instead_of_continuing_inexactly(checkpointed_run, tokenizer_path):
    output_dir, checkpoint = checkpointed_run
    data = (checkpoint / "random_states_0.pkl").read_bytes()
    (checkpoint / "random_states_0.pkl").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="random_states_0.pkl cannot be read"):
        resume(tokenizer_path, output_dir)
    torch.save({"step": 2}, checkpoint / "random_states_0.pkl")  # readable, but not accelerate's random states
    with pytest.raises(ValueError, match="does not hold accelerate's random states"):
        resume(tokenizer_path, output_dir)


def test_a_valid_checkpoint_still_resumes(checkpointed_run, tokenizer_path):
    output_dir, _ = checkpointed_run
    _, history = resume(tokenizer_path, output_dir)
    assert history[0]["step"] == 3


def test_saving_never_deletes_a_foreign_checkpoint_folder_or_file(tokenizer_path, tmp_path, caplog):
    checkpoints = tmp_path / "run" / "pipeline-checkpoints"
    mine = checkpoints / "checkpoint-1"  # a user's folder that happens to carry the name and a metadata.json
    mine.mkdir(parents=True)
    (mine / "metadata.json").write_text(json.dumps({"step": 1}))
    (mine / "notes.txt").write_text("precious")
    with pytest.raises(ValueError, match="cannot save checkpoint .*checkpoint-1: .*notes.txt"):
        train_generator(recipe(tokenizer_path, tmp_path / "run", "run.resume=never"))
    assert (mine / "notes.txt").read_text() == "precious"

    train_generator(recipe(tokenizer_path, tmp_path / "other", "run.max_steps=3"))
    arvis_checkpoint = tmp_path / "other" / "pipeline-checkpoints" / "checkpoint-1"
    (arvis_checkpoint / "mine.txt").write_text("also precious")  # a user's file inside an arvis checkpoint
    train_generator(recipe(tokenizer_path, tmp_path / "other", "run.keep_last=1", "run.max_steps=5",
                           "run.overwrite=true"))  # resumes from checkpoint-3, prunes all but the newest
    steps = [step for step, _ in complete_checkpoints(tmp_path / "other" / "pipeline-checkpoints")]
    assert steps == [1, 5] and (arvis_checkpoint / "mine.txt").read_text() == "also precious"  # pruning kept it
    assert "keeping old checkpoint" in caplog.text


def test_bad_output_folders_are_found_before_the_first_step(tokenizer_path, tmp_path, monkeypatch):
    def no_step(*args, **kwargs):
        raise AssertionError("a training step ran before the output folder was checked")

    monkeypatch.setattr(loop.ProgressLog, "update", no_step)
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ValueError, match="run.output_dir: .*afile is a file"):
        train_generator(recipe(tokenizer_path, tmp_path / "afile"))
    user_export = tmp_path / "run" / "pipeline"
    user_export.mkdir(parents=True)
    (user_export / "config.json").write_text("{}")
    (user_export / "vocab.txt").write_text("mine")
    with pytest.raises(ValueError, match="refusing to replace .*pipeline: .*not a folder arvis saved"):
        train_generator(recipe(tokenizer_path, tmp_path / "run", "run.overwrite=true"))
    assert sorted(p.name for p in user_export.iterdir()) == ["config.json", "vocab.txt"]


def test_leftover_staging_folders_are_cleared_only_when_arvis_made_them(tokenizer_path, tmp_path):
    from arvis.folders import write_manifest

    checkpoints = tmp_path / "run" / "pipeline-checkpoints"
    for name, make in (("died before its rename", lambda folder: write_manifest(folder, "checkpoint")),
                       ("arvis 0.1's", lambda folder: (folder / "random_states_0.pkl").write_bytes(b"x"))):
        staging = checkpoints / ".checkpoint-1.saving"
        staging.mkdir(parents=True)
        (staging / "optimizer.bin").write_bytes(b"partial")
        make(staging)
        train_generator(recipe(tokenizer_path, tmp_path / "run", "run.max_steps=1", "run.overwrite=true",
                               "run.resume=never"))
        assert not staging.exists(), name
        assert latest_checkpoint(checkpoints).name == "checkpoint-1"
        shutil.rmtree(checkpoints)
    staging = checkpoints / ".checkpoint-1.saving"
    staging.mkdir(parents=True)
    (staging / "notes.txt").write_text("precious")
    with pytest.raises(ValueError, match=r"\.checkpoint-1\.saving exists and holds files arvis did not write"):
        train_generator(recipe(tokenizer_path, tmp_path / "run", "run.max_steps=1", "run.overwrite=true",
                               "run.resume=never"))
    assert (staging / "notes.txt").read_text() == "precious"
