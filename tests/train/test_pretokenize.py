import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from arvis.cli import main as cli_main
from arvis.data import GlyphDataset
from arvis.tokenizers.base import TOKENIZERS, Tokenizer
from arvis.train.options import DataConfig
from arvis.train.pretokenize import PretokenizeConfig, load_pretokenized, main, pretokenize


@pytest.fixture
def tokenizer_dir(tmp_path):
    torch.manual_seed(0)
    return TOKENIZERS.build("vq-tiny").eval().save_pretrained(tmp_path / "tokenizer")


def _config(tokenizer_dir, output, **changes) -> PretokenizeConfig:
    data = DataConfig(image_size=16, num_samples=32, random_flip=changes.pop("random_flip", False))
    return PretokenizeConfig(tokenizer_path=str(tokenizer_dir), data=data, output=str(output), **changes)


def _encode(tokenizer_dir, images, chunk):
    """Reference tokens, encoded in the same batch shapes as pretokenize so that the results are exact."""
    tokenizer = Tokenizer.from_pretrained(tokenizer_dir)
    with torch.inference_mode():
        return torch.cat([tokenizer.encode(tokenizer.from_unit_range(part)) for part in images.split(chunk)])


def _glyphs():
    dataset = GlyphDataset(32, image_size=16, seed=0, num_classes=10)
    images, labels = zip(*(dataset[index] for index in range(len(dataset))), strict=True)
    return torch.stack(images), torch.tensor(labels)


def test_tokens_equal_the_tokenizers_encoding(tokenizer_dir, tmp_path):
    path = pretokenize(_config(tokenizer_dir, tmp_path / "tokens.safetensors"))
    data, metadata = load_pretokenized(path)
    tokens, labels = data.tensors
    images, expected_labels = _glyphs()
    assert tokens.shape == (32, 16) and tokens.dtype == torch.int64 and labels.dtype == torch.int64
    torch.testing.assert_close(tokens, _encode(tokenizer_dir, images, 256), rtol=0, atol=0)
    torch.testing.assert_close(labels, expected_labels, rtol=0, atol=0)
    assert load_file(path)["tokens"].dtype == torch.int32 and metadata["token_dtype"] == "int32"


def test_random_flip_adds_every_mirror_after_the_images(tokenizer_dir, tmp_path):
    # batch_size 12 (batches of 12, 12, 8) checks that rows are reordered to [images; mirrors].
    path = pretokenize(_config(tokenizer_dir, tmp_path / "tokens.safetensors", random_flip=True, batch_size=12))
    data, metadata = load_pretokenized(path)
    tokens, labels = data.tensors
    images, expected_labels = _glyphs()
    assert tokens.shape == (64, 16) and metadata["with_mirrors"] is True and metadata["num_images"] == 32
    torch.testing.assert_close(tokens[:32], _encode(tokenizer_dir, images, 12), rtol=0, atol=0)
    torch.testing.assert_close(tokens[32:], _encode(tokenizer_dir, images.flip(-1), 12), rtol=0, atol=0)
    torch.testing.assert_close(labels, expected_labels.repeat(2), rtol=0, atol=0)


def test_metadata_round_trips(tokenizer_dir, tmp_path):
    config = _config(tokenizer_dir, tmp_path / "out" / "tokens.safetensors")
    _, metadata = load_pretokenized(pretokenize(config))
    tokenizer = Tokenizer.from_pretrained(tokenizer_dir)
    assert metadata["tokenizer_path"] == str(tokenizer_dir) and metadata["tokenizer_type"] == "VQTokenizer"
    assert metadata["tokenizer_config"] == tokenizer.config.to_dict()
    assert metadata["token_layout"] == [[4, 4]] and metadata["vocab_size"] == 64
    assert metadata["class_names"] == list(GlyphDataset(1, num_classes=10).class_names)
    assert metadata["with_mirrors"] is False and metadata["num_images"] == 32
    assert DataConfig.from_dict(metadata["data_config"]) == config.data
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["tokens.safetensors"]  # no temporary file left


def test_missing_and_corrupt_files(tokenizer_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.safetensors"):
        load_pretokenized(tmp_path / "nowhere.safetensors")
    (tmp_path / "garbage.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="corrupt token file .*garbage.safetensors"):
        load_pretokenized(tmp_path / "garbage.safetensors")
    path = pretokenize(_config(tokenizer_dir, tmp_path / "tokens.safetensors"))
    tensors = load_file(path)
    with safe_open(str(path), framework="pt") as file:
        metadata = file.metadata()
    save_file({"tokens": tensors["tokens"]}, str(tmp_path / "no_labels.safetensors"), metadata=metadata)
    with pytest.raises(ValueError, match=r"lacks the tensor\(s\) \['labels'\]"):
        load_pretokenized(tmp_path / "no_labels.safetensors")
    save_file(tensors, str(tmp_path / "no_metadata.safetensors"))
    with pytest.raises(ValueError, match="lacks the metadata entries"):
        load_pretokenized(tmp_path / "no_metadata.safetensors")
    save_file({"tokens": tensors["tokens"], "labels": tensors["labels"][:5].clone()},
              str(tmp_path / "short.safetensors"), metadata=metadata)
    with pytest.raises(ValueError, match="32 token rows but labels of shape"):
        load_pretokenized(tmp_path / "short.safetensors")
    save_file(tensors, str(tmp_path / "miscounted.safetensors"), metadata={**metadata, "num_images": "31"})
    with pytest.raises(ValueError, match="holds 32 rows but its metadata describes 31"):
        load_pretokenized(tmp_path / "miscounted.safetensors")
    save_file(tensors, str(tmp_path / "bad_json.safetensors"), metadata={**metadata, "class_names": "[oops"})
    with pytest.raises(ValueError, match="malformed metadata"):
        load_pretokenized(tmp_path / "bad_json.safetensors")


def test_bad_configs(tokenizer_dir, tmp_path):
    with pytest.raises(ValueError, match="tokenizer_path is required"):
        pretokenize(PretokenizeConfig(data=DataConfig(image_size=16, num_samples=4)))
    with pytest.raises(ValueError, match="data.image_size"):
        pretokenize(PretokenizeConfig(tokenizer_path=str(tokenizer_dir), data=DataConfig(num_samples=4)))
    with pytest.raises(ValueError, match="batch_size"):
        PretokenizeConfig(batch_size=0)


def test_entry_points_take_a_recipe_and_overrides(tokenizer_dir, tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"tokenizer_path: {tokenizer_dir}\ndata:\n  image_size: 16\n")
    main(["--config", str(recipe), "data.num_samples=8", f"output={tmp_path / 'a.safetensors'}"])
    assert len(load_pretokenized(tmp_path / "a.safetensors")[0]) == 8
    assert cli_main(["pretokenize", "--config", str(recipe), "data.num_samples=4", "data.random_flip=true",
                     f"output={tmp_path / 'b.safetensors'}"]) == 0
    assert len(load_pretokenized(tmp_path / "b.safetensors")[0]) == 8
    assert load_pretokenized(tmp_path / "b.safetensors")[1]["with_mirrors"] is True
    assert cli_main(["pretokenize", "bogus.key=1"]) == 2


def test_generator_trains_from_a_token_file_and_rejects_a_foreign_one(tmp_path):
    from arvis.train.generator import GeneratorTrainConfig, train_generator
    from arvis.train.recipe import load_recipe

    tokenizer_dir = tmp_path / "tok"
    TOKENIZERS.build("vq-tiny").eval().save_pretrained(tokenizer_dir)
    tokens = pretokenize(load_recipe(PretokenizeConfig, None, [
        f"tokenizer_path={tokenizer_dir}", "data.image_size=16", "data.num_samples=32",
        f"output={tmp_path / 'tokens.safetensors'}"]))
    common = ["generator=raster-tiny", "run.batch_size=8", "run.max_steps=2", "run.progress=false",
              f"tokens_path={tokens}"]
    path, _ = train_generator(load_recipe(GeneratorTrainConfig, None, common + [
        f"tokenizer_path={tokenizer_dir}", f"run.output_dir={tmp_path / 'run'}"]))
    assert (path / "pipeline.json").is_file()
    other = tmp_path / "other"
    TOKENIZERS.build("vq-tiny", codebook_size=32).eval().save_pretrained(other)
    with pytest.raises(ValueError, match="pretokenize again with this tokenizer"):
        train_generator(load_recipe(GeneratorTrainConfig, None, common + [
            f"tokenizer_path={other}", f"run.output_dir={tmp_path / 'run2'}"]))
