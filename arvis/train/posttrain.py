"""Post-train a saved pipeline with a registered method, then save the new pipeline.

``accelerate launch -m arvis.train.posttrain --method <name> --pipeline DIR [--config FILE] [key=value ...]``
(also ``python -m``). ``method_config.<field>=value`` sets the method's own settings (for
``distilled_decoding`` see :class:`arvis.posttrain.distilled_decoding.method.DistilledDecodingConfig`);
``optim.*`` and ``run.*`` are the shared loop's. The result is ``run.output_dir/pipeline``. The input
pipeline is only read.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path
from typing import Any, Sequence

from arvis.config import Config
from arvis.pipeline import Pipeline
from arvis.pipeline_metadata import TrainingStage, final_log
from arvis.posttrain import METHODS, TrainingContext
from arvis.train.loop import (ProgressLog, RunFolders, final_model, finish_run, fit, make_accelerator,
                              prepare_training, step_batches)
from arvis.train.options import OptimConfig, RunConfig
from arvis.train.recipe import load_recipe, run_as_script

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, kw_only=True)
class PostTrainConfig(Config):
    """A post-training recipe: the method, the pipeline it starts from, its settings and the loop's."""

    method: str | None = None
    pipeline: str | None = None
    method_config: dict[str, Any] = dataclasses.field(default_factory=dict)
    optim: OptimConfig = OptimConfig(learning_rate=1e-4, weight_decay=0.0)
    run: RunConfig = RunConfig()


def post_train(config: PostTrainConfig) -> tuple[Path, list[dict[str, float]]]:
    """Runs the recipe; returns the exported pipeline folder (``run.output_dir/pipeline``) and the log."""
    if config.method is None:
        raise ValueError(f"name the method with --method (known: {METHODS.names()})")
    if config.pipeline is None:
        raise ValueError("name the trained pipeline to start from with --pipeline DIR")
    method_class = METHODS.get_class(config.method)
    method_config = method_class.config_class.from_dict(config.method_config)
    run = config.run
    folders = RunFolders(run, "pipeline")
    if Path(config.pipeline).resolve() == folders.export.resolve():
        raise ValueError(f"run.output_dir would write the result over the input pipeline {config.pipeline}; "
                         "choose another run.output_dir")
    accelerator = make_accelerator(run, folders)
    pipeline = Pipeline.from_pretrained(config.pipeline, device=accelerator.device)
    method = method_class(method_config, pipeline, pipeline_path=str(config.pipeline), output_dir=folders.root)
    method.setup(accelerator)
    data = method.prepare_data(accelerator)
    module = method.build_model()
    logger.info("%s: training %s (%.2fM parameters) on %d examples", config.method, type(module).__name__,
                sum(p.numel() for p in module.parameters()) / 1e6, len(data))
    training = prepare_training(accelerator, module, config.optim, run, folders)
    batches = step_batches(data, run, accelerator, training.start * run.gradient_accumulation_steps)
    progress = ProgressLog(accelerator, run, config.method, training.start, recipe=config)
    context = TrainingContext(model=training.model, unwrapped=accelerator.unwrap_model(training.model),
                              device=accelerator.device)
    fit(accelerator, training, batches, lambda model, batch: method.loss(context, batch), run=run,
        grad_clip=config.optim.grad_clip, folders=folders, progress=progress, kind=f"posttrain:{config.method}",
        before_step=method.before_step)
    trained = final_model(accelerator, training.model, training.ema)
    stage = TrainingStage(f"arvis train posttrain --method {config.method}", config.to_dict())
    output_dir = finish_run(accelerator, progress, folders.export,
                            lambda path: exported(method.export(trained), pipeline, stage, progress.history)
                            .save_pretrained(path))
    return output_dir, progress.history


def exported(result: Pipeline, source: Pipeline, stage: TrainingStage, history) -> Pipeline:
    """The post-trained pipeline with its metadata: the source's class names (when its generator still takes those
    classes), the source's training stages followed by this one, and this run's final log as its metrics (the
    source's metrics describe another model)."""
    names = source.metadata.class_names
    keeps_classes = names is not None and "labels" in result.generator.condition_fields \
        and result.generator.num_classes == len(names)
    return result.with_metadata(class_names=names if keeps_classes else None,
                                training=(*source.metadata.training, stage), metrics=final_log(history))


def main(argv: Sequence[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(description="Post-train an arvis pipeline and save the new pipeline.")
    parser.add_argument("--method", help=f"the post-training method: {', '.join(METHODS.names())}")
    parser.add_argument("--pipeline", help="the trained pipeline folder to start from")
    parser.add_argument("--config", help="YAML recipe (see configs/); defaults are used when omitted")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. method_config.num_pairs=5000")
    args = parser.parse_intermixed_args(argv)
    overrides = list(args.overrides)
    overrides += [f"{name}={value}" for name, value in (("method", args.method), ("pipeline", args.pipeline))
                  if value is not None]
    post_train(load_recipe(PostTrainConfig, args.config, overrides))


if __name__ == "__main__":
    run_as_script(main)
