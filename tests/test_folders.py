import pytest

from arvis.folders import replace_folder
from arvis.generators.base import GENERATORS, Generator


def test_interrupted_save_leaves_the_previous_folder_intact(tmp_path):
    model = GENERATORS.build("raster-tiny")
    model.save_pretrained(tmp_path / "g")
    before = {p.name: p.read_bytes() for p in (tmp_path / "g").iterdir()}
    with pytest.raises(RuntimeError, match="disk full"):
        with replace_folder(tmp_path / "g", "config.json") as staging:
            (staging / "config.json").write_text("{}")
            raise RuntimeError("disk full")
    assert {p.name: p.read_bytes() for p in (tmp_path / "g").iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g"]  # no staging folder left behind


def test_resaving_replaces_the_whole_folder(tmp_path):
    first = GENERATORS.build("raster-tiny")
    first.save_pretrained(tmp_path / "g")
    (tmp_path / "g" / "stale.txt").write_text("old")
    second = GENERATORS.build("raster-tiny", num_layers=1)
    second.save_pretrained(tmp_path / "g")
    assert not (tmp_path / "g" / "stale.txt").exists()
    assert Generator.from_pretrained(tmp_path / "g").config.num_layers == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g"]


def test_a_folder_of_other_files_is_never_replaced(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("precious")
    with pytest.raises(ValueError, match="refusing to replace .*mine.*not an arvis save"):
        GENERATORS.build("raster-tiny").save_pretrained(tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "precious"
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        GENERATORS.build("raster-tiny").save_pretrained(tmp_path / "afile")
