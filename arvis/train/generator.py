"""Train a generator on a trained tokenizer's tokens, then save the whole pipeline.

``python -m arvis.train.generator --config configs/<recipe>.yaml tokenizer_path=DIR key=value ...``
(also under ``accelerate launch -m``). The images are encoded once with the frozen
tokenizer (in memory), the generator is trained with teacher forcing, and
``run.output_dir`` receives a pipeline folder (tokenizer + generator + sampling).

A text-conditional generator (``generator_config.condition=text``) trains on the glyph captions
(:mod:`arvis.data.captions`): a word-level text tokenizer over the caption vocabulary is built, saved in the
pipeline, and every caption padded to the generator's prompt length.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from pathlib import Path
from typing import Any, Sequence

from arvis.config import Config
from arvis.generators.base import GENERATORS, Generator
from arvis.generators.llama import PromptConfig
from arvis.pipeline import Pipeline, check_compatible
from arvis.pipeline_metadata import PipelineMetadata, TrainingStage, final_log
from arvis.samplers import SamplerSettings, settings_for
from arvis.samplers.base import without_legacy_defaults
from arvis.text import TextTokenizer
from arvis.tokenizers.base import Tokenizer
from arvis.train.loop import (ProgressLog, RunFolders, build_dataset, check_image_size, dataset_num_classes,
                              final_model, finish_run, fit, make_accelerator, prepare_training, step_batches)
from arvis.train.options import DataConfig, OptimConfig, RunConfig
from arvis.train.preview import save_preview
from arvis.train.recipe import run_as_script, run_entry_point
from arvis.train.tokens import ConditionedTokens, encode_dataset, read_tokens, with_conditions

__all__ = ["GeneratorTrainConfig", "build_generator", "encode_dataset", "main", "train_generator"]

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, kw_only=True)
class GeneratorTrainConfig(Config):
    """A generator training recipe.

    The generator's token layout, vocabulary and number of classes are taken from the
    tokenizer and the data; ``generator_config`` overrides other fields of the preset.
    ``sampler`` (None: the generator's default) with the settings ``sampling`` is stored in the saved pipeline
    as its default decoding policy; ``sampling`` is checked against that sampler's settings when the recipe is
    read.
    """

    tokenizer_path: str | None = None
    tokens_path: str | None = None  # a file from arvis.train.pretokenize; replaces encoding the data here
    generator: str = "raster-demo"
    generator_config: dict[str, Any] = dataclasses.field(default_factory=dict)
    data: DataConfig = DataConfig()
    optim: OptimConfig = OptimConfig(learning_rate=1e-4, weight_decay=0.05)
    sampler: str | None = None
    sampling: dict[str, Any] = dataclasses.field(default_factory=dict)
    run: RunConfig = RunConfig()
    encode_batch_size: int = 256

    def __post_init__(self) -> None:
        self.sampler_settings()  # a typo or a bad value in the sampling section fails before any work

    def sampler_settings(self) -> SamplerSettings:
        """The settings of the sampler the pipeline will store (``sampling`` over its defaults). A recipe written
        for the one sampling config of earlier versions (``more_smooth: false`` for a raster generator, ...)
        still reads: see :func:`arvis.samplers.base.without_legacy_defaults`."""
        generator_class = GENERATORS.class_for_config(GENERATORS.preset(self.generator))
        values = self.sampling if self.sampler is not None else without_legacy_defaults(generator_class, self.sampling)
        try:
            return settings_for(generator_class, self.sampler, values)
        except ValueError as error:
            raise ValueError(f"the recipe's sampling section: {error}") from None


def build_generator(config: GeneratorTrainConfig, tokenizer: Tokenizer, num_classes: int,
                    text_tokenizer: TextTokenizer | None = None) -> Generator:
    preset = GENERATORS.preset(config.generator)
    generator_class = GENERATORS.class_for_config(preset)
    fitted = generator_class.fit_config(preset, tokenizer=tokenizer, num_classes=num_classes)
    if config.generator_config:
        fitted = fitted.replace(**config.generator_config)
    if text_tokenizer is not None:
        asked = fitted.text_vocab_size
        if asked is None or ("text_vocab_size" in config.generator_config and asked != text_tokenizer.vocab_size):
            raise ValueError(f"text_vocab_size is {asked!r}, but training learns a prompt table over the caption "
                             f"tokenizer's {text_tokenizer.vocab_size} words (frozen-encoder features are not trained "
                             "here): use a preset with a word table (raster-t2i-demo) and leave text_vocab_size out")
        fitted = fitted.replace(text_vocab_size=text_tokenizer.vocab_size)
    generator = generator_class(fitted)
    generator.bind_tokenizer(tokenizer)
    return generator


def train_generator(config: GeneratorTrainConfig) -> tuple[Path, list[dict[str, float]]]:
    """Runs the recipe; returns the exported pipeline folder (``run.output_dir/pipeline``) and the log."""
    if config.tokenizer_path is None:
        raise ValueError("tokenizer_path is required: pass tokenizer_path=DIR (a folder saved by the tokenizer trainer)")
    run = config.run
    sampling = config.sampler_settings()  # the previews' and the pipeline's
    folders = RunFolders(run, "pipeline")
    accelerator = make_accelerator(run, folders)
    tokenizer = Tokenizer.from_pretrained(config.tokenizer_path, device=accelerator.device)
    preset = GENERATORS.preset(config.generator)
    text = reads_prompts(preset.replace(**config.generator_config))
    if text and (config.tokens_path is not None or config.data.name != "glyphs" or config.data.random_flip):
        raise ValueError("text-conditional training encodes the glyph data with their captions here: use "
                         "data.name=glyphs, data.random_flip=false (a mirror would swap the caption's left and "
                         "right) and no tokens_path")
    text_tokenizer = caption_tokenizer() if text else None
    if config.tokens_path is not None:
        token_data, num_classes = read_tokens(config.tokens_path, tokenizer, kind="ids")  # a latents file fails here
    else:
        check_image_size(tokenizer, config.data)
        dataset = build_dataset(config.data.replace(random_flip=False, crop="center"))
        num_classes = dataset_num_classes(dataset)
    generator = build_generator(config, tokenizer, num_classes, text_tokenizer)
    check_compatible(tokenizer, generator)  # before any training time is spent
    if generator.token_spec.vocab_size is None:
        raise ValueError(f"{config.generator} models continuous latents, which this trainer does not encode: build "
                         "it from a trained discrete pipeline with `arvis train posttrain --method orthus`")
    if config.tokens_path is None:
        logger.info("encoding %d images with the tokenizer%s", len(dataset),
                    " (and their mirrors)" if config.data.random_flip else "")
        token_data = encode_dataset(tokenizer, dataset, config.encode_batch_size, accelerator.device,
                                    with_mirrors=config.data.random_flip)
    token_data = with_conditions(token_data, generator, text_tokenizer, dataset if text else None)
    logger.info("training %s (%.2fM parameters) on %d token sequences of length %d", config.generator,
                generator.num_parameters() / 1e6, len(token_data), generator.layout.length)
    training = prepare_training(accelerator, generator, config.optim, run, folders)
    model, ema = training.model, training.ema
    batches = step_batches(token_data, run, accelerator, training.start * run.gradient_accumulation_steps)
    progress = ProgressLog(accelerator, run, "generator", training.start, recipe=config)

    def teacher_forcing_loss(model, batch):
        output = model(*ConditionedTokens.split(batch))
        return output.loss, output.metrics

    def preview(step: int) -> None:
        if run.preview_every and step % run.preview_every == 0 and accelerator.is_main_process:
            unwrapped = accelerator.unwrap_model(model)
            with ema.applied(unwrapped) if ema is not None else contextlib.nullcontext():
                grid = save_preview(tokenizer, unwrapped, sampling, folders.root / "previews" / f"step-{step}.png",
                                    text_tokenizer=text_tokenizer, prompts=preview_prompts)
            progress.log_image("preview", grid, step)

    preview_prompts = [dataset.caption(index) for index in range(min(10, len(dataset)))] if text else None
    fit(accelerator, training, batches, teacher_forcing_loss, run=run, grad_clip=config.optim.grad_clip,
        folders=folders, progress=progress, kind="generator", after_step=preview)
    trained = final_model(accelerator, model, ema)
    metadata = PipelineMetadata(
        class_names=dataset_class_names(dataset if config.tokens_path is None else None, trained),
        training=(TrainingStage("arvis train generator", config.to_dict()),), metrics=final_log(progress.history))
    output_dir = finish_run(accelerator, progress, folders.export,
                            lambda path: Pipeline(tokenizer.eval(), trained, sampling, text_tokenizer=text_tokenizer,
                                                  metadata=metadata).save_pretrained(path))
    return output_dir, progress.history


def dataset_class_names(dataset, generator: Generator) -> tuple[str, ...] | None:
    """The dataset's class names when the generator takes its class ids (None for a tokens file, which keeps no
    names, or a generator of prompts)."""
    names = getattr(dataset, "class_names", None)
    if not names or "labels" not in generator.condition_fields or len(names) != generator.num_classes:
        return None
    return tuple(names)


def reads_prompts(config: Config) -> bool:
    """Whether a generator config conditions on text prompts (a :class:`PromptConfig` whose ``condition``, where
    it has one, is "text")."""
    return isinstance(config, PromptConfig) and getattr(config, "condition", "text") == "text"


def caption_tokenizer() -> TextTokenizer:
    """The word-level tokenizer over the glyph caption vocabulary."""
    from arvis.data.captions import caption_vocabulary

    return TextTokenizer.word_level(caption_vocabulary())


def main(argv: Sequence[str] | None = None) -> None:
    run_entry_point(GeneratorTrainConfig, train_generator, "Train an arvis generator and save a pipeline.", argv)


if __name__ == "__main__":
    run_as_script(main)
