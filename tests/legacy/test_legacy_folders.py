"""Folders saved by arvis 0.1 (before issue 17's faithfulness fixes) load and give exactly the outputs they gave.

Each fix that changes behaviour is a config field whose value, when a saved ``config.json`` lacks the key, is
the old behaviour (``Config.saved_defaults``); presets get the upstream-faithful value. The fixtures and their
outputs were written by ``make_fixtures.py`` at commit a18fcef.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from arvis.generators.base import Generator
from arvis.posttrain.distilled_decoding.sampler import DistilledSampler, DistilledSettings
from arvis.tokenizers.base import Tokenizer

FIXTURES = Path(__file__).parent / "v0.1"
RESTOK_DEMO = Path(__file__).parents[1] / "tokenizers" / "data" / "restok-demo"


@pytest.fixture(scope="module")
def outputs() -> dict[str, torch.Tensor]:
    return load_file(FIXTURES / "outputs.safetensors")


def exactly(actual: torch.Tensor, expected: torch.Tensor) -> None:
    """Token ids equal; float outputs equal up to float32 rounding. The fixtures were computed with ``F.linear``,
    and arvis's products of a few rows on the CPU now sum in another order (``arvis.nn.linear``), which moves
    the last bits and nothing more; a changed behaviour moves outputs by orders of magnitude more."""
    if actual.is_floating_point():
        torch.testing.assert_close(actual, expected, atol=1e-6, rtol=1e-5)
    else:
        torch.testing.assert_close(actual, expected, atol=0, rtol=0)


@torch.no_grad()
def test_the_trained_restok_demo_encodes_and_decodes_as_before(outputs):
    from arvis.data import GlyphDataset

    restok = Tokenizer.from_pretrained(RESTOK_DEMO).eval()
    images, _ = GlyphDataset(8, image_size=32, seed=4242).tensors()
    tokens = restok.encode(images)
    exactly(tokens, outputs["restok_demo/tokens"])
    for count in (2, 8, 32):
        exactly(restok.decode(tokens[:, :count]), outputs[f"restok_demo/decoded_{count}"])


@pytest.mark.parametrize("name", ["restok-tiny", "larp-tiny"])
@torch.no_grad()
def test_tiny_tokenizers_saved_by_0_1_decode_as_before(outputs, name):
    tokenizer = Tokenizer.from_pretrained(FIXTURES / name).eval()
    key = name.replace("-", "_")
    exactly(tokenizer.decode(outputs[f"{key}/tokens"]), outputs[f"{key}/decoded"])


def test_larp_ar_saved_by_0_1_trains_as_before(outputs):
    sequence = Generator.from_pretrained(FIXTURES / "sequence-tiny").train()
    torch.manual_seed(3)
    logits = sequence(outputs["sequence_tiny/tokens"], outputs["sequence_tiny/labels"]).logits
    exactly(logits.detach(), outputs["sequence_tiny/train_logits"])


@pytest.mark.parametrize("teacher", ["raster-tiny", "var-tiny"])
@pytest.mark.parametrize("steps", [1, 2])
def test_distilled_generators_saved_by_0_1_sample_as_before(outputs, teacher, steps):
    model = Generator.from_pretrained(FIXTURES / f"dd-{teacher}").eval()
    key = f"dd_{teacher.replace('-', '_')}"
    codes = DistilledSampler(DistilledSettings(distilled_steps=steps))(model, outputs[f"{key}/labels"],
                                                                   noise=outputs[f"{key}/noise"])
    exactly(codes, outputs[f"{key}/codes_{steps}_steps"])


@pytest.mark.parametrize("name", ["raster", "har", "var"])
def test_pipelines_saved_before_the_public_trunks_sample_as_before(name):
    """``pipelines-0.1`` was written by ``make_pipelines.py`` before issue 18 moved the blocks into ``trunk``."""
    import arvis
    from arvis.samplers import sampler_for

    folder = Path(__file__).parent / "pipelines-0.1"
    samples = load_file(folder / "samples.safetensors")
    pipeline = arvis.load(folder / name)
    rngs = [torch.Generator().manual_seed(seed) for seed in range(3)]
    tokens = sampler_for(pipeline.generator, settings=pipeline.sampling)(pipeline.generator, samples[f"{name}/labels"], rng=rngs)
    assert torch.equal(tokens, samples[f"{name}/tokens"])
