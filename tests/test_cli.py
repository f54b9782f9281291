import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from arvis.cli import main


def test_presets_lists_every_kind(capsys):
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    for name in ("vq-tiny", "vq-f16", "raster-tiny", "llamagen-b", "llamagen-3b", "next-token", "next-scale",
                 "distilled_decoding"):
        assert name in out
    (next_scale,) = [line for line in out.splitlines() if line.startswith("  next-scale ")]
    assert "more_smooth" in next_scale


def test_presets_filter(capsys):
    main(["presets", "llamagen-*"])
    out = capsys.readouterr().out
    assert "llamagen-xl" in out and "vq-tiny" not in out


def test_generate_writes_a_grid(tiny_pipeline, tmp_path, capsys):
    tiny_pipeline.save_pretrained(tmp_path / "p")
    assert main(["generate", str(tmp_path / "p"), "--labels", "0", "1", "--num-samples", "3", "--scale", "1",
                 "--out", str(tmp_path / "grid.png")]) == 0
    from PIL import Image

    grid = Image.open(tmp_path / "grid.png")
    assert grid.size == (3 * 20, 2 * 20)  # 16 px + 2 px padding on each side
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["images"] == 6


def test_errors_exit_with_a_message(tmp_path, capsys):
    assert main(["generate", str(tmp_path / "missing"), "--labels", "0"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_module_entry_point_runs():
    result = subprocess.run([sys.executable, "-m", "arvis.train.tokenizer", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "--config" in result.stdout


def installed_console_script() -> str | None:
    """The ``arvis`` script of this interpreter's environment (beside ``sys.executable``, which is where pip puts
    it even when the environment is not activated), else the one on PATH."""
    beside = Path(sys.executable).parent / ("arvis.exe" if sys.platform == "win32" else "arvis")
    return str(beside) if beside.is_file() else shutil.which("arvis")


def test_installed_console_script_runs():
    script = installed_console_script()
    assert script, "the `arvis` console script is not installed; install the package with pip install -e ."
    result = subprocess.run([script, "presets", "vq-*"], capture_output=True, text=True)
    assert result.returncode == 0 and "vq-f16" in result.stdout


def test_train_forwards_config_and_overrides(tmp_path):
    from arvis.tokenizers.base import Tokenizer

    recipe = Path(__file__).resolve().parents[1] / "configs" / "quickstart_tokenizer.yaml"
    assert main(["train", "tokenizer", "--config", str(recipe), "run.max_steps=1", "data.num_samples=32",
                 "run.progress=false", f"run.output_dir={tmp_path / 'tok'}", "tokenizer_config.codebook_size=32"]) == 0
    assert Tokenizer.from_pretrained(tmp_path / "tok" / "tokenizer").vocab_size == 32
    assert main(["train", "tokenizer", "optim.lr=1"]) == 2  # unknown key: an error naming it, not a crash
    assert main(["train", "posttrain", "--method", "nope", "--pipeline", str(tmp_path)]) == 2


def test_sampling_options_reach_the_sampler_config():
    from arvis.cli import build_parser
    from arvis.samplers.options import sampling_overrides

    args = build_parser().parse_args(["generate", "p", "--labels", "0", "--cfg-scale", "3.75", "--cfg-schedule",
                                      "step", "--cfg-start", "0.25", "--top-p", "0.95", "--distilled-steps", "2"])
    assert sampling_overrides(args) == {"sampler": None, "cfg_scale": 3.75, "cfg_schedule": "step", "cfg_start": 0.25,
                                        "top_p": 0.95, "distilled_steps": 2}
    defaults = sampling_overrides(build_parser().parse_args(["sample", "p", "--num-samples", "4", "--out", "o"]))
    assert defaults == {"sampler": None}


@pytest.mark.parametrize("scale", ["0", "-1", "two"])
def test_generate_refuses_a_bad_scale_before_sampling(tiny_pipeline, tmp_path, capsys, scale):
    tiny_pipeline.save_pretrained(tmp_path / "p")
    with pytest.raises(SystemExit) as exit_info:
        main(["generate", str(tmp_path / "p"), "--labels", "0", "--scale", scale, "--out", str(tmp_path / "g.png")])
    assert exit_info.value.code == 2
    assert "--scale: expected an integer >= 1" in capsys.readouterr().err
    assert not (tmp_path / "g.png").exists()


@pytest.mark.parametrize("option, value", [("--cfg-scale", "nan"), ("--temperature", "inf"), ("--top-p", "nan")])
def test_generate_refuses_non_finite_sampling_settings(tiny_pipeline, tmp_path, capsys, option, value):
    tiny_pipeline.save_pretrained(tmp_path / "p")
    assert main(["generate", str(tmp_path / "p"), "--labels", "0", option, value,
                 "--out", str(tmp_path / "g.png")]) == 2
    assert "expected a finite number" in capsys.readouterr().err
    assert not (tmp_path / "g.png").exists()
