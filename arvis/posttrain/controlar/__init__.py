"""ControlAR: spatial control (masks, edge maps) of raster generators by conditional decoding."""

from arvis.posttrain.controlar.encoder import ControlEncoder, ControlEncoderConfig
from arvis.posttrain.controlar.model import ControlARRaster, ControlARRasterConfig
from arvis.posttrain.controlar.sampler import ControlledNextTokenSampler, ControlledNextTokenSettings
from arvis.posttrain.controlar.method import ControlAR, ControlARConfig

__all__ = ["ControlAR", "ControlARConfig", "ControlARRaster", "ControlARRasterConfig", "ControlEncoder", "ControlEncoderConfig",
           "ControlledNextTokenSampler", "ControlledNextTokenSettings"]
