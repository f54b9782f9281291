import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from arvis.cli import main as cli_main
from arvis.data import GlyphDataset
from arvis.tokenizers.base import TOKENIZERS, Tokenizer
from arvis.train.options import DataConfig
from arvis.train.pretokenize import PretokenizeConfig, load_pretokenized, main, pretokenize
from arvis.train.tokens import read_tokens


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


# ---------------------------------------------------------------------------------------------- latents


def _encode_latents(tokenizer_dir, images, chunk):
    """Reference latents, encoded in the same batch shapes as pretokenize."""
    tokenizer = Tokenizer.from_pretrained(tokenizer_dir)
    with torch.inference_mode():
        return torch.cat([tokenizer.encode_latents(tokenizer.from_unit_range(part)) for part in images.split(chunk)])


def test_latents_are_stored_as_float16_and_read_as_float32(tokenizer_dir, tmp_path):
    path = pretokenize(_config(tokenizer_dir, tmp_path / "latents.safetensors", store="latents", random_flip=True,
                               batch_size=12))
    data, metadata = load_pretokenized(path)
    latents, labels = data.tensors
    images, expected_labels = _glyphs()
    assert latents.shape == (64, 16, 4) and latents.dtype == torch.float32 and labels.dtype == torch.int64
    stored = load_file(path)
    assert set(stored) == {"latents", "labels"} and stored["latents"].dtype == torch.float16
    expected = _encode_latents(tokenizer_dir, torch.cat([images, images.flip(-1)]), 12)
    torch.testing.assert_close(latents, expected.half().float(), rtol=0, atol=0)
    torch.testing.assert_close(latents, expected, rtol=0, atol=1e-3)  # float16 of unit vectors
    torch.testing.assert_close(labels, expected_labels.repeat(2), rtol=0, atol=0)
    assert metadata["store"] == "latents" and metadata["latent_dim"] == 4 and metadata["token_dtype"] == "float16"
    assert metadata["vocab_size"] == 64 and metadata["token_layout"] == [[4, 4]] and metadata["num_images"] == 32


def test_id_files_are_unchanged_and_files_that_predate_store_still_load(tokenizer_dir, tmp_path):
    path = pretokenize(_config(tokenizer_dir, tmp_path / "tokens.safetensors"))
    _, metadata = load_pretokenized(path)
    assert metadata["store"] == "ids" and metadata["latent_dim"] == 4 and set(load_file(path)) == {"tokens", "labels"}
    tensors = load_file(path)
    with safe_open(str(path), framework="pt") as file:
        old = {key: value for key, value in file.metadata().items() if key not in ("store", "latent_dim")}
    save_file(tensors, str(tmp_path / "old.safetensors"), metadata=old)  # as arvis wrote it before latents
    data, metadata = load_pretokenized(tmp_path / "old.safetensors")
    assert metadata["store"] == "ids" and metadata["latent_dim"] is None and metadata["vocab_size"] == 64
    assert torch.equal(data.tensors[0], tensors["tokens"].long()) and data.tensors[0].dtype == torch.int64
    tokenizer = Tokenizer.from_pretrained(tokenizer_dir)
    assert torch.equal(read_tokens(str(tmp_path / "old.safetensors"), tokenizer)[0].tensors[0], data.tensors[0])


def test_read_tokens_checks_the_kind_and_the_latent_dim(tokenizer_dir, tmp_path):
    path = str(pretokenize(_config(tokenizer_dir, tmp_path / "latents.safetensors", store="latents")))
    tokenizer = Tokenizer.from_pretrained(tokenizer_dir)
    data, num_classes = read_tokens(path, tokenizer, kind="latents")
    assert data.tensors[0].shape == (32, 16, 4) and num_classes == 10
    with pytest.raises(ValueError, match="holds token latents but token ids are needed here; .*store=ids"):
        read_tokens(path, tokenizer)
    wider = TOKENIZERS.build("vq-tiny", codebook_dim=8)
    with pytest.raises(ValueError, match=r"latents of dimension 4 .* the tokenizer has 8 .*pretokenize again"):
        read_tokens(path, wider, kind="latents")
    ids = str(pretokenize(_config(tokenizer_dir, tmp_path / "ids.safetensors")))
    with pytest.raises(ValueError, match="holds token ids but token latents are needed here; .*store=latents"):
        read_tokens(ids, tokenizer, kind="latents")
    with pytest.raises(ValueError, match="store must be 'ids'"):
        read_tokens(ids, tokenizer, kind="vectors")


def test_corrupt_and_mismatched_latent_files(tokenizer_dir, tmp_path):
    path = pretokenize(_config(tokenizer_dir, tmp_path / "latents.safetensors", store="latents"))
    tensors = load_file(path)
    with safe_open(str(path), framework="pt") as file:
        metadata = file.metadata()
    latents, labels = tensors["latents"], tensors["labels"]
    cases = {
        "no_latents": ({"tokens": latents[..., 0].long(), "labels": labels}, metadata,
                       r"lacks the tensor\(s\) \['latents'\]"),
        "narrow": ({"latents": latents[..., :3].clone(), "labels": labels}, metadata,
                   r"latents have shape \(32, 16, 3\), expected \(rows, 16, 4\)"),
        "flat": ({"latents": latents[..., 0].clone(), "labels": labels}, metadata, "expected \\(rows, 16, 4\\)"),
        "float64": ({"latents": latents.double(), "labels": labels}, metadata, "must be float16 or float32"),
        "integer": ({"latents": latents.long(), "labels": labels}, metadata, "must be float16 or float32"),
        "nan": ({"latents": torch.where(torch.arange(4) == 0, torch.nan, latents.float()), "labels": labels},
                metadata, "non-finite latents"),
        "no_dim": ({"latents": latents, "labels": labels}, {**metadata, "latent_dim": "none"}, "gives no latent_dim"),
        "bad_store": ({"latents": latents, "labels": labels}, {**metadata, "store": "codes"},
                      r"lacks the tensor\(s\) \['tokens'\]"),
        "bad_dim": ({"latents": latents, "labels": labels}, {**metadata, "latent_dim": "four"}, "malformed metadata"),
    }
    for name, (file_tensors, file_metadata, message) in cases.items():
        save_file(file_tensors, str(tmp_path / f"{name}.safetensors"), metadata=file_metadata)
        with pytest.raises(ValueError, match=message):
            load_pretokenized(tmp_path / f"{name}.safetensors")
    save_file({"tokens": latents[..., 0].long(), "latents": latents, "labels": labels},
              str(tmp_path / "odd_store.safetensors"), metadata={**metadata, "store": "codes"})
    with pytest.raises(ValueError, match="store must be 'ids' or 'latents', got 'codes'"):
        load_pretokenized(tmp_path / "odd_store.safetensors")
    save_file({"latents": latents.float(), "labels": labels}, str(tmp_path / "f32.safetensors"), metadata=metadata)
    assert torch.equal(load_pretokenized(tmp_path / "f32.safetensors")[0].tensors[0], latents.float())


def test_latents_need_a_tokenizer_with_latents_but_no_vocabulary(tokenizer_dir, tmp_path, monkeypatch):
    from arvis.tokenizers.vq import VQTokenizer

    with pytest.raises(ValueError, match="store must be 'ids'"):
        PretokenizeConfig(store="codes")
    monkeypatch.setattr(VQTokenizer, "vocab_size", property(lambda self: None))  # a continuous-only tokenizer
    path = pretokenize(_config(tokenizer_dir, tmp_path / "latents.safetensors", store="latents"))
    data, metadata = load_pretokenized(path)
    assert metadata["vocab_size"] is None and data.tensors[0].shape == (32, 16, 4)
    with pytest.raises(ValueError, match="has vocabulary size None; .*store=latents keeps token latents"):
        pretokenize(_config(tokenizer_dir, tmp_path / "ids.safetensors"))
    monkeypatch.setattr(VQTokenizer, "latent_dim", property(lambda self: None))
    with pytest.raises(ValueError, match="exposes no token latents; pretokenize its token ids with store=ids"):
        pretokenize(_config(tokenizer_dir, tmp_path / "none.safetensors", store="latents"))


def test_latents_out_of_float16_range_are_refused(tokenizer_dir, tmp_path):
    from arvis.tokenizers.vq import VQConfig

    big = TOKENIZERS.build("vq-tiny", codebook_l2_norm=False).eval()
    with torch.no_grad():
        big.quant_conv.bias.fill_(1e6)
    big.save_pretrained(tmp_path / "big")
    assert isinstance(big.config, VQConfig)
    with pytest.raises(ValueError, match="float16 cannot hold .*largest magnitude 1e\\+06"):
        pretokenize(_config(tmp_path / "big", tmp_path / "latents.safetensors", store="latents"))


def test_a_discrete_generator_refuses_a_latents_file_when_it_loads_the_data(tmp_path):
    from arvis.train.generator import GeneratorTrainConfig, train_generator
    from arvis.train.recipe import load_recipe

    tokenizer_dir = tmp_path / "tok"
    TOKENIZERS.build("vq-tiny").eval().save_pretrained(tokenizer_dir)
    latents = pretokenize(load_recipe(PretokenizeConfig, None, [
        f"tokenizer_path={tokenizer_dir}", "data.image_size=16", "data.num_samples=8", "store=latents",
        f"output={tmp_path / 'latents.safetensors'}"]))
    with pytest.raises(ValueError, match="holds token latents but token ids are needed here"):
        train_generator(load_recipe(GeneratorTrainConfig, None, [
            "generator=raster-tiny", "run.batch_size=8", "run.max_steps=2", "run.progress=false",
            f"tokens_path={latents}", f"tokenizer_path={tokenizer_dir}", f"run.output_dir={tmp_path / 'run'}"]))
    assert not (tmp_path / "run" / "pipeline").exists()
