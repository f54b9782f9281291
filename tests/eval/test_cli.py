"""``arvis eval``: each metric from the command line, results written with their protocol."""

import json

import numpy as np
import pytest
import torch
from einops import rearrange

from arvis.cli import main
from arvis.data import GlyphDataset
from arvis.eval.images import to_uint8_chw
from arvis.sample import save_npz


def glyph_npz(path, seed: int, num: int = 20, size: int = 32, with_labels: bool = True):
    images, labels = GlyphDataset(num, image_size=size, seed=seed).tensors()
    arrays = {"arr_0": rearrange(to_uint8_chw(images), "n c h w -> n h w c").numpy()}
    if with_labels:
        arrays["labels"] = labels.numpy()
    save_npz(path, **arrays)
    return path


def run(capsys, *argv):
    code = main(["eval", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_fd_builtin_on_a_pipeline_records_the_sampling_protocol(tiny_pipeline, tmp_path, capsys):
    tiny_pipeline.save_pretrained(tmp_path / "pipeline")
    code, out, err = run(capsys, "fd-builtin", "--fake", str(tmp_path / "pipeline"), "--num-samples", "10",
                         "--sample-seed", "5", "--top-k", "3", "--num-real", "50", "--json", str(tmp_path / "r.json"))
    assert code == 0, err
    report = json.loads(out)
    assert report == json.loads((tmp_path / "r.json").read_text())
    assert set(report["metrics"]) == {"fd_glyphs", "glyph_accuracy"} and report["metrics"]["fd_glyphs"] > 0
    protocol = report["protocol"]
    assert protocol["extractor"] == "arvis-glyph-classifier" and protocol["num_fake"] == 10
    assert protocol["real"] == {"kind": "rendered glyphs", "num_images": 50, "size": [16, 16], "seed": 777}
    sampling = protocol["fake"]["sampling_protocol"]
    assert sampling["seed"] == 5 and sampling["sampling"]["top_k"] == 3 and sampling["labels"]["policy"] == "balanced"
    assert report["environment"]["command"][:5] == ["arvis", "eval", "fd-builtin", "--fake", str(tmp_path / "pipeline")]


def test_fd_builtin_real_glyphs_score_better_than_noise(tmp_path, capsys):
    real = glyph_npz(tmp_path / "glyphs.npz", seed=1, num=64)
    noise = np.random.default_rng(0).integers(0, 256, (64, 32, 32, 3), dtype=np.uint8)
    save_npz(tmp_path / "noise.npz", arr_0=noise)
    _, out, _ = run(capsys, "fd-builtin", "--fake", str(real), "--num-real", "200")
    glyphs = json.loads(out)["metrics"]
    _, out, _ = run(capsys, "fd-builtin", "--fake", str(tmp_path / "noise.npz"), "--num-real", "200")
    noisy = json.loads(out)["metrics"]
    assert glyphs["fd_glyphs"] * 10 < noisy["fd_glyphs"]
    assert glyphs["glyph_accuracy"] > 0.95 and noisy["glyph_accuracy"] is None  # no labels in the noise file


@pytest.mark.slow
def test_fid_kid_and_reference_stats_from_the_command_line(inception_weights, tmp_path, capsys):
    fake, real = glyph_npz(tmp_path / "fake.npz", seed=2), glyph_npz(tmp_path / "real.npz", seed=3)
    common = ["--weights", str(inception_weights), "--cache-dir", "none", "--batch-size", "10"]
    code, out, err = run(capsys, "fid", "--fake", str(fake), "--real", str(real), *common)
    assert code == 0, err
    fid = json.loads(out)["metrics"]["frechet_inception_distance"]
    code, out, err = run(capsys, "reference-stats", "fid", "--real", str(real), "--out", str(tmp_path / "ref.npz"),
                         "--weights", str(inception_weights))
    assert code == 0, err
    _, out, _ = run(capsys, "fid", "--fake", str(fake), "--real", str(tmp_path / "ref.npz"), *common)
    assert json.loads(out)["metrics"]["frechet_inception_distance"] == pytest.approx(fid, rel=1e-9)
    code, out, err = run(capsys, "kid", "--fake", str(fake), "--real", str(real), "--kid-subset-size", "10",
                         "--kid-subsets", "4", *common)
    assert code == 0, err
    report = json.loads(out)
    assert "kernel_inception_distance_mean" in report["metrics"]
    assert report["protocol"]["settings"]["kid_subsets"] == 4


def test_fvd_from_the_command_line(detector_path, tmp_path, capsys):
    gen = torch.Generator().manual_seed(0)
    for name in ("real", "fake"):
        videos = torch.randint(0, 256, (6, 8, 16, 16, 3), generator=gen, dtype=torch.uint8).numpy()
        np.save(tmp_path / f"{name}.npy", videos)
    code, out, err = run(capsys, "fvd", "--real", str(tmp_path / "real.npy"), "--fake", str(tmp_path / "fake.npy"),
                         "--detector", str(detector_path), "--num-frames", "8")
    assert code == 0, err
    report = json.loads(out)
    assert report["metrics"]["fvd"] > 0 and report["protocol"]["num_frames"] == 8


def test_errors_are_reported_with_exit_code_2(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("ARVIS_INCEPTION_WEIGHTS", raising=False)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    fake = glyph_npz(tmp_path / "fake.npz", seed=4)
    code, _, err = run(capsys, "fid", "--fake", str(fake), "--real", str(fake))
    assert code == 2 and "weights-inception-2015-12-05-6726825d.pth" in err
    code, _, err = run(capsys, "fvd", "--fake", str(fake), "--real", str(fake), "--detector", str(tmp_path / "x.pt"))
    assert code == 2 and "i3d_torchscript.pt" in err
    (tmp_path / "empty").mkdir()
    code, _, err = run(capsys, "fd-builtin", "--fake", str(tmp_path / "empty"))
    assert code == 2 and "is empty" in err
    code, _, err = run(capsys, "fd-builtin", "--fake", str(fake), "--num-samples", "4")
    assert code == 2 and "pipeline folders only" in err
