"""``arvis convert var|llamagen``: released checkpoints to an arvis pipeline folder."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_convert_commands(commands: argparse._SubParsersAction) -> None:
    """Adds ``convert`` with its sub-commands to the ``arvis`` parser."""
    convert = commands.add_parser("convert", help="convert released VAR or LlamaGen checkpoints into a pipeline")
    kinds = convert.add_subparsers(dest="kind", required=True)
    var = kinds.add_parser("var", help="VAR: vae_ch160v4096z32.pth + var_d{16,20,24,30}.pth")
    var.add_argument("--vae", required=True, help="the VAE file (.pth or .safetensors with upstream keys)")
    var.add_argument("--var", required=True, help="the transformer file")
    var.add_argument("--depth", type=int, default=None, help="expected depth (checked against the file)")
    var.add_argument("--patch-nums", type=int, nargs="+", default=None,
                     help="scale sides (default: VAR's 256 px schedule, or the 512 px one for shared AdaLN)")
    var.add_argument("--num-groups", type=int, default=32, help="GroupNorm groups of the VAE (32 when released)")
    llamagen = kinds.add_parser("llamagen", help="LlamaGen: vq_ds16_c2i.pt / vq_ds8_c2i.pt + c2i_*.pt")
    llamagen.add_argument("--vq", required=True, help="the VQ tokenizer file")
    llamagen.add_argument("--gpt", required=True, help="the class-conditional GPT file")
    llamagen.add_argument("--gpt-preset", default=None, help="llamagen-b ... llamagen-3b (default: from the width)")
    llamagen.add_argument("--image-size", type=int, default=None,
                          help="pixels per side the GPT was trained at (default: from the file name, else 256)")
    llamagen.add_argument("--num-classes", type=int, default=None, help="expected classes (checked)")
    llamagen.add_argument("--num-heads", type=int, default=None, help="heads, for widths outside LlamaGen's table")
    llamagen.add_argument("--num-groups", type=int, default=32, help="GroupNorm groups of the VQ (32 when released)")
    for parser in (var, llamagen):
        parser.add_argument("--out", required=True, help="the pipeline folder to write")
        parser.add_argument("--overwrite", action="store_true", help="replace an existing pipeline at --out")
        parser.set_defaults(handler=_convert)


def _convert(args: argparse.Namespace) -> None:
    out = Path(args.out)
    if out.exists() and any(out.iterdir()) and not args.overwrite:
        raise ValueError(f"{out} already exists and is not empty; pass --overwrite to replace a pipeline there")
    if args.kind == "var":
        from arvis.convert.var import convert_var

        folder = convert_var(args.vae, args.var, out, depth=args.depth, patch_nums=args.patch_nums,
                             num_groups=args.num_groups)
    else:
        from arvis.convert.llamagen import convert_llamagen

        folder = convert_llamagen(args.vq, args.gpt, out, gpt_preset=args.gpt_preset, image_size=args.image_size,
                                  num_classes=args.num_classes, num_heads=args.num_heads, num_groups=args.num_groups)
    from arvis.pipeline import Pipeline

    pipeline = Pipeline.from_pretrained(folder)
    print(json.dumps({"pipeline": str(folder), "tokenizer": type(pipeline.tokenizer).__name__,
                      "generator": type(pipeline.generator).__name__, "layout": pipeline.generator.layout.shapes,
                      "generator_parameters": pipeline.generator.num_parameters(),
                      "sampler": pipeline.sampler_name, "sampling": pipeline.sampling.to_dict()}))
