import json

import numpy as np
import pytest
import torch
from PIL import Image

import arvis
from arvis.generators.base import GENERATORS
from arvis.pipeline import Pipeline
from arvis.tokenizers.base import TOKENIZERS


def test_generate_output_types_and_order(tiny_pipeline):
    images = arvis.generate(tiny_pipeline, class_labels=[0, 3], num_samples=2, seed=1, output_type="pt")
    assert images.shape == (4, 3, 16, 16) and images.dtype == torch.float32
    assert 0 <= images.min() and images.max() <= 1
    array = arvis.generate(tiny_pipeline, class_labels=[0, 3], num_samples=2, seed=1, output_type="np")
    assert array.shape == (4, 16, 16, 3) and array.dtype == np.uint8
    np.testing.assert_array_equal(array, (images * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy())
    pil = arvis.generate(tiny_pipeline, class_labels=[5], seed=1)
    assert len(pil) == 1 and isinstance(pil[0], Image.Image) and pil[0].size == (16, 16)


def test_generate_is_seeded_per_image_whatever_the_batch_size(tiny_pipeline):
    first = arvis.generate(tiny_pipeline, class_labels=[1, 2], num_samples=3, seed=5, output_type="pt")
    again = arvis.generate(tiny_pipeline, class_labels=[1, 2], num_samples=3, seed=5, output_type="pt", batch_size=2)
    other = arvis.generate(tiny_pipeline, class_labels=[1, 2], num_samples=3, seed=6, output_type="pt")
    # Tokens are identical; the decoder's float rounding may depend on the batch shape (~1e-6).
    torch.testing.assert_close(again, first, atol=1e-5, rtol=0)
    assert not torch.allclose(first, other, atol=1e-2)
    alone = arvis.generate(tiny_pipeline, class_labels=[1], num_samples=1, seed=5, output_type="pt")
    torch.testing.assert_close(alone[0], first[0], atol=1e-5, rtol=0)  # image 0 ignores the images after it


def test_a_pipeline_samples_in_eval_mode():
    tokenizer, generator = TOKENIZERS.build("vq-tiny"), GENERATORS.build("raster-tiny")
    assert generator.training
    pipeline = Pipeline(tokenizer, generator)
    assert not pipeline.generator.training and not pipeline.tokenizer.training
    first = arvis.generate(pipeline, class_labels=[3], num_samples=4, seed=0, output_type="pt")
    assert torch.equal(first, arvis.generate(pipeline, class_labels=[3], num_samples=4, seed=0, output_type="pt"))


def test_sampling_overrides_change_the_result(tiny_pipeline):
    base = arvis.generate(tiny_pipeline, class_labels=[1], num_samples=4, seed=0, output_type="pt")
    greedy = arvis.generate(tiny_pipeline, class_labels=[1], num_samples=4, seed=0, output_type="pt", top_k=1)
    assert not torch.equal(base, greedy)
    assert torch.equal(greedy[0], greedy[1])  # greedy decoding ignores the random stream


def test_pipeline_round_trip(tiny_pipeline, tmp_path):
    tiny_pipeline.save_pretrained(tmp_path / "p")
    loaded = arvis.load(tmp_path / "p")
    assert loaded.sampling == tiny_pipeline.sampling
    expected = arvis.generate(tiny_pipeline, class_labels=[2, 7], num_samples=2, seed=3, output_type="pt")
    assert torch.equal(arvis.generate(tmp_path / "p", class_labels=[2, 7], num_samples=2, seed=3,
                                      output_type="pt"), expected)


@pytest.mark.parametrize("labels", [[10], [-1], [1.5], [True], []])
def test_bad_class_ids(tiny_pipeline, labels):
    with pytest.raises(ValueError, match="class"):
        arvis.generate(tiny_pipeline, class_labels=labels)


@pytest.mark.parametrize("arguments, message", [
    ({"num_samples": 2.5}, "num_samples"), ({"num_samples": 0}, "num_samples"), ({"seed": None}, "seed"),
    ({"batch_size": 0}, "batch_size"), ({"device": "meta"}, "pipeline is on cpu"),
])
def test_bad_generate_numbers(tiny_pipeline, arguments, message):
    with pytest.raises(ValueError, match=message):
        arvis.generate(tiny_pipeline, class_labels=[1], **arguments)


def test_bad_generate_arguments(tiny_pipeline):
    with pytest.raises(ValueError, match="output_type"):
        arvis.generate(tiny_pipeline, class_labels=[1], output_type="jpeg")
    with pytest.raises(ValueError, match="top_p"):
        arvis.generate(tiny_pipeline, class_labels=[1], top_p=1.5)


def test_mismatched_tokenizer_and_generator():
    tokenizer = TOKENIZERS.build("vq-tiny")
    with pytest.raises(ValueError, match="vocabulary"):
        Pipeline(tokenizer, GENERATORS.build("raster-tiny", vocab_size=128))
    with pytest.raises(ValueError, match="layout"):
        Pipeline(tokenizer, GENERATORS.build("raster-tiny", token_grid=(8, 8)))
    with pytest.raises(ValueError, match="Tokenizer and a Generator"):
        Pipeline(GENERATORS.build("raster-tiny"), tokenizer)


def test_missing_and_corrupt_pipeline_folders(tiny_pipeline, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        arvis.load(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="pipeline.json is missing"):
        arvis.load(tmp_path / "empty")
    path = tiny_pipeline.save_pretrained(tmp_path / "p")

    weights = path / "generator" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(ValueError, match="corrupt weights file .*generator"):
        arvis.load(path)
    weights.unlink()
    with pytest.raises(FileNotFoundError, match="missing weights file"):
        arvis.load(path)

    tiny_pipeline.save_pretrained(path)
    (path / "pipeline.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="pipeline.json lacks the entries"):
        arvis.load(path)
    (path / "pipeline.json").write_text("{")
    with pytest.raises(ValueError, match="corrupt JSON .*pipeline.json"):
        arvis.load(path)

    tiny_pipeline.save_pretrained(path)
    (path / "tokenizer" / "config.json").write_text("{broken")
    with pytest.raises(ValueError, match="corrupt JSON .*tokenizer"):
        arvis.load(path)


def test_renamed_or_misshapen_tensor_is_named(tiny_pipeline, tmp_path):
    from safetensors.torch import load_file, save_file

    path = tiny_pipeline.save_pretrained(tmp_path / "p")
    weights = path / "generator" / "model.safetensors"
    state = load_file(weights)
    state["renamed.weight"] = state.pop("norm.weight")
    save_file(state, weights)
    with pytest.raises(ValueError, match=r"missing tensors \['norm.weight'\].*unexpected tensors \['renamed.weight'\]"):
        arvis.load(path)
    state["norm.weight"] = torch.zeros(3)
    del state["renamed.weight"]
    save_file(state, weights)
    with pytest.raises(ValueError, match="wrong shapes.*norm.weight"):
        arvis.load(path)


def test_config_of_another_version_with_unknown_field_is_rejected(tiny_pipeline, tmp_path):
    path = tiny_pipeline.save_pretrained(tmp_path / "p")
    header = json.loads((path / "generator" / "config.json").read_text())
    header["config"]["flash"] = True
    (path / "generator" / "config.json").write_text(json.dumps(header))
    with pytest.raises(ValueError, match="unknown RasterConfig key.*'flash'"):
        arvis.load(path)


def test_half_precision_tokenizer_names_the_dtype_mismatch():
    tokenizer = TOKENIZERS.build("vq-tiny").eval().to(torch.bfloat16)
    pixels = torch.zeros(1, 3, 16, 16)
    with pytest.raises(ValueError, match="pixels are torch.float32 but the tokenizer's weights are torch.bfloat16"):
        tokenizer.encode(pixels)
    assert tokenizer.encode(pixels.to(torch.bfloat16)).shape == (1, 16)


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_settings_in_pipeline_json_are_refused(tiny_pipeline, tmp_path, value):
    path = tiny_pipeline.save_pretrained(tmp_path / "p")
    text = (path / "pipeline.json").read_text().replace('"cfg_scale": 2.0', f'"cfg_scale": {value}')
    (path / "pipeline.json").write_text(text)
    with pytest.raises(ValueError, match="NextTokenSettings.cfg_scale: expected a finite number"):
        arvis.load(path)


@pytest.mark.parametrize("entry, message", [
    (5, "must be the name of a sub-folder"),
    (None, "must be the name of a sub-folder"),
    ("../elsewhere", "not inside the pipeline folder"),
    ("/absolute/tokenizer", "not inside the pipeline folder"),
])
def test_pipeline_json_component_entries_must_name_sub_folders(tiny_pipeline, tmp_path, entry, message):
    path = tiny_pipeline.save_pretrained(tmp_path / "p")
    tiny_pipeline.tokenizer.save_pretrained(tmp_path / "elsewhere")  # a real component outside: never loaded
    index = json.loads((path / "pipeline.json").read_text())
    index["tokenizer"] = entry
    (path / "pipeline.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match=f"pipeline.json: the 'tokenizer' entry .*{message}"):
        arvis.load(path)


def test_a_link_leading_out_of_the_pipeline_is_refused(tiny_pipeline, tmp_path):
    path = tiny_pipeline.save_pretrained(tmp_path / "p")
    tiny_pipeline.tokenizer.save_pretrained(tmp_path / "elsewhere")
    (path / "outside").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    index = json.loads((path / "pipeline.json").read_text())
    index["tokenizer"] = "outside"
    (path / "pipeline.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match="leads outside the pipeline folder"):
        arvis.load(path)


def test_the_pipeline_compares_token_specs_including_the_latent_width(tiny_pipeline):
    from arvis.posttrain.distilled_decoding import DistilledRaster

    distilled = DistilledRaster.from_teacher(tiny_pipeline.generator, tiny_pipeline.tokenizer, split=3).eval()
    assert distilled.token_spec.latent_dim == tiny_pipeline.tokenizer.latent_dim == 4
    Pipeline(tiny_pipeline.tokenizer, distilled)  # serves ids and 4-dimensional code vectors
    wider = DistilledRaster(distilled.config.replace(code_dim=8)).eval()
    with pytest.raises(ValueError, match=r"tokenizer latent dimension \(4\) does not match the generator's \(8\)"):
        Pipeline(tiny_pipeline.tokenizer, wider)
