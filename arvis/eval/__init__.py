"""Evaluation: Fréchet distances, torch-fidelity image metrics, FVD, the built-in glyph feature extractor."""
