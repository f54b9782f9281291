"""Datasets: the embedded procedural glyphs and users' image folders."""

from arvis.data.folder import ImageFolderDataset
from arvis.data.glyphs import GLYPH_CLASSES, GlyphDataset, GlyphParams, render_glyph, render_glyphs, sample_glyph_params
from arvis.data.videos import MovingGlyphDataset, VideoFolderDataset

__all__ = [
    "GLYPH_CLASSES",
    "GlyphDataset",
    "GlyphParams",
    "ImageFolderDataset",
    "MovingGlyphDataset",
    "VideoFolderDataset",
    "render_glyph",
    "render_glyphs",
    "sample_glyph_params",
]
