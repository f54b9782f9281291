"""``arvis eval fid|isc|kid|prc|fvd|fd-builtin|reference-stats``: one command per number, with its protocol.

Every command prints the result as JSON (metrics plus protocol plus environment) and writes
it to ``--json FILE`` when given. ``--fake`` may also be a pipeline folder, sampled on the
fly with ``--num-samples``, ``--sample-seed``, ``--labels`` and the sampling options; the
sampling protocol is then part of the result.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from arvis.samplers.options import add_sampling_arguments, sampling_overrides

IMAGE_METRICS = ("fid", "isc", "kid", "prc")
DEFAULT_CACHE = Path(os.environ.get("ARVIS_CACHE_DIR", Path.home() / ".cache" / "arvis")) / "eval-features"
GLYPHS = "glyphs"  # --real value for fd-builtin: freshly rendered built-in glyphs


def add_eval_commands(commands: argparse._SubParsersAction) -> None:
    """Adds ``eval`` with its sub-commands to the ``arvis`` parser."""
    evaluate = commands.add_parser("eval", help="evaluate samples: FID, IS, KID, precision/recall, FVD, fd-glyphs")
    metrics = evaluate.add_subparsers(dest="metric", required=True)
    names = {"fid": "Fréchet Inception Distance", "isc": "Inception Score", "kid": "Kernel Inception Distance",
             "prc": "precision / recall on Inception features"}
    for metric, title in names.items():
        parser = metrics.add_parser(metric, help=f"{title} (torch-fidelity)")
        _add_image_options(parser, needs_real=metric != "isc")
        parser.set_defaults(handler=_image_metric)
    builtin = metrics.add_parser("fd-builtin", help="fd-glyphs and glyph accuracy with the built-in glyph classifier "
                                 "(offline; not FID)")
    _add_source_options(builtin, needs_real=False)
    builtin.add_argument("--num-real", type=int, default=1000, help="rendered reference glyphs when --real is glyphs")
    builtin.add_argument("--real-seed", type=int, default=777, help="rendering seed of the reference glyphs")
    builtin.set_defaults(handler=_fd_builtin, real=GLYPHS)
    fvd = metrics.add_parser("fvd", help="Fréchet Video Distance with a local I3D TorchScript detector")
    fvd.add_argument("--real", required=True, help="frame-folder folder, .npy/.npz videos, or FVD statistics .npz")
    fvd.add_argument("--fake", required=True, help="frame-folder folder or .npy/.npz videos (n, t, h, w, 3) uint8")
    fvd.add_argument("--detector", default=None, help="i3d_torchscript.pt (default: $ARVIS_I3D_PATH)")
    _add_fvd_protocol(fvd)
    fvd.add_argument("--json", default=None, help="also write the result to this file")
    fvd.set_defaults(handler=_fvd)
    stats = metrics.add_parser("reference-stats", help="precompute reference statistics (FID or FVD) into an .npz")
    stats.add_argument("kind", choices=["fid", "fvd"])
    stats.add_argument("--real", required=True, help="images (fid) or videos (fvd)")
    stats.add_argument("--out", required=True, help="the .npz to write")
    stats.add_argument("--weights", default=None, help="fid: Inception weights file")
    stats.add_argument("--detector", default=None, help="fvd: i3d_torchscript.pt")
    stats.add_argument("--device", default=None)
    _add_fvd_protocol(stats)
    stats.set_defaults(handler=_reference_stats, batch_size=None)


def _add_source_options(parser: argparse.ArgumentParser, *, needs_real: bool) -> None:
    parser.add_argument("--fake", required=True, help="image folder, .npz (arr_0 NHWC uint8) or pipeline folder")
    parser.add_argument("--real", required=needs_real, default=None,
                        help="image folder or .npz" + (" (for fid also reference statistics mu/sigma)"
                                                       if needs_real else ""))
    parser.add_argument("--num-samples", type=int, default=None, help="images to sample when --fake is a pipeline")
    parser.add_argument("--sample-seed", type=int, default=0, help="sampling seed when --fake is a pipeline")
    parser.add_argument("--labels", type=int, nargs="+", default=None, help="class ids cycled over the samples "
                        "(default: all classes, balanced)")
    parser.add_argument("--prompt", action="append", default=None,
                        help="text-conditional pipelines: a prompt cycled over the samples (repeat for more)")
    add_sampling_arguments(parser, "sampling override when --fake is a pipeline")
    parser.add_argument("--batch-size", type=int, default=64, help="images per forward batch")
    parser.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    parser.add_argument("--json", default=None, help="also write the result to this file")


def _add_image_options(parser: argparse.ArgumentParser, *, needs_real: bool) -> None:
    from arvis.eval.fidelity import MetricSettings

    defaults = MetricSettings()
    _add_source_options(parser, needs_real=needs_real)
    parser.add_argument("--weights", default=None, help="Inception weights file (default: $ARVIS_INCEPTION_WEIGHTS, "
                        "then the torch hub cache)")
    parser.add_argument("--cache-dir", default=str(DEFAULT_CACHE), help="feature cache of the reference set "
                        "('none' disables it)")
    parser.add_argument("--isc-splits", type=int, default=defaults.isc_splits)
    parser.add_argument("--kid-subsets", type=int, default=defaults.kid_subsets)
    parser.add_argument("--kid-subset-size", type=int, default=defaults.kid_subset_size)
    parser.add_argument("--prc-neighborhood", type=int, default=defaults.prc_neighborhood)
    parser.add_argument("--metric-seed", type=int, default=defaults.seed, help="IS shuffling and KID subsets")


def _add_fvd_protocol(parser: argparse.ArgumentParser) -> None:
    from arvis.eval.fvd import FVDConfig

    defaults = FVDConfig()
    parser.add_argument("--num-frames", type=int, default=defaults.num_frames)
    parser.add_argument("--frame-stride", type=int, default=defaults.frame_stride)
    parser.add_argument("--resolution", type=int, default=defaults.resolution)
    parser.add_argument("--max-real", type=int, default=defaults.max_real)
    parser.add_argument("--max-fake", type=int, default=defaults.max_fake)
    if not any(action.dest == "batch_size" for action in parser._actions):
        parser.add_argument("--batch-size", type=int, default=defaults.batch_size)


def _fake_images(args: argparse.Namespace):
    """The --fake image set: files as they are, or a pipeline sampled now."""
    from arvis.eval.images import open_images, sample_pipeline

    fake = Path(args.fake)
    if (fake / "pipeline.json").is_file():
        if args.num_samples is None:
            raise ValueError("--fake is a pipeline folder: pass --num-samples to say how many images to sample")
        sampling = sampling_overrides(args)
        return sample_pipeline(fake, num_samples=args.num_samples, seed=args.sample_seed, labels=args.labels,
                               prompts=args.prompt, batch_size=args.batch_size, progress=True, device=args.device, **sampling)
    if args.num_samples is not None:
        raise ValueError("--num-samples applies to pipeline folders only; --fake is a set of images")
    return open_images(fake)


def _image_metric(args: argparse.Namespace) -> None:
    from arvis.eval.fidelity import MetricSettings, image_metrics

    settings = MetricSettings(isc_splits=args.isc_splits, kid_subsets=args.kid_subsets,
                              kid_subset_size=args.kid_subset_size, prc_neighborhood=args.prc_neighborhood,
                              seed=args.metric_seed, batch_size=args.batch_size)
    cache_dir = None if args.cache_dir.lower() == "none" else args.cache_dir
    result = image_metrics(_fake_images(args), args.real, metrics=[args.metric], weights_path=args.weights,
                           settings=settings, cache_dir=cache_dir, device=args.device, progress=True)
    _emit(result, args)


def _fd_builtin(args: argparse.Namespace) -> None:
    from arvis.eval.glyph_classifier import load_glyph_classifier
    from arvis.eval.glyph_metrics import glyph_metrics
    from arvis.eval.images import open_images

    fake = _fake_images(args)
    fake_images = fake.tensor()
    if args.real == GLYPHS:
        real_images, real_description = _rendered_glyphs(args.num_real, fake_images.shape[-1], args.real_seed)
    else:
        real = open_images(args.real)
        real_images, real_description = real.tensor(), real.description
    device = args.device or "cpu"
    result = glyph_metrics(fake_images, fake.labels, real_images, load_glyph_classifier(device=device),
                           batch_size=args.batch_size)
    metrics = {"fd_glyphs": result["fd_glyphs"], "glyph_accuracy": result["glyph_accuracy"]}
    _emit({"metrics": metrics, "protocol": {**result["protocol"], "fake": fake.description,
                                            "real": real_description}}, args)


def _rendered_glyphs(num_images: int, size: int, seed: int):
    from arvis.data import GlyphDataset
    from arvis.eval.images import to_uint8_chw

    images, _ = GlyphDataset(num_images, image_size=size, seed=seed).tensors()
    return to_uint8_chw(images, value_range=(0, 1)), {"kind": "rendered glyphs", "num_images": num_images,
                                                      "size": [size, size], "seed": seed}


def _fvd_config(args: argparse.Namespace):
    from arvis.eval.fvd import FVDConfig

    return FVDConfig(num_frames=args.num_frames, frame_stride=args.frame_stride, resolution=args.resolution,
                     max_real=args.max_real, max_fake=args.max_fake, detector_path=args.detector,
                     **({"batch_size": args.batch_size} if args.batch_size is not None else {}))


def _fvd(args: argparse.Namespace) -> None:
    from arvis.eval.fvd import compute_fvd

    result = compute_fvd(args.real, args.fake, _fvd_config(args))
    _emit({"metrics": {"fvd": result["fvd"]}, "protocol": result["protocol"]}, args)


def _reference_stats(args: argparse.Namespace) -> None:
    if args.kind == "fid":
        from arvis.eval.fidelity import reference_statistics

        protocol = reference_statistics(args.real, args.out, weights_path=args.weights, device=args.device,
                                        progress=True)
    else:
        from arvis.eval.fvd import load_i3d, resolve_i3d_path, save_fvd_stats, video_feature_stats

        config = _fvd_config(args)
        detector = load_i3d(resolve_i3d_path(config.detector_path), args.device or "cpu")
        protocol = save_fvd_stats(args.out, video_feature_stats(args.real, detector, config), config)
    print(json.dumps({"out": str(args.out), "protocol": protocol}, indent=2))


def _emit(result: dict[str, Any], args: argparse.Namespace) -> None:
    from arvis.eval.report import finish_report, write_report

    report = finish_report(result, command=getattr(args, "command_line", None))
    if args.json:
        write_report(args.json, report)
    print(json.dumps(report, indent=2))
