"""Checking image files before training: the header opens, and the file is not cut short.

A truncated file (an interrupted copy or download) still has a valid header, so opening it succeeds and the
damage shows only when its pixels are decoded, hours into a run. :func:`file_end_problem` catches it from the
last bytes alone, without decoding: a JPEG ends with its end-of-image marker (FF D9), a PNG with its ``IEND``
chunk, a GIF with its trailer byte (3B); a BMP or WebP file is at least as long as its header says. Up to
``TRAILER_SLACK`` bytes after the end marker are allowed (some writers append padding or metadata). Other
formats (TIFF, PPM, ...) get the header check only.

Cost: one extra seek and read of at most ``TRAILER_SLACK`` bytes per file (see
``benchmarks/verify_images.py`` for the time per 10k files).
"""

from __future__ import annotations

import struct
from pathlib import Path

from PIL import Image

TRAILER_SLACK = 4096  # bytes allowed after the end marker
PNG_END = b"IEND\xaeB`\x82"
JPEG_END = b"\xff\xd9"


def file_end_problem(path: Path, image_format: str | None) -> str | None:
    """None if ``path`` (whose header PIL read as ``image_format``) ends as its format requires, else the reason."""
    size = path.stat().st_size
    with path.open("rb") as handle:
        if image_format in ("BMP", "WEBP"):
            head = handle.read(8)
            declared = struct.unpack("<I", head[2:6])[0] if image_format == "BMP" else struct.unpack("<I", head[4:8])[0] + 8
            return None if size >= declared else f"truncated: {size} bytes, its header says {declared}"
        handle.seek(max(0, size - TRAILER_SLACK))
        tail = handle.read()
    if image_format == "JPEG" and JPEG_END not in tail:
        return "truncated: no JPEG end-of-image marker (FF D9) at the end of the file"
    if image_format == "PNG" and PNG_END not in tail:
        return "truncated: no PNG IEND chunk at the end of the file"
    if image_format == "GIF" and not tail.rstrip(b"\x00").endswith(b"\x3b"):
        return "truncated: no GIF trailer (3B) at the end of the file"
    return None


def image_file_problem(path: Path, *, decode: bool = False) -> str | None:
    """None if ``path`` opens as an image, is not cut short (:func:`file_end_problem`) and, with ``decode``,
    decodes; else ``"path: reason"``."""
    try:
        with Image.open(path) as image:
            image_format = image.format
            if decode:
                image.load()
        problem = file_end_problem(path, image_format)
    except (OSError, SyntaxError, ValueError, struct.error, Image.DecompressionBombError) as error:
        return f"{path}: {error}"
    return f"{path}: {problem}" if problem else None
