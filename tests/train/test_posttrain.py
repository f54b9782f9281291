"""The post-training entry point with Distilled Decoding: pairs (sharded, resumable), training, export."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
import torch

import arvis
from arvis.generators.base import GENERATORS
from arvis.pipeline import Pipeline
from arvis.posttrain import METHODS
from arvis.posttrain.distilled_decoding import DistilledDecodingConfig, DistilledRaster, DistilledVAR
from arvis.posttrain.distilled_decoding.pairs import generate_pairs, load_pairs, shard_path
from arvis.samplers import NextScaleSettings
from arvis.samplers.flow_matching import FlowMatchingDraw
from arvis.testing import randomize_parameters_
from arvis.tokenizers.base import TOKENIZERS
from arvis.train.posttrain import main, post_train, PostTrainConfig


def _digest(folder: Path) -> dict[str, str]:
    return {str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(folder.rglob("*")) if path.is_file()}


def _run(pipeline_dir: Path, output_dir: Path, *extra: str):
    main(["--method", "distilled_decoding", "--pipeline", str(pipeline_dir), f"run.output_dir={output_dir}",
          "method_config.num_pairs=96", "method_config.shard_size=32", "method_config.pair_batch_size=48",
          "method_config.ode_steps=32",
          "run.max_steps=30", "run.batch_size=16", "run.log_every=29", "run.progress=false",
          "optim.learning_rate=3e-3", *extra])


@pytest.fixture
def saved_raster(tmp_path, tiny_pipeline) -> Path:
    return tiny_pipeline.save_pretrained(tmp_path / "teacher")


def test_distilled_decoding_post_training_end_to_end(tmp_path, saved_raster, caplog):
    before = _digest(saved_raster)
    caplog.set_level("INFO", logger="arvis.train.loop")
    _run(saved_raster, tmp_path / "dd")
    assert _digest(saved_raster) == before  # the teacher pipeline is only read
    assert sorted(p.name for p in (tmp_path / "dd" / "pairs").glob("shard-*")) == [
        "shard-00000.safetensors", "shard-00001.safetensors", "shard-00002.safetensors"]
    losses = [float(line.split("loss=")[1].split()[0]) for line in caplog.messages if "loss=" in line]
    assert losses[-1] < losses[0]
    pipeline = arvis.load(tmp_path / "dd" / "pipeline")
    assert isinstance(pipeline.generator, DistilledRaster) and pipeline.sampling.distilled_steps == 1
    assert pipeline.generator.config.split == 5  # 5/16 of the 16 tokens
    for steps in (1, 2):
        images = arvis.generate(pipeline, [0, 4], num_samples=2, distilled_steps=steps, output_type="pt", seed=3)
        assert images.shape == (4, 3, 16, 16)
        # regression outputs are continuous: batch composition moves them by float rounding only
        assert torch.allclose(images, arvis.generate(pipeline, [0, 4], num_samples=2, distilled_steps=steps,
                                                     output_type="pt", seed=3, batch_size=1), atol=1e-5)


def test_pairs_are_the_teachers_flow_matching_samples_and_resume(tmp_path, tiny_pipeline):
    folder = generate_pairs(tiny_pipeline, tmp_path / "pairs", num_pairs=40, shard_size=16, seed=5, ode_steps=32,
                            batch_size=7)
    pairs, settings = load_pairs(folder)
    noise, labels, tokens = pairs.tensors
    assert noise.shape == (40, 16, 4) and settings["num_pairs"] == 40
    assert torch.equal(labels, torch.arange(40) % 10)
    draw = FlowMatchingDraw(tiny_pipeline.tokenizer.code_vectors(), noise[:6], num_steps=32)
    assert torch.equal(tiny_pipeline.sampler()(tiny_pipeline.generator, labels[:6], draw=draw), tokens[:6])
    # resume: only the missing shard is made again, identical to the first time
    kept = shard_path(folder, 0).stat().st_mtime_ns
    original = shard_path(folder, 1).read_bytes()
    shard_path(folder, 1).unlink()
    with pytest.raises(FileNotFoundError, match="shard-00001"):
        load_pairs(folder)
    generate_pairs(tiny_pipeline, folder, num_pairs=40, shard_size=16, seed=5, ode_steps=32, batch_size=13)
    assert shard_path(folder, 1).read_bytes() == original
    assert shard_path(folder, 0).stat().st_mtime_ns == kept
    with pytest.raises(ValueError, match=r"other settings \(differing: \['seed'\]\)"):
        generate_pairs(tiny_pipeline, folder, num_pairs=40, shard_size=16, seed=6, ode_steps=32)
    with pytest.raises(ValueError, match="more_smooth"):
        var = GENERATORS.build("var-tiny")
        var.bind_tokenizer(var_tokenizer := TOKENIZERS.build("var-vae-tiny"))
        generate_pairs(Pipeline(var_tokenizer, var, NextScaleSettings(more_smooth=True)), tmp_path / "smooth",
                       num_pairs=4)
    shard_path(folder, 2).write_bytes(b"not safetensors")
    with pytest.raises(ValueError, match="corrupt pair shard"):
        load_pairs(folder)


def test_pairs_split_over_processes_make_the_same_set(tmp_path, tiny_pipeline):
    one = generate_pairs(tiny_pipeline, tmp_path / "one", num_pairs=30, shard_size=10, ode_steps=16)
    for rank in range(2):
        generate_pairs(tiny_pipeline, tmp_path / "two", num_pairs=30, shard_size=10, ode_steps=16,
                       process_index=rank, num_processes=2)
    for a, b in zip(load_pairs(one)[0].tensors, load_pairs(tmp_path / "two")[0].tensors, strict=True):
        assert torch.equal(a, b)


def test_distilled_decoding_of_a_var_pipeline(tmp_path):
    torch.manual_seed(0)
    tokenizer = TOKENIZERS.build("var-vae-tiny").eval()
    generator = randomize_parameters_(GENERATORS.build("var-tiny"), std=0.05)
    generator.bind_tokenizer(tokenizer)
    teacher = Pipeline(tokenizer, generator.eval(), NextScaleSettings(cfg_scale=2.0, cfg_schedule="linear"))
    teacher.save_pretrained(tmp_path / "teacher")
    _run(tmp_path / "teacher", tmp_path / "dd", "method_config.split=2")
    pipeline = arvis.load(tmp_path / "dd" / "pipeline")
    assert isinstance(pipeline.generator, DistilledVAR) and pipeline.generator.config.split == 2
    images = arvis.generate(pipeline, [1, 2], distilled_steps=2, output_type="np")
    assert images.shape == (2, 16, 16, 3)


def test_post_training_errors(tmp_path, saved_raster, tiny_pipeline):
    with pytest.raises(ValueError, match="unknown post-training method 'nope'; known: \\['controlar', 'distilled_decoding', 'orthus', 'sar', 'sdar', 'vapi'\\]"):
        post_train(PostTrainConfig(method="nope", pipeline=str(saved_raster)))
    with pytest.raises(ValueError, match="--pipeline"):
        post_train(PostTrainConfig(method="distilled_decoding"))
    with pytest.raises(ValueError, match="unknown DistilledDecodingConfig key"):
        post_train(PostTrainConfig(method="distilled_decoding", pipeline=str(saved_raster),
                                   method_config={"num_pair": 3}))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        post_train(PostTrainConfig.from_dict({"method": "distilled_decoding", "pipeline": str(tmp_path / "missing"),
                                              "run": {"output_dir": str(tmp_path / "out")}}))
    shutil.copytree(saved_raster, tmp_path / "run" / "pipeline")
    with pytest.raises(ValueError, match="over the input pipeline"):
        post_train(PostTrainConfig.from_dict({"method": "distilled_decoding", "pipeline": str(tmp_path / "run" / "pipeline"),
                                              "run": {"output_dir": str(tmp_path / "run"), "overwrite": True}}))
    method = METHODS.get_class("distilled_decoding")
    with pytest.raises(ValueError, match=r"split must lie in \[1, 15\]"):
        method(DistilledDecodingConfig(split=16), tiny_pipeline, pipeline_path="x", output_dir=tmp_path)
    with pytest.raises(ValueError, match=r"timesteps must lie in \[0, 15\]"):
        method(DistilledDecodingConfig(timesteps=(0, 16)), tiny_pipeline, pipeline_path="x", output_dir=tmp_path)
    with pytest.raises(ValueError, match="distinct timesteps"):
        DistilledDecodingConfig(timesteps=(0, 0))
    with pytest.raises(ValueError, match="ode_steps must be >= 1"):
        DistilledDecodingConfig(ode_steps=0)
    distilled = DistilledRaster.from_teacher(tiny_pipeline.generator, tiny_pipeline.tokenizer, split=3)
    with pytest.raises(ValueError, match="adapts generators of the classes RasterGenerator, VARGenerator .* not DistilledRaster"):
        method(DistilledDecodingConfig(), Pipeline(tiny_pipeline.tokenizer, distilled), pipeline_path="x",
               output_dir=tmp_path)


def test_a_pairs_folder_of_the_one_sampling_config_is_reused(tiny_pipeline, tmp_path):
    """Manifests written before samplers had their own settings hold every field of the one config."""
    import json

    folder = generate_pairs(tiny_pipeline, tmp_path / "pairs", num_pairs=4, shard_size=4, ode_steps=4)
    manifest = json.loads((folder / "pairs.json").read_text())
    assert manifest["sampler"] == "next-token"
    del manifest["sampler"]
    manifest["sampling"] = {**manifest["sampling"], "more_smooth": False, "distilled_steps": 1}
    (folder / "pairs.json").write_text(json.dumps(manifest))
    kept = shard_path(folder, 0).stat().st_mtime_ns
    generate_pairs(tiny_pipeline, folder, num_pairs=4, shard_size=4, ode_steps=4)  # the same settings: reused
    assert shard_path(folder, 0).stat().st_mtime_ns == kept
    manifest["sampling"]["top_k"] = 3
    (folder / "pairs.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=r"differing: \['sampling'\]"):
        generate_pairs(tiny_pipeline, folder, num_pairs=4, shard_size=4, ode_steps=4)
