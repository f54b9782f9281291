import dataclasses
import json

import pytest

from arvis.config import Config, read_json
from arvis.generators.raster import RasterConfig
from arvis.samplers import NextTokenSettings


@dataclasses.dataclass(frozen=True, kw_only=True)
class Inner(Config):
    size: int = 2
    ratio: float = 0.5


@dataclasses.dataclass(frozen=True, kw_only=True)
class Outer(Config):
    name: str = "x"
    grid: tuple[int, int] = (1, 2)
    optional: int | None = None
    inner: Inner = Inner()


def test_round_trip_through_json(tmp_path):
    config = Outer(name="y", grid=(3, 4), optional=5, inner=Inner(size=7, ratio=0.25))
    config.to_json(tmp_path / "c.json")
    assert Outer.from_json(tmp_path / "c.json") == config
    assert json.loads((tmp_path / "c.json").read_text())["grid"] == [3, 4]


def test_unknown_key_is_an_error_naming_it():
    with pytest.raises(ValueError, match="unknown Outer key.*'colour'"):
        Outer.from_dict({"colour": "red"})
    with pytest.raises(ValueError, match="unknown Inner key.*'depth'"):
        Outer.from_dict({"inner": {"depth": 3}})


@pytest.mark.parametrize("data, where", [
    ({"grid": [1]}, "grid"), ({"grid": [1, "a"]}, "grid"), ({"optional": 1.5}, "optional"),
    ({"inner": {"size": True}}, "size"), ({"name": 3}, "name"),
])
def test_wrong_types_are_errors(data, where):
    with pytest.raises(ValueError, match=where):
        Outer.from_dict(data)


def test_int_is_accepted_for_float_and_replace_is_checked():
    assert Inner.from_dict({"ratio": 1}).ratio == 1.0
    with pytest.raises(ValueError, match="size"):
        Inner().replace(size="big")


def test_component_configs_validate_values():
    with pytest.raises(ValueError, match="divisible by num_heads"):
        RasterConfig(dim=30, num_heads=4)
    with pytest.raises(ValueError, match="top_p"):
        NextTokenSettings(top_p=0.0)


def test_corrupt_json_names_the_file(tmp_path):
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="bad.json"):
        read_json(tmp_path / "bad.json")
    with pytest.raises(FileNotFoundError, match="absent.json"):
        read_json(tmp_path / "absent.json")


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_floats_are_refused_wherever_configs_are_made(value):
    with pytest.raises(ValueError, match=r"Inner.ratio: expected a finite number"):
        Inner.from_dict({"ratio": value})
    with pytest.raises(ValueError, match=r"NextTokenSettings.cfg_scale: expected a finite number"):
        NextTokenSettings().replace(cfg_scale=value)
    with pytest.raises(ValueError, match=r"NextTokenSettings.temperature: expected a finite number"):
        NextTokenSettings.from_dict({"temperature": value})


@dataclasses.dataclass(frozen=True, kw_only=True)
class Grown(Config):
    """A config that gained ``new_way`` after files were saved without it."""

    saved_defaults = {"new_way": False}

    size: int = 1
    new_way: bool = True


@dataclasses.dataclass(frozen=True, kw_only=True)
class Holder(Config):
    inner: Grown = Grown()


def test_saved_configs_missing_a_later_field_keep_the_old_behaviour(tmp_path):
    assert Grown().new_way and Grown.from_dict({"size": 2}).new_way  # new configs: the new default
    assert not Grown.from_saved({"size": 2}).new_way  # a file without the key: what its writer did
    assert Grown.from_saved({"size": 2, "new_way": True}).new_way
    assert not Holder.from_saved({"inner": {"size": 3}}).inner.new_way  # nested configs too
    assert Holder.from_dict({"inner": {"size": 3}}).inner.new_way
    (tmp_path / "old.json").write_text(json.dumps({"size": 4}))
    assert not Grown.from_json(tmp_path / "old.json").new_way
    assert "saved_defaults" not in Grown().to_dict()
