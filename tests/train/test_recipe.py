from pathlib import Path

import pytest

from arvis.posttrain import METHODS
from arvis.quickstart import QUICKSTART_GENERATOR, QUICKSTART_TOKENIZER
from arvis.train.generator import GeneratorTrainConfig
from arvis.train.posttrain import PostTrainConfig
from arvis.train.recipe import apply_overrides, load_recipe
from arvis.train.tokenizer import TokenizerTrainConfig

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_overrides_are_typed_and_nested():
    config = load_recipe(TokenizerTrainConfig, None, [
        "optim.learning_rate=3e-4", "run.max_steps=7", "tokenizer_config.codebook_size=32", "optim.betas=[0.5,0.9]",
    ])
    assert config.optim.learning_rate == 3e-4 and isinstance(config.optim.learning_rate, float)
    assert config.run.max_steps == 7 and config.optim.betas == (0.5, 0.9)
    assert config.tokenizer_config == {"codebook_size": 32}


@pytest.mark.parametrize("override, message", [
    ("optim.learning_rat=1", "unknown OptimConfig key.*learning_rat"),
    ("run.max_steps=many", "max_steps"),
    ("run=3", "run"),
    ("no_equals_sign", "key=value"),
])
def test_bad_overrides_are_errors(override, message):
    with pytest.raises(ValueError, match=message):
        load_recipe(TokenizerTrainConfig, None, [override])


def test_overrides_do_not_mutate_the_input():
    tree = {"run": {"max_steps": 1}}
    assert apply_overrides(tree, ["run.max_steps=2"]) == {"run": {"max_steps": 2}}
    assert tree == {"run": {"max_steps": 1}}


def test_quickstart_recipe_files_equal_the_built_in_quickstart():
    assert load_recipe(TokenizerTrainConfig, CONFIGS / "quickstart_tokenizer.yaml") == QUICKSTART_TOKENIZER
    assert load_recipe(GeneratorTrainConfig, CONFIGS / "quickstart_generator.yaml") == QUICKSTART_GENERATOR


def test_every_recipe_in_configs_loads():
    recipes = sorted(CONFIGS.glob("*.yaml"))
    assert recipes
    for path in recipes:
        kind = path.stem.rsplit("_", 1)[-1]
        assert kind in ("tokenizer", "generator", "posttrain"), f"{path.name}: name recipes *_tokenizer/_generator/_posttrain"
        config_class = {"tokenizer": TokenizerTrainConfig, "generator": GeneratorTrainConfig,
                        "posttrain": PostTrainConfig}[kind]
        recipe = load_recipe(config_class, path)
        if kind == "posttrain":  # the method's own section is checked by the method's config class
            METHODS.get_class(recipe.method).config_class.from_dict(recipe.method_config)


def test_missing_recipe_file():
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        load_recipe(TokenizerTrainConfig, "nope.yaml")


def test_non_finite_override_values_are_refused():
    with pytest.raises(ValueError, match="OptimConfig.learning_rate: expected a finite number"):
        load_recipe(TokenizerTrainConfig, None, ["optim.learning_rate=.nan"])
    with pytest.raises(ValueError, match="NextTokenSettings.cfg_scale: expected a finite number"):
        load_recipe(GeneratorTrainConfig, None, ["sampling.cfg_scale=.inf"])


def test_yaml_syntax_errors_are_one_line_naming_the_place(tmp_path):
    recipe = tmp_path / "broken.yaml"
    recipe.write_text("run:\n  max_steps: [1, 2\n")
    with pytest.raises(ValueError, match=r"^recipe .*broken.yaml is not valid YAML at line \d+, column \d+: ") as error:
        load_recipe(TokenizerTrainConfig, recipe)
    assert "\n" not in str(error.value)
    with pytest.raises(ValueError, match=r"^the value of override 'run.max_steps=\[1' is not valid YAML"):
        load_recipe(TokenizerTrainConfig, None, ["run.max_steps=[1"])


def test_module_entry_points_report_config_errors_in_one_line(tmp_path):
    import subprocess
    import sys

    for module in ("arvis.train.tokenizer", "arvis.train.generator", "arvis.train.pretokenize",
                   "arvis.train.posttrain"):
        result = subprocess.run([sys.executable, "-m", module, "no_such_key=1"], capture_output=True, text=True,
                                cwd=tmp_path)
        assert result.returncode == 2, (module, result.stderr)
        assert result.stderr.strip().splitlines()[-1].startswith("arvis: error: unknown "), (module, result.stderr)
        assert "Traceback" not in result.stderr, module


def test_paper_recipes_use_the_upstream_settings():
    from arvis.tokenizers.base import TOKENIZERS

    vq16 = load_recipe(TokenizerTrainConfig, CONFIGS / "llamagen_vq16_tokenizer.yaml")
    assert vq16.data.crop == "random" and vq16.data.random_flip and vq16.loss.lpips_dropout
    larp = load_recipe(TokenizerTrainConfig, CONFIGS / "larp_l_tokenizer.yaml")
    assert larp.data.random_flip and larp.loss.video_disc.sincos_layout == "additive"
    assert larp.disc_optim.schedule == larp.optim.schedule == "cosine"
    assert larp.disc_optim.warmup_steps * larp.loss.disc_every == larp.optim.warmup_steps
    assert larp.disc_optim.min_lr_ratio == larp.optim.min_lr_ratio
    larp_l = TOKENIZERS.preset(larp.tokenizer)
    assert larp_l.prior_lr_multiplier == 1.0 and larp_l.sincos_layout == "additive"
    restok = TOKENIZERS.preset("restok-l-128")
    assert restok.nested_dropout_prob == 0.2 and 128 not in restok.nested_dropout_counts
    assert (restok.weight_init, restok.ln_pre, restok.norm_eps, restok.merge_embed_after_block, restok.key_bias) == \
        ("trunc_normal", True, 1e-5, True, False)
