"""Parity of the VAR converter with upstream FoundationVision/VAR (78b9539) on tiny random models.

The goldens were written by ``make_var_goldens.py`` (beside this file) from upstream's own code:
``var_vae_tiny.safetensors`` / ``var_tiny.safetensors`` are upstream ``state_dict()``s with upstream's
keys (float16-exact values, run in float32), ``var_outputs.safetensors`` holds upstream's outputs.

Measured on CPU (torch 2.x, float32): encode indices identical; decode max |error| 2.8e-7;
teacher-forced logits max |error| 1.7e-6; greedy sampling identical tokens, images max |error| 1.8e-7.

Sampling with randomness cannot be compared draw for draw: upstream draws with
``torch.multinomial(probs, generator=rng)`` from one generator for the whole batch, arvis by
inverse-CDF (``searchsorted`` of uniform noise) with per-sample generators, so the random streams
consume different numbers in a different way. Greedy decoding (top_k=1) removes the randomness
(both pick the arg-max of the guided logits) and is compared exactly instead.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from arvis.convert.common import load_checkpoint
from arvis.convert.var import VAR_FID_SAMPLING, convert_var
from arvis.pipeline import Pipeline
from arvis.samplers import NextScaleSettings
from arvis.samplers.next_scale import NextScaleSampler

GOLDENS = Path(__file__).parent / "goldens"
VAE = GOLDENS / "var_vae_tiny.safetensors"
VAR = GOLDENS / "var_tiny.safetensors"
TINY = dict(patch_nums=(1, 2, 3, 4), num_groups=2)  # not recoverable from the weights (released: 256 px, 32)


@pytest.fixture(scope="module")
def outputs() -> dict[str, torch.Tensor]:
    return load_file(str(GOLDENS / "var_outputs.safetensors"))


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory) -> Pipeline:
    folder = convert_var(VAE, VAR, tmp_path_factory.mktemp("var") / "pipeline", depth=2, **TINY)
    return Pipeline.from_pretrained(folder)


def test_converted_configs_and_sampling_defaults(pipeline):
    tokenizer, generator = pipeline.tokenizer.config, pipeline.generator.config
    assert (tokenizer.image_size, tokenizer.ch, tokenizer.ch_mult, tokenizer.num_res_blocks) == (8, 4, (1, 2), 1)
    assert (tokenizer.z_channels, tokenizer.codebook_size, tokenizer.share_quant_resi) == (4, 32, 4)
    assert (generator.depth, generator.dim, generator.num_heads, generator.num_classes) == (2, 32, 2, 5)
    assert generator.attn_l2_norm and not generator.shared_adaln and generator.mlp_ratio == 4.0
    assert pipeline.sampling == VAR_FID_SAMPLING


@torch.no_grad()
def test_encode_matches_upstream(pipeline, outputs):
    assert torch.equal(pipeline.tokenizer.encode(outputs["images"]), outputs["encode_indices"])


@torch.no_grad()
def test_decode_matches_upstream(pipeline, outputs):
    pixels = pipeline.tokenizer.decode(outputs["encode_indices"]).clamp(-1, 1)  # upstream clamps in idxBl_to_img
    torch.testing.assert_close(pixels, outputs["decode_pixels"], atol=1e-5, rtol=0)


@torch.no_grad()
def test_teacher_forced_logits_match_upstream(pipeline, outputs):
    logits = pipeline.generator(outputs["tf_tokens"], outputs["tf_labels"]).logits
    torch.testing.assert_close(logits, outputs["tf_logits"], atol=1e-5, rtol=0)


def test_greedy_sampling_matches_upstream(pipeline, outputs):
    # upstream autoregressive_infer_cfg(cfg=1.5, top_k=1) == arvis linear schedule with cfg_scale 1 + 1.5
    sampler = NextScaleSampler(NextScaleSettings(cfg_scale=2.5, cfg_schedule="linear", top_k=1))
    rng = [torch.Generator().manual_seed(i) for i in range(2)]
    tokens = sampler(pipeline.generator, outputs["greedy_labels"], rng=rng)
    assert torch.equal(tokens, outputs["greedy_tokens"])
    with torch.no_grad():
        images = pipeline.tokenizer.to_unit_range(pipeline.tokenizer.decode(tokens))
    torch.testing.assert_close(images, outputs["greedy_images"], atol=1e-5, rtol=0)


@pytest.mark.parametrize("path, key", [(VAE, "decoder.up.1.block.0.conv1.bias"), (VAR, "blocks.1.ffn.fc2.weight"),
                                       (VAR, "class_emb.weight")])
def test_missing_tensor_is_named(tmp_path, path, key):
    state = load_file(str(path))
    del state[key]
    broken = tmp_path / path.name
    save_file(state, broken)
    vae, var = (broken, VAR) if path == VAE else (VAE, broken)
    with pytest.raises(ValueError, match=f"missing tensors.*'{key}'|lacks the tensor '{key}'"):
        convert_var(vae, var, tmp_path / "out", **TINY)


def test_renamed_tensor_is_named(tmp_path):
    state = load_file(str(VAE))
    state["encoder.mid.attn_1.qkv_renamed.weight"] = state.pop("encoder.mid.attn_1.qkv.weight")
    save_file(state, tmp_path / "vae.safetensors")
    with pytest.raises(ValueError) as error:
        convert_var(tmp_path / "vae.safetensors", VAR, tmp_path / "out", **TINY)
    assert "'encoder.mid.attn_1.qkv.weight'" in str(error.value)
    assert "'encoder.mid.attn_1.qkv_renamed.weight'" in str(error.value)
    assert not (tmp_path / "out").exists()


def test_misshapen_tensor_is_named(tmp_path):
    state = load_file(str(VAR))
    state["head.bias"] = torch.zeros(31, dtype=state["head.bias"].dtype)
    save_file(state, tmp_path / "var.safetensors")
    with pytest.raises(ValueError, match=r"misshapen tensors.*'head\.bias' gives \(31,\)"):
        convert_var(VAE, tmp_path / "var.safetensors", tmp_path / "out", **TINY)


def test_pth_is_accepted_and_pickled_objects_are_refused(tmp_path, outputs):
    state = load_file(str(VAR))
    torch.save(state, tmp_path / "var.pth")
    assert load_checkpoint(tmp_path / "var.pth").keys() == state.keys()
    torch.save({**state, "args": {"depth": 2, "note": object.__new__(PickledThing)}}, tmp_path / "pickled.pth")
    with pytest.raises(ValueError, match="pickled.pth needs pickled Python objects.*weights_only=True"):
        convert_var(VAE, tmp_path / "pickled.pth", tmp_path / "out", **TINY)


def test_released_schedule_must_fit(tmp_path):
    with pytest.raises(ValueError, match="pass patch_nums= explicitly"):
        convert_var(VAE, VAR, tmp_path / "out", num_groups=2)  # default 256 px schedule, tiny file has 4 scales


def test_depth_mismatch_is_refused(tmp_path):
    with pytest.raises(ValueError, match="has 2 blocks, but depth=16"):
        convert_var(VAE, VAR, tmp_path / "out", depth=16, **TINY)


class PickledThing:
    """A class that only a full unpickler could rebuild."""


def test_cli_converts_and_refuses_to_overwrite(tmp_path, capsys):
    from arvis.cli import main

    arguments = ["convert", "var", "--vae", str(VAE), "--var", str(VAR), "--out", str(tmp_path / "pipe"),
                 "--patch-nums", "1", "2", "3", "4", "--num-groups", "2"]
    assert main(arguments) == 0
    assert '"generator": "VARGenerator"' in capsys.readouterr().out
    assert main(arguments) == 2 and "--overwrite" in capsys.readouterr().err
    assert main([*arguments, "--overwrite"]) == 0
    assert main(["convert", "var", "--vae", str(tmp_path / "absent.pth"), "--var", str(VAR), "--out",
                 str(tmp_path / "other")]) == 2
    assert "absent.pth" in capsys.readouterr().err
