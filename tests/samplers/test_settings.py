"""Samplers own their settings: one registry, per-sampler settings checked through the API, the CLI and
``pipeline.json``, and folders written before settings were per sampler still load."""

from __future__ import annotations

import dataclasses
import json
import typing

import pytest
import torch

import arvis
from arvis.cli import build_parser, main
from arvis.generators.base import GENERATORS
from arvis.pipeline import Pipeline
from arvis.posttrain.distilled_decoding import DistilledRaster, DistilledSettings
from arvis.registry import Registry
from arvis.samplers import (SAMPLERS, NextScaleSettings, NextTokenSettings, NextUnitSettings, Sampler,
                            SpeculativeJacobiSettings, sampler_for, settings_for)
from arvis.samplers.options import sampling_fields
from arvis.testing import randomize_parameters_
from arvis.tokenizers.base import TOKENIZERS


def _pipeline(sampler: str) -> Pipeline:
    """A tiny pipeline of each registered sampler (random weights)."""
    torch.manual_seed(0)
    if sampler in ("next-token", "distilled"):
        tokenizer = TOKENIZERS.build("vq-tiny").eval()
        generator = randomize_parameters_(GENERATORS.build("raster-tiny")).eval()
        if sampler == "next-token":
            return Pipeline(tokenizer, generator, NextTokenSettings(cfg_scale=2.0, top_k=8))
        distilled = DistilledRaster.from_teacher(generator, tokenizer, split=5)
        return Pipeline(tokenizer, distilled.eval(), DistilledSettings(distilled_steps=1))
    if sampler == "next-unit":
        tokenizer = TOKENIZERS.build("restok-tiny").eval()
        return Pipeline(tokenizer, GENERATORS.build("har-tiny").eval(), NextUnitSettings(cfg_scale=2.0,
                                                                                         cfg_schedule="step"))
    tokenizer = TOKENIZERS.build("var-vae-tiny").eval()
    generator = GENERATORS.build("var-tiny")
    generator.bind_tokenizer(tokenizer)
    return Pipeline(tokenizer, generator.eval(), NextScaleSettings(cfg_scale=2.5, cfg_schedule="linear"))


def _float_fields(settings_class) -> list[str]:
    hints = typing.get_type_hints(settings_class)
    return [field.name for field in dataclasses.fields(settings_class) if hints[field.name] is float]


def _foreign_setting(name: str) -> str:
    """A setting another sampler has but ``name`` does not."""
    own = {field.name for field in dataclasses.fields(SAMPLERS.get_class(name).config_class)}
    return sorted(set(sampling_fields()) - own)[0]


def test_every_generator_names_registered_samplers_and_every_sampler_its_own_settings():
    assert set(SAMPLERS.names()) >= {"next-token", "next-unit", "next-scale", "distilled"}
    settings_classes = [SAMPLERS.get_class(name).config_class for name in SAMPLERS.names()]
    assert len(set(settings_classes)) == len(settings_classes)
    for name in GENERATORS.presets():
        generator_class = GENERATORS.class_for_config(GENERATORS.preset(name))
        assert generator_class.samplers and all(s in SAMPLERS.names() for s in generator_class.samplers), name
    assert GENERATORS.get_class("VARGenerator").samplers == ("next-scale",)
    assert "more_smooth" not in {f.name for f in dataclasses.fields(NextUnitSettings)}


def test_the_registry_refuses_a_second_sampler_of_one_name_or_one_settings_class():
    registry = Registry("sampler", key="name")

    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Settings(NextTokenSettings):
        pass

    class First(Sampler):
        name, config_class = "first", Settings

    class Second(Sampler):
        name, config_class = "second", Settings

    class Nameless(Sampler):
        config_class = NextUnitSettings

    registry.register(First)
    with pytest.raises(ValueError, match="registered twice"):
        registry.register(type("Again", (Sampler,), {"name": "first", "config_class": NextScaleSettings}))
    with pytest.raises(ValueError, match="Second declares Settings, which First already declares"):
        registry.register(Second)
    with pytest.raises(TypeError, match="must declare its sampler name"):
        registry.register(Nameless)


@pytest.mark.parametrize("sampler", ["next-token", "next-unit", "next-scale", "distilled"])
def test_api_refuses_unknown_foreign_and_non_finite_settings(sampler):
    pipeline = _pipeline(sampler)
    assert pipeline.sampler_name == sampler
    with pytest.raises(ValueError, match=rf"\['temprature'\] is not a setting of the {sampler} sampler; its settings"):
        arvis.generate(pipeline, [0], temprature=0.5)
    foreign = _foreign_setting(sampler)
    with pytest.raises(ValueError, match=rf"\['{foreign}'\] is not a setting of the {sampler} sampler"):
        arvis.generate(pipeline, [0], **{foreign: 1})
    settings_class = SAMPLERS.get_class(sampler).config_class
    for name in _float_fields(settings_class):
        for value in (float("nan"), float("inf")):
            with pytest.raises(ValueError, match=rf"{settings_class.__name__}.{name}: expected a finite number"):
                arvis.generate(pipeline, [0], **{name: value})
    if sampler == "distilled":  # an integer setting with a range
        with pytest.raises(ValueError, match="distilled_steps must be 1 or 2"):
            arvis.generate(pipeline, [0], distilled_steps=3)
    with pytest.raises(ValueError, match=f"does not drive {type(pipeline.generator).__name__}"):
        arvis.generate(pipeline, [0], sampler="next-unit" if sampler != "next-unit" else "next-token")


@pytest.mark.parametrize("sampler", ["next-token", "next-unit", "next-scale", "distilled"])
def test_pipeline_json_settings_are_checked_against_the_stored_sampler(sampler, tmp_path):
    pipeline = _pipeline(sampler)
    path = pipeline.save_pretrained(tmp_path / "p")
    index = json.loads((path / "pipeline.json").read_text())
    assert index["sampler"] == {"name": sampler, "settings": pipeline.sampling.to_dict()}
    loaded = arvis.load(path)
    assert loaded.sampler_name == sampler and loaded.sampling == pipeline.sampling
    settings_class = SAMPLERS.get_class(sampler).config_class

    def rewritten(change) -> None:
        changed = json.loads(json.dumps(index))
        change(changed)
        (path / "pipeline.json").write_text(json.dumps(changed))

    rewritten(lambda changed: changed["sampler"]["settings"].update({_foreign_setting(sampler): 1}))
    with pytest.raises(ValueError, match=rf"unknown {settings_class.__name__} key\(s\)"):
        arvis.load(path)
    for name in _float_fields(settings_class):
        rewritten(lambda changed, name=name: changed["sampler"]["settings"].update({name: float("nan")}))
        with pytest.raises(ValueError, match=rf"{settings_class.__name__}.{name}: expected a finite number"):
            arvis.load(path)
    rewritten(lambda changed: changed["sampler"].update({"name": "next-scale" if sampler != "next-scale"
                                                         else "next-token"}))
    with pytest.raises(ValueError, match="sampler does not drive"):
        arvis.load(path)
    rewritten(lambda changed: changed.update({"sampler": {"name": sampler}}))
    with pytest.raises(ValueError, match=r"'sampler' entry must be an object"):
        arvis.load(path)


@pytest.mark.parametrize("sampler", ["next-token", "next-unit", "next-scale", "distilled"])
def test_cli_refuses_foreign_and_non_finite_settings(sampler, tmp_path, capsys):
    pipeline = _pipeline(sampler)
    pipeline.save_pretrained(tmp_path / "p")
    out = tmp_path / "g.png"
    foreign = _foreign_setting(sampler)
    annotation = sampling_fields()[foreign][0]
    flag = ["--" + foreign.replace("_", "-")] + ([] if annotation is bool else
                                                 [typing.get_args(annotation)[0]]
                                                 if typing.get_origin(annotation) is typing.Literal
                                                 else ["1"])
    assert main(["generate", str(tmp_path / "p"), "--labels", "0", *flag, "--out", str(out)]) == 2
    assert f"['{foreign}'] is not a setting of the {sampler} sampler" in capsys.readouterr().err
    for name in _float_fields(SAMPLERS.get_class(sampler).config_class):
        assert main(["generate", str(tmp_path / "p"), "--labels", "0", "--" + name.replace("_", "-"), "nan",
                     "--out", str(out)]) == 2
        assert "expected a finite number" in capsys.readouterr().err
    assert not out.exists()


def test_cli_flags_are_derived_from_every_sampler_field():
    args = build_parser().parse_args(["generate", "p", "--labels", "0", "--cfg-scale", "3.75", "--more-smooth",
                                      "--distilled-steps", "2", "--sampler", "next-token"])
    fields = sampling_fields()
    for name in SAMPLERS.names():
        for field in dataclasses.fields(SAMPLERS.get_class(name).config_class):
            assert name in fields[field.name][2]
            assert hasattr(args, field.name)
    assert args.cfg_scale == 3.75 and args.more_smooth is True and args.distilled_steps == 2
    assert args.sampler == "next-token" and args.top_k is None
    no_smooth = build_parser().parse_args(["sample", "p", "--num-samples", "1", "--out", "o", "--no-more-smooth"])
    assert no_smooth.more_smooth is False


def test_settings_merge_over_the_stored_ones_and_another_sampler_takes_the_shared_fields():
    pipeline = _pipeline("next-token")
    assert pipeline.settings(top_k=3) == NextTokenSettings(cfg_scale=2.0, top_k=3)
    assert pipeline.settings(top_k=None) == pipeline.sampling
    assert pipeline.settings("speculative-jacobi", draft_window=4) == SpeculativeJacobiSettings(
        cfg_scale=2.0, top_k=8, draft_window=4)
    generator = pipeline.generator
    assert settings_for(generator, values={"temperature": 0.5}) == NextTokenSettings(temperature=0.5)
    assert sampler_for(generator, cfg_scale=3.0).settings == NextTokenSettings(cfg_scale=3.0)
    with pytest.raises(ValueError, match="takes NextTokenSettings, got NextScaleSettings"):
        settings_for(generator, base=NextScaleSettings())


LEGACY_SAMPLING = {"temperature": 1.0, "top_k": 8, "top_p": 1.0, "cfg_scale": 2.0, "cfg_schedule": "constant",
                   "cfg_start": 0.25, "cfg_interval": -1, "more_smooth": False, "distilled_steps": 2}


@pytest.mark.parametrize("sampler", ["next-token", "next-unit", "next-scale", "distilled"])
def test_pipeline_json_with_one_sampling_dict_loads_for_the_default_sampler(sampler, tmp_path):
    """Pipelines saved before samplers had their own settings hold ``"sampling": {all nine fields}``."""
    path = _pipeline(sampler).save_pretrained(tmp_path / "p")
    index = json.loads((path / "pipeline.json").read_text())
    del index["sampler"]
    index["sampling"] = LEGACY_SAMPLING
    (path / "pipeline.json").write_text(json.dumps(index))
    loaded = arvis.load(path)
    settings_class = SAMPLERS.get_class(sampler).config_class
    fields = {field.name for field in dataclasses.fields(settings_class)}
    assert loaded.sampler_name == sampler
    assert loaded.sampling == settings_class(**{key: value for key, value in LEGACY_SAMPLING.items() if key in fields})
    index["sampling"] = {**LEGACY_SAMPLING, "guidance": 2.0}
    (path / "pipeline.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match=r"unknown sampling setting\(s\) \['guidance'\]"):
        arvis.load(path)
    index["sampling"] = {**LEGACY_SAMPLING, "top_p": float("nan")}
    (path / "pipeline.json").write_text(json.dumps(index))
    if "top_p" in fields:
        with pytest.raises(ValueError, match="top_p: expected a finite number"):
            arvis.load(path)


def test_a_sample_folder_of_the_one_sampling_dict_resumes(tiny_pipeline, tmp_path):
    from arvis.sample import PROTOCOL_FILE, sample_to_folder

    sample_to_folder(tiny_pipeline, tmp_path / "s", num_samples=2, batch_size=2)
    protocol = json.loads((tmp_path / "s" / PROTOCOL_FILE).read_text())
    assert protocol["sampler"] == "next-token"
    del protocol["sampler"]
    protocol["sampling"] = {**protocol["sampling"], "more_smooth": False, "distilled_steps": 1}
    (tmp_path / "s" / PROTOCOL_FILE).write_text(json.dumps(protocol))
    sample_to_folder(tiny_pipeline, tmp_path / "s", num_samples=2, batch_size=2)  # the same settings: resumes
    with pytest.raises(ValueError, match="differing keys"):
        sample_to_folder(tiny_pipeline, tmp_path / "s", num_samples=2, batch_size=2, top_k=3)


def test_settings_built_directly_are_checked_like_settings_read_from_a_file():
    for changes, message in (({"cfg_scale": float("nan")}, "cfg_scale: expected a finite number"),
                             ({"top_k": 2.5}, "top_k: expected an integer"),
                             ({"cfg_schedule": "bogus"}, r"cfg_schedule: expected one of \['constant'")):
        with pytest.raises(ValueError, match=message):
            NextTokenSettings(**changes)
    assert NextTokenSettings(cfg_scale=2).to_dict()["cfg_scale"] == 2.0
    with pytest.raises(ValueError, match="distilled_steps: expected an integer"):
        DistilledSettings(distilled_steps=1.0)


def test_unknown_names_are_refused_even_with_none_and_settings_are_not_a_sampler_name():
    pipeline = _pipeline("next-token")
    with pytest.raises(ValueError, match=r"\['cfg_scael'\] is not a setting"):
        arvis.generate(pipeline, [0], cfg_scael=None)
    with pytest.raises(ValueError, match="name must be a sampler's name"):
        sampler_for(pipeline.generator, NextTokenSettings())


def test_a_recipe_written_for_the_one_sampling_config_still_reads():
    from arvis.train.generator import GeneratorTrainConfig
    from arvis.train.recipe import load_recipe

    old = {"temperature": 1.0, "top_k": 0, "cfg_scale": 2.0, "more_smooth": False, "distilled_steps": 1}
    recipe = GeneratorTrainConfig(generator="raster-demo", sampling=old)
    assert recipe.sampler_settings() == NextTokenSettings(cfg_scale=2.0)
    with pytest.raises(ValueError, match=r"the recipe's sampling section: \['more_smooth'\] is not a setting of the "
                                         "next-token sampler"):
        load_recipe(GeneratorTrainConfig, None, ["sampling.more_smooth=true"])
    var = load_recipe(GeneratorTrainConfig, None, ["generator=var-demo", "sampling.more_smooth=true"])
    assert var.sampler_settings() == NextScaleSettings(more_smooth=True)
