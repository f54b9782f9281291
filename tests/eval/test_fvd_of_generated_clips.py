"""FVD end to end on a video pipeline: ``arvis generate --npy`` then ``arvis eval fvd`` (stub I3D detector)."""

from __future__ import annotations

import json

import numpy as np
import torch

from arvis.cli import main
from arvis.data import MovingGlyphDataset
from arvis.generators import GENERATORS
from arvis.pipeline import Pipeline
from arvis.samplers import NextTokenSettings
from arvis.testing import randomize_parameters_
from arvis.tokenizers import TOKENIZERS


def test_generated_clips_go_through_fvd(detector_path, tmp_path, capsys):
    torch.manual_seed(0)
    tokenizer = TOKENIZERS.build("larp-tiny", prior=False).eval()
    randomize_parameters_(tokenizer.output_proj)
    generator = randomize_parameters_(GENERATORS.build("sequence-tiny")).eval()
    Pipeline(tokenizer, generator, NextTokenSettings(top_k=8)).save_pretrained(tmp_path / "p")
    assert main(["generate", str(tmp_path / "p"), "--labels", *map(str, range(10)), "--num-samples", "1",
                 "--out", str(tmp_path / "grid.gif"), "--npy", str(tmp_path / "fake.npy")]) == 0
    clips, _ = MovingGlyphDataset(10, image_size=16, num_frames=4, seed=3).tensors()
    real = (clips * 255).round().to(torch.uint8).permute(0, 2, 3, 4, 1).numpy()  # (n, t, h, w, 3)
    np.save(tmp_path / "real.npy", real)
    np.save(tmp_path / "real_again.npy", real)
    capsys.readouterr()

    def fvd(fake: str) -> float:
        code = main(["eval", "fvd", "--real", str(tmp_path / "real.npy"), "--fake", str(tmp_path / fake),
                     "--detector", str(detector_path), "--num-frames", "4"])
        out, err = capsys.readouterr()
        assert code == 0, err
        return json.loads(out)["metrics"]["fvd"]

    assert fvd("real_again.npy") < 1e-6 < fvd("fake.npy")
