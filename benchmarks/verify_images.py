"""What ``data.verify_images`` costs before training: seconds per 10k image files for each mode.

    python benchmarks/verify_images.py                      # 2000 JPEG and 2000 PNG files of 256x256
    python benchmarks/verify_images.py --num-files 10000 --size 128

Writes the files into a temporary folder (ImageNet-like content: smooth noise, JPEG quality 90), then times
``ImageFolderDataset(..., verify=mode)`` for ``none``, ``header`` (header + end-of-file check) and ``decode``,
interleaved over ``--repeats`` rounds, and prints the minimum per mode as seconds per 10k files. The files are
read from the page cache after the first round; a cold disk adds its own read time to every mode. Asserts nothing.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from arvis.data import ImageFolderDataset

MODES = ("none", "header", "decode")


def write_files(root: Path, num_files: int, size: int) -> None:
    rng = np.random.default_rng(0)
    for index in range(num_files):
        coarse = rng.integers(0, 256, (size // 16, size // 16, 3), dtype=np.uint8)
        image = Image.fromarray(coarse).resize((size, size), Image.Resampling.BICUBIC)
        folder = root / ("jpeg" if index % 2 else "png")
        folder.mkdir(parents=True, exist_ok=True)
        if index % 2:
            image.save(folder / f"{index:06d}.jpg", quality=90)
        else:
            image.save(folder / f"{index:06d}.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-files", type=int, default=4000)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        write_files(root, args.num_files, args.size)
        megabytes = sum(path.stat().st_size for path in root.rglob("*.*")) / 2**20
        best = {mode: float("inf") for mode in MODES}
        for _ in range(args.repeats):
            for mode in MODES:
                start = time.perf_counter()
                dataset = ImageFolderDataset(root, args.size, verify=mode) if mode == "none" else None
                if mode != "none":
                    dataset = ImageFolderDataset(root, args.size, verify="none")
                    dataset.verify(decode=mode == "decode", num_threads=args.threads)
                best[mode] = min(best[mode], time.perf_counter() - start)
        print(f"{args.num_files} files ({args.size}x{args.size}, half JPEG q90, half PNG; {megabytes:.0f} MB), "
              f"{args.threads} threads, min of {args.repeats}")
        print("| verify_images | s per 10k files |")
        print("|---|---|")
        for mode in MODES:
            print(f"| {mode} | {best[mode] * 10000 / args.num_files:.2f} |")


if __name__ == "__main__":
    main()
