"""The quickstart's wiring end to end, with a handful of steps per stage (the real run takes minutes)."""

import json

import pytest
from PIL import Image

import arvis
from arvis.cli import main
from arvis.quickstart import SAMPLES_PER_CLASS


@pytest.mark.slow
def test_quickstart_writes_pipeline_grid_and_report(tmp_path, capsys):
    output = tmp_path / "qs"
    assert main(["quickstart", "--output-dir", str(output), "--tokenizer-steps", "2", "--generator-steps", "2"]) == 0
    printed = capsys.readouterr().out
    assert str(output / "samples.png") in printed and str(output / "pipeline") in printed
    report = json.loads((output / "pipeline" / "metrics.json").read_text())
    assert report["generator_final"]["step"] == 2 and report["sampling"]["cfg_scale"] == 2.0
    glyphs = report["glyph_metrics"]
    assert glyphs["protocol"]["extractor"] == "arvis-glyph-classifier" and glyphs["protocol"]["num_fake"] == 100
    assert 0 <= glyphs["glyph_accuracy"] <= 1 and 0 < glyphs["fd_glyphs_real_floor"] < glyphs["fd_glyphs"]
    assert "fd-glyphs" in printed
    grid = Image.open(output / "samples.png")
    assert grid.height == 10 * (32 * 3 + 4) and grid.width > SAMPLES_PER_CLASS * (32 * 3 + 4)
    pipeline = arvis.load(output / "pipeline")
    assert pipeline.tokenizer.image_size == (32, 32) and pipeline.generator.num_classes == 10
    assert pipeline.metadata.class_names[:2] == ("disk", "ring") and pipeline.metadata.metrics == report
    assert [stage.command for stage in pipeline.metadata.training] == ["arvis train tokenizer", "arvis train generator"]
    assert pipeline.metadata.training[1].recipe["generator"] == "raster-demo"
    assert "| 1 | ring |" in (output / "pipeline" / "README.md").read_text()
    assert "arvis demo" in printed
    assert main(["quickstart", "--output-dir", str(output), "--tokenizer-steps", "1"]) == 2  # keeps the results
    assert "--overwrite" in capsys.readouterr().err and (output / "pipeline" / "metrics.json").is_file()
