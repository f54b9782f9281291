"""Text prompts end to end: the text tokenizer and frozen encoder, glyph captions and control maps, pipelines,
generate, sampling and the CLI (training: tests/train/test_training.py)."""

from __future__ import annotations

import json

import numpy as np

import pytest
import torch

import arvis
from arvis.cli import main as cli_main
from arvis.data import GlyphDataset
from arvis.data.captions import caption, caption_vocabulary, position_bins, size_bin
from arvis.data.control import edge_map, foreground_mask
from arvis.eval.glyph_attributes import caption_attributes, measure_attributes
from arvis.generators.base import GENERATORS
from arvis.pipeline import Pipeline
from arvis.testing import randomize_parameters_
from arvis.text import TextTokenizer
from arvis.tokenizers.base import TOKENIZERS


@pytest.fixture(scope="module")
def text_tokenizer():
    return TextTokenizer.word_level(caption_vocabulary())


@pytest.fixture(scope="module")
def text_pipeline(text_tokenizer):
    torch.manual_seed(0)
    tokenizer = TOKENIZERS.build("vq-tiny")
    preset = GENERATORS.preset("raster-t2i-tiny").replace(text_vocab_size=text_tokenizer.vocab_size,
                                                          prompt_length=12)
    generator = randomize_parameters_(GENERATORS.class_for_config(preset)(preset))
    return Pipeline(tokenizer, generator, text_tokenizer=text_tokenizer)


def test_word_tokenizer_pads_left_and_refuses_unknown_words_and_long_prompts(text_tokenizer, tmp_path):
    ids, mask = text_tokenizer.encode(["a small red ring at the top left", "A RING"], 10)
    assert mask.tolist()[1] == [False] * 8 + [True, True] and ids[1, :8].eq(0).all()
    assert ids[0, mask[0]].tolist() == text_tokenizer.encode(["a small red ring at the top left"], 8)[0][0].tolist()
    with pytest.raises(ValueError, match=r"outside the text vocabulary: \['purple'\]"):
        text_tokenizer.encode(["a purple ring"], 10)
    with pytest.raises(ValueError, match="more than the prompt length 3"):
        text_tokenizer.encode(["a small ring"] * 1 + ["a small red ring"], 3)
    text_tokenizer.save(tmp_path)
    loaded = TextTokenizer.load(tmp_path)
    assert torch.equal(loaded.encode(["a green plus"], 6)[0], text_tokenizer.encode(["a green plus"], 6)[0])
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(ValueError, match="corrupt text tokenizer"):
        TextTokenizer.load(tmp_path)


def test_captions_use_the_shared_bins_and_the_evaluator_finds_them_on_real_glyphs(text_tokenizer):
    dataset = GlyphDataset(300, image_size=32, seed=5)
    assert caption(0, dataset.params(0)) == dataset.caption(0)
    assert dataset.caption(0).startswith("a ") and " disk " in dataset.caption(0)
    assert size_bin(0.45) == 0 and size_bin(0.6) == 1 and size_bin(0.75) == 2
    assert position_bins((0.0, 0.0), 0.6) == (1, 1)
    text_tokenizer.encode([dataset.caption(index) for index in range(len(dataset))], 12)  # every word is known
    images, labels = dataset.tensors()
    measured = measure_attributes(images, labels)
    named = caption_attributes(labels, [dataset.params(index) for index in range(len(dataset))])
    for attribute in ("colour", "size", "position"):
        assert (measured[attribute] == named[attribute]).float().mean() > 0.85, attribute


def test_control_maps_match_the_renderer_and_reject_bad_images():
    dataset = GlyphDataset(8, image_size=32, seed=1, items="dicts")
    item = dataset[3]
    assert set(item) == {"image", "labels", "caption", "mask", "edges"} and item["mask"].shape == (1, 32, 32)
    estimated = foreground_mask(item["image"][None])[0]
    truth = item["mask"] > 0.5
    iou = (estimated.bool() & truth).sum() / (estimated.bool() | truth).sum()
    assert iou > 0.9
    edges = edge_map(item["image"][None])
    assert edges.shape == (1, 1, 32, 32) and 0 <= edges.min() and edges.max() <= 1
    assert edges[0, 0][truth[0]].mean() < edges.max()  # edges, not the filled shape
    with pytest.raises(ValueError, match=r"\(b, 3, H, W\)"):
        edge_map(item["image"])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        foreground_mask(item["image"][None] * 2 - 1)


def test_generate_with_prompts_is_deterministic_and_checks_its_conditions(text_pipeline):
    prompts = ["a small red ring at the top left", "a large blue plus"]
    first = arvis.generate(text_pipeline, prompts=prompts, num_samples=2, seed=4, output_type="np", batch_size=3)
    second = arvis.generate(text_pipeline, prompts=prompts, num_samples=2, seed=4, output_type="np", batch_size=1)
    assert first.shape == (4, 16, 16, 3) and (first == second).all()
    with pytest.raises(ValueError, match=r"conditioned on \['prompts'\], got \['class_labels'\]"):
        arvis.generate(text_pipeline, class_labels=[0])
    with pytest.raises(ValueError, match="outside the text vocabulary"):
        arvis.generate(text_pipeline, prompts=["a purple ring"])
    with pytest.raises(ValueError, match=r"conditioned on \['class_labels'\], got \['prompts'\]"):
        arvis.generate(Pipeline(text_pipeline.tokenizer, randomize_parameters_(GENERATORS.build("raster-tiny"))),
                       prompts=["a ring"])


def test_text_pipeline_round_trips_and_needs_its_text_tokenizer(text_pipeline, tmp_path):
    text_pipeline.save_pretrained(tmp_path / "p")
    assert (tmp_path / "p" / "text_tokenizer" / "tokenizer.json").is_file()
    loaded = arvis.load(tmp_path / "p")
    prompts = ["a medium green disk in the centre"]
    assert torch.equal(arvis.generate(loaded, prompts=prompts, output_type="pt"),
                       arvis.generate(text_pipeline, prompts=prompts, output_type="pt"))
    with pytest.raises(ValueError, match="needs its text tokenizer"):
        Pipeline(text_pipeline.tokenizer, text_pipeline.generator)
    with pytest.raises(ValueError, match="does not match"):
        Pipeline(text_pipeline.tokenizer, text_pipeline.generator, text_tokenizer=TextTokenizer.word_level(["ring"]))


def test_cli_generate_and_sample_take_prompts(text_pipeline, tmp_path, capsys):
    text_pipeline.save_pretrained(tmp_path / "p")
    cli_main(["generate", str(tmp_path / "p"), "--prompt", "a small red ring", "--prompt", "a large blue plus",
              "--num-samples", "2", "--out", str(tmp_path / "grid.png")])
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["prompts"] == ["a small red ring", "a large blue plus"] and result["images"] == 4
    cli_main(["sample", str(tmp_path / "p"), "--num-samples", "3", "--out", str(tmp_path / "s"),
              "--prompt", "a small red ring", "--device", "cpu"])
    protocol = json.loads((tmp_path / "s" / "protocol.json").read_text())
    assert protocol["labels"] == {"policy": "prompts", "values": ["a small red ring"]}
    capsys.readouterr()
    assert cli_main(["sample", str(tmp_path / "p"), "--num-samples", "3", "--out", str(tmp_path / "t"),
                     "--labels", "1", "--device", "cpu"]) != 0
    assert "text-conditional; pass prompts" in capsys.readouterr().err


def test_frozen_text_encoder_pipeline_samples_and_round_trips(tiny_t5_folder, tmp_path):
    from arvis.text import FrozenTextEncoder

    encoder = FrozenTextEncoder.load(tiny_t5_folder)
    features, mask = encoder.encode(["a small red ring", "a large blue plus at the top"], 8)
    assert features.shape == (2, 8, 16) and mask.sum(1).tolist() == [4, 7] and mask[:, -1].all()
    assert features[~mask].abs().sum() == 0
    with pytest.raises(ValueError, match="more than the prompt length 3"):
        encoder.encode(["a small red ring"], 3)
    torch.manual_seed(0)
    preset = GENERATORS.preset("raster-t2i-tiny").replace(text_vocab_size=None, text_feature_dim=16, prompt_length=8)
    generator = randomize_parameters_(GENERATORS.class_for_config(preset)(preset))
    pipeline = Pipeline(TOKENIZERS.build("vq-tiny"), generator, text_encoder=encoder)
    prompts = ["a small red ring", "a large blue plus"]
    images = arvis.generate(pipeline, prompts=prompts, num_samples=2, output_type="np")
    assert (arvis.generate(pipeline, prompts=prompts, num_samples=2, output_type="np", batch_size=1) == images).all()
    pipeline.save_pretrained(tmp_path / "p")
    assert (tmp_path / "p" / "text_encoder" / "model.safetensors").is_file()
    assert (arvis.generate(arvis.load(tmp_path / "p"), prompts=prompts, num_samples=2, output_type="np") == images).all()
    wide = GENERATORS.class_for_config(preset)(preset.replace(text_feature_dim=32))
    with pytest.raises(ValueError, match="16 wide but the generator takes 32"):
        Pipeline(pipeline.tokenizer, wide, text_encoder=encoder)
    with pytest.raises(FileNotFoundError, match=r"lacks \['config.json', 'model.safetensors', 'tokenizer.json'\]"):
        FrozenTextEncoder.load(tmp_path / "nothing-here")


def test_text_config_is_checked_and_the_caption_mlp_is_upstreams():
    from arvis.generators.raster import RasterConfig

    for bad in ({"condition": "Text"}, {"prompt_length": 0}, {"text_vocab_size": 1}):
        with pytest.raises(ValueError):
            RasterConfig(**bad)
    generator = GENERATORS.build("raster-t2i-tiny")
    projection = generator.cls_embedding.cap_proj
    assert projection.fc1.bias is None and projection.fc2.bias is None  # LlamaGen's caption MLP has no biases
    assert "cls_embedding.uncond_embedding" in generator.state_dict()  # a buffer, as upstream: never trained
    assert not any(name.endswith("uncond_embedding") for name, _ in generator.named_parameters())


def test_prompt_samples_carry_no_class_labels(text_pipeline, tmp_path):
    from arvis.sample import collect_npz, sample_in_memory, sample_to_folder

    images, labels, protocol = sample_in_memory(text_pipeline, num_samples=3, prompts=["a small red ring"])
    assert images.shape == (3, 16, 16, 3) and labels is None and protocol["labels"]["policy"] == "prompts"
    sample_to_folder(text_pipeline, tmp_path / "s", num_samples=3, prompts=["a small red ring", "a large plus"])
    with np.load(collect_npz(tmp_path / "s")) as arrays:
        assert "labels" not in arrays and arrays["prompt_index"].tolist() == [0, 1, 0]


def test_a_text_encoder_folder_that_could_run_code_is_refused(tiny_t5_folder, tmp_path):
    import shutil

    from arvis.text import FrozenTextEncoder

    crafted = tmp_path / "crafted"
    shutil.copytree(tiny_t5_folder, crafted)
    (crafted / "evil_tok.py").write_text("raise SystemExit('ran code from the folder')\n")
    with pytest.raises(ValueError, match=r"holds \['evil_tok.py'\], which could run code"):
        FrozenTextEncoder.load(crafted)
    (crafted / "evil_tok.py").unlink()
    header = json.loads((crafted / "config.json").read_text())
    (crafted / "config.json").write_text(json.dumps({**header, "auto_map": {"AutoModel": "evil.Model"}}))
    with pytest.raises(ValueError, match="plain T5 config"):
        FrozenTextEncoder.load(crafted)
    (crafted / "config.json").write_text(json.dumps({**header, "model_type": "evil"}))
    with pytest.raises(ValueError, match="plain T5 config"):
        FrozenTextEncoder.load(crafted)


def test_empty_prompts_and_bad_condition_values_get_clear_errors(tiny_t5_folder, text_pipeline):
    from arvis.text import FrozenTextEncoder

    encoder = FrozenTextEncoder.load(tiny_t5_folder)
    features, mask = encoder.encode(["", ""], 4)  # every prompt empty: the null prompt
    assert features.shape == (2, 4, 16) and not mask.any() and features.abs().sum() == 0
    for bad in ([], "a ring"):
        with pytest.raises(ValueError, match="non-empty list of strings"):
            encoder.encode(bad, 4)
    with pytest.raises(ValueError, match="list of strings"):
        text_pipeline.condition(prompts=iter(["a ring"]))
    plain = Pipeline(text_pipeline.tokenizer, randomize_parameters_(GENERATORS.build("raster-tiny")))
    for bad in (3, torch.tensor(3), "12"):
        with pytest.raises(ValueError, match=r"list \(or 1-D tensor\) of class ids"):
            plain.condition(class_labels=bad)
    assert plain.condition(class_labels=np.array([1, 2])).labels.tolist() == [1, 2]
    words = TextTokenizer.word_level(["ring"]).tokenizer
    words.model.unk_token = "[PAD]"
    with pytest.raises(ValueError, match=r"\[UNK\] as its unknown token"):
        TextTokenizer(words)
