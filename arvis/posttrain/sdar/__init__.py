"""SDAR: blockwise masked diffusion over raster generators (several tokens per pass)."""

from arvis.posttrain.sdar.model import SDARRaster, SDARRasterConfig
from arvis.posttrain.sdar.method import SDAR, SDARConfig

__all__ = ["SDAR", "SDARConfig", "SDARRaster", "SDARRasterConfig"]
