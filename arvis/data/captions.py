"""Glyph captions: the renderer's parameters in words, with fixed bins shared by the captioner and the evaluator.

A caption names the class, the colour (a hue bin of the foreground), the size (a bin of the scale over
``SCALE_RANGE`` = 0.45–0.75) and the position (a bin of the centre over the range a glyph of that size can reach,
which shrinks as the size grows: ``centre_reach``), e.g. "a small red ring at the top left". The evaluator
(:mod:`arvis.eval.glyph_attributes`) measures the same attributes from a generated image's foreground and puts
them in the same bins, so "matching" means the same bin on both sides.
"""

from __future__ import annotations

import colorsys

from arvis.data.glyphs import GLYPH_CLASSES, SCALE_RANGE, GlyphParams, centre_reach

HUE_NAMES = ("red", "yellow", "green", "cyan", "blue", "magenta")  # centred on hues 0, 1/6, ..., 5/6
SIZE_NAMES = ("small", "medium", "large")  # equal thirds of SCALE_RANGE
COLUMN_NAMES = ("left", "", "right")  # thirds of the reachable centre range in x
ROW_NAMES = ("top", "", "bottom")  # thirds in y (y points down)
CLASS_WORDS = tuple(name.replace("_", " ") for name in GLYPH_CLASSES)  # "square outline", "horizontal bars"


def hue_bin(rgb: tuple[float, float, float]) -> int:
    """The index into ``HUE_NAMES`` of a colour's hue (bins of width 1/6 centred on the named hues)."""
    hue = colorsys.rgb_to_hsv(*rgb)[0]
    return round(hue * len(HUE_NAMES)) % len(HUE_NAMES)


def size_bin(scale: float) -> int:
    """The index into ``SIZE_NAMES`` of a glyph scale (values outside ``SCALE_RANGE`` go to the end bins)."""
    low, high = SCALE_RANGE
    return min(len(SIZE_NAMES) - 1, max(0, int((scale - low) / (high - low) * len(SIZE_NAMES))))


def position_bins(centre: tuple[float, float], scale: float) -> tuple[int, int]:
    """(column, row) indices into ``COLUMN_NAMES`` / ``ROW_NAMES``: thirds of the centre range that a glyph of
    ``scale`` can reach (a centre at the limit of its reach is at the edge whatever the size)."""
    reach = centre_reach(scale)

    def third(value: float) -> int:
        if reach <= 0:
            return 1
        return min(2, max(0, int((value / reach + 1) / 2 * 3)))

    return third(centre[0]), third(centre[1])


def position_phrase(column: int, row: int) -> str:
    """"at the top left", "at the left", "in the centre", ..."""
    words = " ".join(word for word in (ROW_NAMES[row], COLUMN_NAMES[column]) if word)
    return f"at the {words}" if words else "in the centre"


def caption(label: int, params: GlyphParams) -> str:
    """"a <size> <colour> <class> <position>", e.g. "a small red ring at the top left"."""
    column, row = position_bins(params.centre, params.scale)
    return (f"a {SIZE_NAMES[size_bin(params.scale)]} {HUE_NAMES[hue_bin(params.foreground)]} "
            f"{CLASS_WORDS[label]} {position_phrase(column, row)}")


def caption_vocabulary() -> list[str]:
    """Every word a glyph caption can use, in a fixed order (the word-level text tokenizer's vocabulary)."""
    words = ["a", "at", "the", "in", "centre", *SIZE_NAMES, *HUE_NAMES,
             *(word for name in CLASS_WORDS for word in name.split()), *ROW_NAMES, *COLUMN_NAMES]
    return list(dict.fromkeys(word for word in words if word))
