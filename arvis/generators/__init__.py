"""Generators: token sequence models trained with teacher forcing and driven by samplers."""

from arvis.generators.base import GENERATORS, Generator, GeneratorOutput
from arvis.generators.har import HARConfig, HARGenerator
from arvis.generators.interleaved import InterleavedConfig, InterleavedGenerator
from arvis.generators.orthus import OrthusConfig, OrthusGenerator
from arvis.generators.raster import RasterConfig, RasterGenerator
from arvis.generators.sequence import SequenceConfig, SequenceGenerator
from arvis.generators.token_shuffle import TokenShuffleConfig, TokenShuffleGenerator
from arvis.generators.var import VARConfig, VARGenerator

__all__ = ["GENERATORS", "Generator", "GeneratorOutput", "HARConfig", "HARGenerator", "InterleavedConfig",
           "InterleavedGenerator", "OrthusConfig", "OrthusGenerator", "RasterConfig",
           "RasterGenerator", "SequenceConfig", "SequenceGenerator", "TokenShuffleConfig",
           "TokenShuffleGenerator", "VARConfig", "VARGenerator"]
