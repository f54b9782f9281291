"""Writes ``tests/legacy/pipelines-0.1/``: raster, HAR and VAR pipelines saved by arvis before the public trunks
(issue 18; commit 2ce1542, blocks at ``layers.{i}`` / ``blocks.{i}``), and the tokens their samplers drew, which
``test_legacy_folders.py`` requires unchanged. Run once, at that commit, from the repository root."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

from arvis.generators.base import GENERATORS
from arvis.pipeline import Pipeline
from arvis.samplers import SamplingConfig, sampler_for
from arvis.testing import randomize_parameters_
from arvis.tokenizers.base import TOKENIZERS

OUT = Path(__file__).parent / "pipelines-0.1"
PIPELINES = {  # name: (tokenizer preset, generator preset, sampling)
    "raster": ("vq-tiny", "raster-tiny", SamplingConfig(cfg_scale=2.0, top_k=8)),
    "har": ("restok-tiny", "har-tiny", SamplingConfig(cfg_scale=2.0, cfg_schedule="step", top_p=0.9)),
    "var": ("var-vae-tiny", "var-tiny", SamplingConfig(cfg_scale=2.5, cfg_schedule="linear", top_k=20)),
}


def main() -> None:
    outputs = {}
    for name, (tokenizer_name, generator_name, sampling) in PIPELINES.items():
        torch.manual_seed(0)
        tokenizer = randomize_parameters_(TOKENIZERS.build(tokenizer_name), std=0.05, seed=1).eval()
        generator = randomize_parameters_(GENERATORS.build(generator_name), std=0.3, seed=2)
        generator.bind_tokenizer(tokenizer)
        pipeline = Pipeline(tokenizer, generator.eval(), sampling)
        pipeline.save_pretrained(OUT / name)
        labels = torch.tensor([0, 3, 9])
        rngs = [torch.Generator().manual_seed(seed) for seed in range(3)]
        outputs[f"{name}/tokens"] = sampler_for(pipeline.generator, sampling)(pipeline.generator, labels, rng=rngs)
        outputs[f"{name}/labels"] = labels
    save_file({key: value.contiguous() for key, value in outputs.items()}, str(OUT / "samples.safetensors"))


if __name__ == "__main__":
    main()
