"""The ``arvis`` command line: quickstart, presets, train, pretokenize, generate, caption, demo, sample, eval,
convert."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Sequence

from arvis.data.control import CONTROL_KINDS
from arvis.samplers.options import add_sampling_arguments, sampling_overrides
from arvis.train.recipe import USER_ERRORS, report_user_error


def _quickstart(args: argparse.Namespace) -> None:
    from arvis.quickstart import run_quickstart

    report = run_quickstart(args.output_dir, tokenizer_steps=args.tokenizer_steps,
                            generator_steps=args.generator_steps, overwrite=args.overwrite)
    print(f"pipeline:      {report['pipeline']}")
    print(f"sample grid:   {report['samples']}  (one row per class)")
    print(f"report:        {Path(report['pipeline']) / 'metrics.json'}  (and its model card, README.md)")
    print(f"training time: tokenizer {report['tokenizer_seconds']} s, generator {report['generator_seconds']} s")
    glyphs = report["glyph_metrics"]
    print(f"glyph metrics: fd-glyphs {glyphs['fd_glyphs']:.3f} (rendered glyphs score {glyphs['fd_glyphs_real_floor']:.3f}),"
          f" class accuracy {glyphs['glyph_accuracy']:.0%}  (built-in glyph classifier; not FID)")
    print(f"try:           python -c \"import arvis; arvis.generate('{report['pipeline']}', class_labels=[3], "
          "num_samples=4)[0].save('glyph.png')\"")
    print(f"or in a browser: arvis demo {report['pipeline']}")


def _presets(args: argparse.Namespace) -> None:
    import dataclasses
    import fnmatch

    from arvis.posttrain import METHODS
    from arvis.presets import registry_for
    from arvis.samplers import SAMPLERS

    for kind in ("tokenizer", "generator"):
        registry = registry_for(kind)
        print(f"{kind}s:")
        for name in registry.presets(args.pattern):
            print(f"  {name:<16} {registry.description(name)}")
    print("samplers (arvis.generate(..., sampler=NAME, **settings)):")
    for name in fnmatch.filter(SAMPLERS.names(), args.pattern):
        sampler = SAMPLERS.get_class(name)
        settings = ", ".join(field.name for field in dataclasses.fields(sampler.config_class))
        print(f"  {name:<16} {sampler.description} (settings: {settings})")
    print("post-training methods (arvis train posttrain --method NAME):")
    for name in fnmatch.filter(METHODS.names(), args.pattern):
        print(f"  {name:<16} {METHODS.get_class(name).description}")


def _train(args: argparse.Namespace) -> None:
    from arvis.train import generator, posttrain, tokenizer

    entry = {"tokenizer": tokenizer.main, "generator": generator.main, "posttrain": posttrain.main}[args.what]
    entry(args.arguments)


def _pretokenize(args: argparse.Namespace) -> None:
    from arvis.train import pretokenize

    pretokenize.main([*(["--config", args.config] if args.config else []), *args.overrides])


def _generate(args: argparse.Namespace) -> None:
    import numpy as np

    import arvis
    from arvis.api import to_uint8
    from arvis.visualize import clip_grid, image_grid, save_clip_frames, save_gif

    rows = args.labels if args.labels is not None else args.prompt
    pipeline = arvis.load(args.pipeline, revision=args.revision)
    images = arvis.generate(pipeline, class_labels=args.labels, prompts=args.prompt, control=_control(args, pipeline),
                            num_samples=args.num_samples, seed=args.seed, output_type="pt", progress=True,
                            **sampling_overrides(args))
    is_video = images.ndim == 5
    out = Path(args.out or ("samples.gif" if is_video else "samples.png"))
    if is_video:
        if out.suffix.lower() != ".gif":
            raise ValueError(f"this pipeline generates clips: --out must be a .gif file, got {out}")
        save_gif(clip_grid(images, len(rows), scale=args.scale), out, fps=args.fps)
    else:
        image_grid(images, len(rows), scale=args.scale).save(out)
    result = {"grid": str(out), "images": len(images),
              **({"labels": args.labels} if args.labels is not None else {"prompts": args.prompt})}
    if args.npy:
        np.save(args.npy, to_uint8(images))
        result["npy"] = str(args.npy)
    if args.frames:
        if not is_video:
            raise ValueError("--frames writes clips as frame folders; this pipeline generates images")
        for index, clip in enumerate(to_uint8(images)):
            save_clip_frames(clip, Path(args.frames) / f"sample_{index:05d}")
        result["frames"] = str(args.frames)
    print(json.dumps(result))


def _caption(args: argparse.Namespace) -> None:
    import torch

    import arvis
    from arvis.data.control import read_image_file

    images = torch.cat([read_image_file(path, "RGB") for path in args.images])
    captions = arvis.caption(args.pipeline, images, seed=args.seed, **sampling_overrides(args))
    print(json.dumps({"captions": dict(zip(args.images, captions, strict=True))}))


def _control(args: argparse.Namespace, pipeline):
    """The control map named by --control / --control-from (None without either), one for every grid row."""
    from arvis.data.control import control_from_file, control_from_image

    if args.control_kind is not None and args.control_from is None:
        raise ValueError("--control-kind says which map --control-from computes; give --control-from PHOTO too")
    if (args.control or args.control_from) and "control" not in pipeline.generator.condition_fields:
        raise ValueError("this pipeline takes no control map (it is not a ControlAR pipeline); drop --control and "
                         "--control-from")
    if args.control is not None:
        return control_from_file(args.control, pipeline.generator.control_shape[0])
    if args.control_from is None:
        return None
    trained_on = getattr(pipeline.generator.config, "control_kind", None)
    if args.control_kind is not None and trained_on is not None and args.control_kind != trained_on:
        raise ValueError(f"this pipeline was trained on {trained_on} maps; drop --control-kind or pass "
                         f"--control-kind {trained_on}")
    kind = args.control_kind or trained_on
    if kind is None:
        raise ValueError("this pipeline does not record which control maps it was trained on: name them with "
                         "--control-kind mask|edges")
    return control_from_image(args.control_from, kind)


def _demo(args: argparse.Namespace) -> None:
    from arvis.demo import DemoLimits, launch

    launch(args.pipeline, host=args.host, port=args.port, revision=args.revision, sampler=args.sampler,
           limits=DemoLimits(max_samples=args.max_samples, max_tokens=args.max_tokens, batch_size=args.batch_size))


def _sample(args: argparse.Namespace) -> None:
    import torch
    from accelerate import PartialState

    from arvis.sample import collect_npz, read_protocol, sample_to_folder

    if args.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was given but no CUDA device is visible; use --device cpu")
    # Under accelerate launch / torchrun each process gets its index, count and device (one GPU each);
    # CPU-only processes shard only when PartialState is told cpu=True.
    state = PartialState(cpu=args.device == "cpu" or not torch.cuda.is_available())
    device = state.device
    sampling = sampling_overrides(args)
    sample_to_folder(args.pipeline, args.out, num_samples=args.num_samples, seed=args.seed, labels=args.labels,
                     prompts=args.prompt, batch_size=args.batch_size, process_index=state.process_index,
                     num_processes=state.num_processes, progress=state.is_main_process, device=device, **sampling)
    state.wait_for_everyone()
    if state.is_main_process:
        npz = collect_npz(args.out)
        protocol = read_protocol(args.out)
        print(json.dumps({"output_dir": str(args.out), "npz": str(npz), "num_samples": protocol["num_samples"],
                          "num_processes": state.num_processes, "labels": protocol["labels"]["policy"],
                          "image_size": protocol["image_size"]}))


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (``--scale 0`` would draw an empty grid)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="arvis", description="Autoregressive visual generation.")
    commands = parser.add_subparsers(dest="command", required=True)

    quickstart = commands.add_parser("quickstart", help="train the demo pipeline on built-in data and sample a grid")
    quickstart.add_argument("--output-dir", default="arvis-quickstart")
    quickstart.add_argument("--tokenizer-steps", type=int, default=None, help="override the recipe's step count")
    quickstart.add_argument("--generator-steps", type=int, default=None, help="override the recipe's step count")
    quickstart.add_argument("--overwrite", action="store_true", help="replace the results of an earlier run")
    quickstart.set_defaults(handler=_quickstart)

    presets = commands.add_parser("presets", help="list registered presets, samplers and post-training methods")
    presets.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. 'llamagen-*'")
    presets.set_defaults(handler=_presets)

    train = commands.add_parser("train", help="run a training recipe (same as python -m arvis.train.<what>)")
    train.add_argument("what", choices=["tokenizer", "generator", "posttrain"])
    train.add_argument("arguments", nargs=argparse.REMAINDER,
                       help="passed on to the entry point: --config FILE and dotted key=value overrides "
                            "(posttrain also takes --method NAME --pipeline DIR)")
    train.set_defaults(handler=_train)

    pretokenize = commands.add_parser("pretokenize", help="encode a dataset once with a tokenizer into a safetensors "
                                      "file (same as python -m arvis.train.pretokenize)")
    # The entry point's own options, declared here: a leading REMAINDER positional would refuse "--config".
    pretokenize.add_argument("--config", help="YAML recipe; defaults are used when omitted")
    pretokenize.add_argument("overrides", nargs="*",
                             help="dotted overrides, e.g. tokenizer_path=DIR data.image_size=32")
    pretokenize.set_defaults(handler=_pretokenize)

    gen = commands.add_parser("generate", help="sample a grid from a pipeline folder, one row per class or prompt")
    gen.add_argument("pipeline", help="pipeline folder or Hugging Face Hub repo id (org/name)")
    gen.add_argument("--revision", default=None, help="Hub repo id only: the branch, tag or commit to load")
    rows = gen.add_mutually_exclusive_group(required=True)
    rows.add_argument("--labels", type=int, nargs="+", help="class ids, one grid row each")
    rows.add_argument("--prompt", action="append", help="a text prompt (repeat for more), one grid row each")
    control = gen.add_mutually_exclusive_group()
    control.add_argument("--control", default=None, help="ControlAR: a control map image (a mask or an edge map, white "
                         "= 1) at the tokenizer's image size, used for every row")
    control.add_argument("--control-from", default=None, help="ControlAR: a photo whose control map (--control-kind) "
                         "is computed by the operators the training data used")
    gen.add_argument("--control-kind", choices=sorted(CONTROL_KINDS), default=None,
                     help="the map --control-from computes (default: the kind the pipeline was trained on)")
    gen.add_argument("--num-samples", type=positive_int, default=8, help="images per class or prompt")
    gen.add_argument("--seed", type=int, default=0)
    add_sampling_arguments(gen, "default: the pipeline's setting")
    gen.add_argument("--scale", type=positive_int, default=3, help="pixel repetition factor of the grid (>= 1)")
    gen.add_argument("--out", default=None, help="grid file: samples.png, or samples.gif for video pipelines")
    gen.add_argument("--fps", type=positive_float, default=8.0, help="frames per second of a video grid")
    gen.add_argument("--npy", default=None, help="also save the samples as a uint8 .npy ((n, h, w, 3) or (n, t, h, w, 3))")
    gen.add_argument("--frames", default=None, help="video pipelines: also write each clip as a folder of PNG frames")
    gen.set_defaults(handler=_generate)

    caption = commands.add_parser("caption", help="caption images with an interleaved or Orthus pipeline")
    caption.add_argument("pipeline", help="pipeline folder")
    caption.add_argument("images", nargs="+", help="image files at the tokenizer's size")
    caption.add_argument("--seed", type=int, default=0)
    add_sampling_arguments(caption, "default: the pipeline's setting")
    caption.set_defaults(handler=_caption)

    demo = commands.add_parser("demo", help="serve a pipeline in the browser (gradio; pip install -e \".[demo]\")")
    demo.add_argument("pipeline", help="pipeline folder or Hugging Face Hub repo id (org/name)")
    demo.add_argument("--revision", default=None, help="Hub repo id only: the branch, tag or commit to load")
    demo.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback: this machine only)")
    demo.add_argument("--port", type=positive_int, default=None, help="port (default: gradio's, 7860 or the next free)")
    demo.add_argument("--sampler", default=None, help="another of the generator's samplers (default: the pipeline's)")
    demo.add_argument("--max-samples", type=positive_int, default=16, help="images per request at most")
    demo.add_argument("--max-tokens", type=positive_int, default=65536,
                      help="tokens per request at most (images x the generator's tokens per image)")
    demo.add_argument("--batch-size", type=positive_int, default=4, help="images per forward batch")
    demo.set_defaults(handler=_demo)

    sample = commands.add_parser("sample", help="sample an evaluation set into PNGs and an ADM-style .npz "
                                 "(resumable; shards over accelerate launch / torchrun processes)")
    sample.add_argument("pipeline", help="pipeline folder")
    sample.add_argument("--num-samples", type=int, required=True, help="images in the whole set")
    sample.add_argument("--out", required=True, help="sample folder (rerun with the same settings to resume)")
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--labels", type=int, nargs="+", default=None,
                        help="class ids cycled over the samples (default: all classes, balanced)")
    sample.add_argument("--prompt", action="append", default=None,
                        help="text-conditional pipelines: a prompt cycled over the samples (repeat for more)")
    sample.add_argument("--batch-size", type=int, default=64, help="images per forward batch and process")
    add_sampling_arguments(sample, "default: the pipeline's setting")
    sample.add_argument("--device", choices=["cpu", "cuda"], default=None,
                        help="default: this process's accelerate device")
    sample.set_defaults(handler=_sample)

    from arvis.convert.cli import add_convert_commands
    from arvis.eval.cli import add_eval_commands

    add_eval_commands(commands)
    add_convert_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.command_line = ["arvis", *argv]  # recorded with evaluation results
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        args.handler(args)
    except USER_ERRORS as error:
        return report_user_error(error)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
