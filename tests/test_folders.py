"""Saving folders: atomic replacement, and never deleting what arvis did not write."""

import json

import pytest

from arvis.folders import MANIFEST_FILE, replace_folder
from arvis.generators.base import GENERATORS, Generator


def test_interrupted_save_leaves_the_previous_folder_intact(tmp_path):
    model = GENERATORS.build("raster-tiny")
    model.save_pretrained(tmp_path / "g")
    before = {p.name: p.read_bytes() for p in (tmp_path / "g").iterdir()}
    with pytest.raises(RuntimeError, match="disk full"):
        with replace_folder(tmp_path / "g", "generator") as staging:
            (staging / "config.json").write_text("{}")
            raise RuntimeError("disk full")
    assert {p.name: p.read_bytes() for p in (tmp_path / "g").iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g"]  # no staging folder left behind


def test_resaving_replaces_every_file_the_earlier_save_wrote(tmp_path):
    with replace_folder(tmp_path / "f", "test") as staging:
        (staging / "a.txt").write_text("1")
        (staging / "sub").mkdir()
        (staging / "sub" / "b.txt").write_text("2")
    assert json.loads((tmp_path / "f" / MANIFEST_FILE).read_text())["files"] == ["a.txt", "sub/b.txt"]
    with replace_folder(tmp_path / "f", "test") as staging:
        (staging / "a.txt").write_text("3")
    assert sorted(p.relative_to(tmp_path / "f").as_posix() for p in (tmp_path / "f").rglob("*")) == \
        [MANIFEST_FILE, "a.txt"]
    second = GENERATORS.build("raster-tiny", num_layers=1)
    GENERATORS.build("raster-tiny").save_pretrained(tmp_path / "g")
    second.save_pretrained(tmp_path / "g")
    assert Generator.from_pretrained(tmp_path / "g").config.num_layers == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f", "g"]


def test_a_file_put_into_an_arvis_save_is_never_deleted(tmp_path):
    model = GENERATORS.build("raster-tiny")
    model.save_pretrained(tmp_path / "g")
    (tmp_path / "g" / "notes.txt").write_text("precious")
    with pytest.raises(ValueError, match="refusing to replace .*g: .*also holds files arvis did not write: notes.txt"):
        model.save_pretrained(tmp_path / "g")
    assert (tmp_path / "g" / "notes.txt").read_text() == "precious"


def test_a_folder_of_other_files_is_never_replaced(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("precious")
    with pytest.raises(ValueError, match="refusing to replace .*mine.*not a folder arvis saved"):
        GENERATORS.build("raster-tiny").save_pretrained(tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "precious"
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        GENERATORS.build("raster-tiny").save_pretrained(tmp_path / "afile")


def test_a_huggingface_folder_with_a_config_json_is_not_taken_for_an_arvis_save(tmp_path):
    folder = tmp_path / "hf-tokenizer"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "t5", "vocab_size": 100}))
    (folder / "vocab.txt").write_text("a\nb\n")
    with pytest.raises(ValueError, match="not a folder arvis saved"):
        GENERATORS.build("raster-tiny").save_pretrained(folder)
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "vocab.txt"]


def test_saves_from_before_manifests_are_recognised_by_their_header(tmp_path):
    model = GENERATORS.build("raster-tiny")
    model.save_pretrained(tmp_path / "g")
    (tmp_path / "g" / MANIFEST_FILE).unlink()  # what arvis 0.1 wrote: config.json (arvis header) + weights
    model.save_pretrained(tmp_path / "g")
    assert (tmp_path / "g" / MANIFEST_FILE).is_file()
    (tmp_path / "g" / MANIFEST_FILE).unlink()
    (tmp_path / "g" / "notes.txt").write_text("precious")
    with pytest.raises(ValueError, match="also holds files arvis did not write: notes.txt"):
        model.save_pretrained(tmp_path / "g")


def test_an_arvis_folder_of_another_kind_is_not_replaced(tiny_pipeline, tmp_path):
    tiny_pipeline.tokenizer.save_pretrained(tmp_path / "tokenizer")
    with pytest.raises(ValueError, match="is an arvis tokenizer folder, not a pipeline folder"):
        tiny_pipeline.save_pretrained(tmp_path / "tokenizer")
    with pytest.raises(ValueError, match="is an arvis tokenizer folder, not a generator folder"):
        tiny_pipeline.generator.save_pretrained(tmp_path / "tokenizer")
    assert (tmp_path / "tokenizer" / "config.json").is_file()
    (tmp_path / "tokenizer" / MANIFEST_FILE).unlink()  # a tokenizer saved by arvis 0.1: its header says so
    with pytest.raises(ValueError, match="not a folder arvis saved"):
        tiny_pipeline.generator.save_pretrained(tmp_path / "tokenizer")
