"""Class-conditional clip generation through the public API and the CLI (LARP tokens + sequence generator)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import arvis
from arvis.cli import main
from arvis.generators import GENERATORS
from arvis.pipeline import Pipeline
from arvis.samplers import NextTokenSettings
from arvis.testing import randomize_parameters_
from arvis.tokenizers import TOKENIZERS


@pytest.fixture
def video_pipeline() -> Pipeline:
    torch.manual_seed(0)
    tokenizer = TOKENIZERS.build("larp-tiny", prior=False).eval()
    randomize_parameters_(tokenizer.output_proj)  # zero-initialised: give the clips some content
    generator = randomize_parameters_(GENERATORS.build("sequence-tiny")).eval()
    return Pipeline(tokenizer, generator, NextTokenSettings(cfg_scale=2.0, top_k=8))


def test_generate_returns_clips_in_every_output_type(video_pipeline):
    clips = arvis.generate(video_pipeline, [1, 3], num_samples=2, seed=5, output_type="pt")
    assert clips.shape == (4, 3, 4, 16, 16) and 0 <= clips.min() and clips.max() <= 1
    again = arvis.generate(video_pipeline, [1, 3], num_samples=2, seed=5, output_type="pt", batch_size=1)
    assert torch.equal(clips, again)
    array = arvis.generate(video_pipeline, [1, 3], num_samples=2, seed=5, output_type="np")
    assert array.shape == (4, 4, 16, 16, 3) and array.dtype == np.uint8
    frames = arvis.generate(video_pipeline, [1], num_samples=1, seed=5, output_type="pil")
    assert len(frames) == 1 and len(frames[0]) == 4 and frames[0][0].size == (16, 16)
    assert np.array_equal(np.asarray(frames[0][2]), array[0, 2])


def test_cli_writes_a_gif_grid_npy_and_frame_folders(video_pipeline, tmp_path, capsys):
    video_pipeline.save_pretrained(tmp_path / "p")
    out = tmp_path / "grid.gif"
    assert main(["generate", str(tmp_path / "p"), "--labels", "0", "2", "--num-samples", "3", "--scale", "1",
                 "--out", str(out), "--npy", str(tmp_path / "clips.npy"), "--frames", str(tmp_path / "frames")]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["images"] == 6
    with Image.open(out) as gif:
        assert gif.n_frames == 4 and gif.size == (3 * 20, 2 * 20)
    clips = np.load(tmp_path / "clips.npy")
    assert clips.shape == (6, 4, 16, 16, 3)
    frame = np.asarray(Image.open(tmp_path / "frames" / "sample_00004" / "frame_0003.png"))
    assert np.array_equal(frame, clips[4, 3])
    assert main(["generate", str(tmp_path / "p"), "--labels", "0", "--out", str(tmp_path / "grid.png")]) == 2
    assert "must be a .gif" in capsys.readouterr().err


def test_image_set_sampling_refuses_clip_pipelines(video_pipeline, tmp_path):
    from arvis.sample import sample_to_folder

    with pytest.raises(ValueError, match="generates clips"):
        sample_to_folder(video_pipeline, tmp_path / "s", num_samples=2)
    assert not (tmp_path / "s").exists()
