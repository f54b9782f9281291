"""Converters from upstream checkpoints (VAR, LlamaGen, ...) to arvis pipeline folders.

Each converter reads the original files safely (``weights_only`` pickles or safetensors), infers the
architecture from tensor shapes, maps the keys strictly (every missing, unexpected or misshapen tensor
is named) and writes a folder that ``arvis.pipeline.Pipeline.from_pretrained`` loads. Shared helpers
live in :mod:`arvis.convert.common`; one module per upstream project.
"""
