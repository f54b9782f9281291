"""``arvis demo`` without a browser: the page is built from the pipeline (condition inputs, one input per sampler
setting), a request draws what arvis.generate draws, and oversized or malformed requests are refused."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("gradio")

import arvis  # noqa: E402
from arvis.data.captions import caption_vocabulary  # noqa: E402
from arvis.demo import DemoLimits, Request, build_demo, check_request_size, run_request  # noqa: E402
from arvis.generators.base import GENERATORS  # noqa: E402
from arvis.pipeline import Pipeline  # noqa: E402
from arvis.testing import randomize_parameters_  # noqa: E402
from arvis.text import TextTokenizer  # noqa: E402
from arvis.tokenizers.base import TOKENIZERS  # noqa: E402


def request(**fields) -> Request:
    values = {"classes": None, "prompts": None, "control_file": None, "control_source": None, "num_samples": 2,
              "seed": 0, "settings": {}}
    return Request(**{**values, **fields})


def components_of(demo) -> dict:
    return {block.elem_id: block for block in demo.blocks.values() if getattr(block, "elem_id", None)}


def labels_of(demo) -> list[str]:
    return [block.label for block in demo.blocks.values() if getattr(block, "label", None)]


def test_the_page_has_the_pipelines_inputs_and_one_input_per_sampler_setting(tiny_pipeline, var_pipeline, tmp_path):
    named = tiny_pipeline.with_metadata(class_names=[f"glyph {i}" for i in range(10)])
    demo = build_demo(named, name="tiny", output_dir=tmp_path)
    blocks = components_of(demo)
    assert {"classes", "num_samples", "seed", "generate", "grid", "samples", "files"} <= set(blocks)
    assert "prompts" not in blocks and "control" not in blocks
    assert blocks["classes"].choices[3] == ("3: glyph 3", 3)
    for pipeline in (tiny_pipeline, var_pipeline):
        labels = labels_of(build_demo(pipeline, name="p", output_dir=tmp_path))
        fields = [field.name.replace("_", " ") for field in dataclasses.fields(pipeline.sampling)]
        assert set(fields) <= set(labels)
    var_inputs = {block.label: block for block in build_demo(var_pipeline, name="v", output_dir=tmp_path)
                  .blocks.values() if getattr(block, "label", None)}
    assert var_inputs["more smooth"].value is False and var_inputs["cfg scale"].value == 2.0  # stored values
    assert var_inputs["cfg schedule"].choices[0][0] == "constant"
    jacobi = labels_of(build_demo(tiny_pipeline, name="j", sampler="speculative-jacobi", output_dir=tmp_path))
    assert "draft window" in jacobi  # another sampler brings its own knobs


def test_a_request_draws_what_generate_draws_and_writes_its_files(tiny_pipeline, tmp_path):
    grid, files = run_request(tiny_pipeline, DemoLimits(batch_size=1), request(classes=[1, 4], seed=3,
                                                                               settings={"top_k": 4}), tmp_path / "r")
    expected = arvis.generate(tiny_pipeline, [1, 4], num_samples=2, seed=3, top_k=4, output_type="np", batch_size=1)
    assert len(files) == 4
    for path, image in zip(files, expected, strict=True):
        assert np.array_equal(np.asarray(Image.open(path).convert("RGB")), image)
    with Image.open(grid) as picture:
        assert picture.height > 2 * 16
    with pytest.raises(ValueError, match="pick at least one class"):
        run_request(tiny_pipeline, DemoLimits(), request(classes=[]), tmp_path / "empty")
    with pytest.raises(ValueError, match="class"):
        run_request(tiny_pipeline, DemoLimits(), request(classes=[10]), tmp_path / "bad-class")
    with pytest.raises(ValueError, match="top_k must be >= 0"):
        run_request(tiny_pipeline, DemoLimits(), request(classes=[0], settings={"top_k": -1}), tmp_path / "bad")
    with pytest.raises(ValueError, match="seed must be a whole number"):
        run_request(tiny_pipeline, DemoLimits(), request(classes=[0], seed=-1), tmp_path / "bad-seed")


def test_oversized_requests_are_refused_with_the_limit(tiny_pipeline):
    limits = DemoLimits(max_samples=8, max_tokens=100)  # raster-tiny: 16 tokens per image
    check_request_size(tiny_pipeline, limits, rows=2, num_samples=3)
    with pytest.raises(ValueError, match=r"3 rows × 3 samples = 9 images, more than .* \(8\).*--max-samples"):
        check_request_size(tiny_pipeline, limits, rows=3, num_samples=3)
    with pytest.raises(ValueError, match=r"7 images × 16 tokens = 112 tokens, more than .* \(100\).*--max-tokens"):
        check_request_size(tiny_pipeline, limits, rows=7, num_samples=1)
    with pytest.raises(ValueError, match="max_samples must be an integer >= 1"):
        DemoLimits(max_samples=0)


def test_prompts_are_one_per_line_and_video_pipelines_give_gifs(tmp_path):
    torch.manual_seed(0)
    words = TextTokenizer.word_level(caption_vocabulary())
    preset = GENERATORS.preset("raster-t2i-tiny").replace(text_vocab_size=words.vocab_size, prompt_length=12)
    text = Pipeline(TOKENIZERS.build("vq-tiny"), randomize_parameters_(GENERATORS.class_for_config(preset)(preset)),
                    text_tokenizer=words)
    assert "prompts" in components_of(build_demo(text, name="t", output_dir=tmp_path))
    _, files = run_request(text, DemoLimits(), request(prompts="a red ring\n\na large blue plus\n"), tmp_path / "t")
    assert len(files) == 4
    with pytest.raises(ValueError, match="write a prompt"):
        run_request(text, DemoLimits(), request(prompts="  \n"), tmp_path / "none")
    with pytest.raises(ValueError, match="outside the text vocabulary"):
        run_request(text, DemoLimits(), request(prompts="a purple ring"), tmp_path / "word")

    tokenizer = TOKENIZERS.build("larp-tiny", prior=False).eval()
    randomize_parameters_(tokenizer.output_proj)
    video = Pipeline(tokenizer, randomize_parameters_(GENERATORS.build("sequence-tiny")))
    grid, files = run_request(video, DemoLimits(), request(classes=[1], num_samples=2), tmp_path / "v")
    assert grid.endswith(".gif") and len(files) == 2
    with Image.open(files[0]) as gif:
        assert gif.n_frames == 4 and gif.size == (16, 16)
