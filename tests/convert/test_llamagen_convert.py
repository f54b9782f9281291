"""Parity of the LlamaGen converter against upstream outputs (goldens from ``make_llamagen_goldens.py``).

Tiny upstream models with random weights: the converted pipeline must reproduce upstream's VQ
encode indices and decoded pixels, its teacher-forced GPT logits (zeroed-prefix RoPE included)
and its greedy (top-k 1) CFG samples token for token. Random sampling is not compared: upstream
draws with ``torch.multinomial``, arvis by inverse-CDF sampling, so their random streams differ.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from arvis.convert.llamagen import _image_size_from_name, convert_llamagen, infer_gpt_config, load_llamagen_state
from arvis.pipeline import Pipeline
from arvis.samplers import sampler_for

GOLDENS = Path(__file__).parent / "goldens"
VQ_FILE = GOLDENS / "llamagen_vq_tiny.safetensors"
GPT_FILE = GOLDENS / "llamagen_gpt_tiny.safetensors"
TINY = dict(image_size=16, num_heads=2, num_groups=2)  # heads and groups are not readable from shapes


@pytest.fixture(scope="module")
def outputs() -> dict[str, torch.Tensor]:
    return load_file(GOLDENS / "llamagen_outputs.safetensors")


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory) -> Pipeline:
    folder = convert_llamagen(VQ_FILE, GPT_FILE, tmp_path_factory.mktemp("llamagen") / "pipe", num_classes=5, **TINY)
    return Pipeline.from_pretrained(folder)


def test_inferred_configs(pipeline):
    vq, gpt = pipeline.tokenizer.config, pipeline.generator.config
    assert (vq.ch, vq.ch_mult, vq.num_res_blocks, vq.z_channels) == (4, (1, 1, 2), 1, 4)
    assert (vq.codebook_size, vq.codebook_dim, pipeline.tokenizer.grid_size) == (32, 8, (4, 4))
    assert (gpt.dim, gpt.num_layers, gpt.num_heads, gpt.num_kv_heads, gpt.vocab_size, gpt.num_classes) == (
        32, 2, 2, None, 32, 5)
    assert gpt.token_grid == (4, 4) and gpt.zero_prefix_rope
    assert pipeline.sampling.cfg_scale == 2.0


@torch.no_grad()
def test_vq_matches_upstream(pipeline, outputs):
    indices = pipeline.tokenizer.encode(outputs["images"])
    assert torch.equal(indices, outputs["indices"])
    decoded = pipeline.tokenizer.decode(outputs["indices"])
    torch.testing.assert_close(decoded, outputs["decoded"], atol=1e-5, rtol=0)


@torch.no_grad()
def test_gpt_logits_match_upstream(pipeline, outputs):
    logits = pipeline.generator(outputs["tokens"], outputs["labels"]).logits
    torch.testing.assert_close(logits, outputs["logits"], atol=1e-5, rtol=0)


def test_greedy_cfg_tokens_match_upstream(pipeline, outputs):
    sampler = sampler_for(pipeline.generator, cfg_scale=2.0, top_k=1)
    tokens = sampler(pipeline.generator, outputs["greedy_labels"])
    assert torch.equal(tokens, outputs["greedy_tokens"])


def test_wrapped_pickle_with_upstream_buffers(tmp_path, pipeline, outputs):
    """A ``.pt`` with weights under "model", training extras and upstream-only buffers converts the same."""
    import argparse

    vq_state = dict(load_file(VQ_FILE), **{"quantize.codebook_used": torch.zeros(65536)})
    gpt_state = dict(load_file(GPT_FILE), freqs_cis=torch.zeros(17, 8, 2))
    torch.save({"model": vq_state, "steps": 3, "args": argparse.Namespace(lr=1e-4)}, tmp_path / "vq_ds4.pt")
    torch.save({"model": gpt_state}, tmp_path / "c2i_T_16.pt")
    folder = convert_llamagen(tmp_path / "vq_ds4.pt", tmp_path / "c2i_T_16.pt", tmp_path / "pipe", **TINY)
    converted = Pipeline.from_pretrained(folder)
    assert converted.tokenizer.image_size == (16, 16)
    for key, value in pipeline.generator.state_dict().items():
        assert torch.equal(converted.generator.state_dict()[key], value), key


@pytest.mark.parametrize(("upstream_key", "renamed"), [
    ("quantize.embedding.weight", None),
    ("encoder.mid.1.proj_out.weight", "encoder.mid.1.proj.weight"),
])
def test_vq_missing_or_renamed_tensor_is_named(tmp_path, upstream_key, renamed):
    state = load_file(VQ_FILE)
    tensor = state.pop(upstream_key)
    if renamed:
        state[renamed] = tensor
    save_file(state, tmp_path / "vq.safetensors")
    with pytest.raises(ValueError, match=upstream_key.replace(".", r"\.")) as error:
        convert_llamagen(tmp_path / "vq.safetensors", GPT_FILE, tmp_path / "out", **TINY)
    if renamed:
        assert renamed in str(error.value)


@pytest.mark.parametrize(("upstream_key", "renamed", "names_renamed"), [
    ("layers.1.feed_forward.w3.weight", None, False),
    # an already-converted (arvis-named) class table: the shape inference names the upstream key it needs
    ("cls_embedding.embedding_table.weight", "cls_embedding.embedding.weight", False),
    ("layers.0.attention.wo.weight", "layers.0.attention.out.weight", True),
])
def test_gpt_missing_or_renamed_tensor_is_named(tmp_path, upstream_key, renamed, names_renamed):
    state = load_file(GPT_FILE)
    tensor = state.pop(upstream_key)
    if renamed:
        state[renamed] = tensor
    save_file(state, tmp_path / "gpt.safetensors")
    with pytest.raises(ValueError, match=upstream_key.replace(".", r"\.")) as error:
        convert_llamagen(VQ_FILE, tmp_path / "gpt.safetensors", tmp_path / "out", **TINY)
    if names_renamed:
        assert renamed in str(error.value)
    assert not (tmp_path / "out").exists()


def test_misshapen_tensor_and_bad_arguments_are_named(tmp_path):
    state = load_file(GPT_FILE)
    state["layers.0.ffn_norm.weight"] = torch.ones(31)
    save_file(state, tmp_path / "gpt.safetensors")
    with pytest.raises(ValueError, match=r"layers\.0\.ffn_norm\.weight"):
        convert_llamagen(VQ_FILE, tmp_path / "gpt.safetensors", tmp_path / "out", **TINY)
    with pytest.raises(ValueError, match="num_heads"):  # width 32 is not in LlamaGen's table
        convert_llamagen(VQ_FILE, GPT_FILE, tmp_path / "out", image_size=16, num_groups=2)
    with pytest.raises(ValueError, match="num_classes=1000"):
        convert_llamagen(VQ_FILE, GPT_FILE, tmp_path / "out", num_classes=1000, **TINY)


def test_heads_come_from_llamagen_table():
    state = {"cls_embedding.embedding_table.weight": torch.zeros(1001, 768),
             "tok_embeddings.weight": torch.zeros(16384, 768),
             "layers.0.attention.wqkv.weight": torch.zeros(3 * 768, 768),
             "layers.0.feed_forward.w1.weight": torch.zeros(2048, 768)}
    config = infer_gpt_config(state, token_grid=(16, 16))
    assert (config.num_heads, config.num_classes, config.ffn_multiple_of) == (12, 1000, 256)
    with pytest.raises(ValueError, match="preset 'llamagen-b' has dim 768 and 12 layers"):
        infer_gpt_config(state, token_grid=(16, 16), preset="llamagen-b")  # the state has 1 layer


@pytest.mark.parametrize(("name", "size"), [("c2i_B_256.pt", 256), ("c2i_XL_384.pt", 384), ("gpt.pt", None)])
def test_image_size_from_upstream_file_name(name, size):
    assert _image_size_from_name(Path(name)) == size


def test_load_refuses_foreign_pickles(tmp_path):
    torch.save({"model": {"w": torch.zeros(1)}, "thing": Path("x")}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="weights_only"):
        load_llamagen_state(tmp_path / "bad.pt")


def test_cli_converts_llamagen(tmp_path, capsys):
    from arvis.cli import main

    assert main(["convert", "llamagen", "--vq", str(VQ_FILE), "--gpt", str(GPT_FILE), "--out", str(tmp_path / "p"),
                 "--image-size", "16", "--num-heads", "2", "--num-groups", "2", "--num-classes", "5"]) == 0
    assert '"generator": "RasterGenerator"' in capsys.readouterr().out
