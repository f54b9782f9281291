"""Distilled Decoding (DD1): one- and two-step sampling of raster and VAR generators."""

from arvis.posttrain.distilled_decoding.model import DistilledGenerator, DistilledOutput
from arvis.posttrain.distilled_decoding.sampler import DistilledSampler, DistilledSettings
from arvis.posttrain.distilled_decoding.raster import DistilledRaster, DistilledRasterConfig
from arvis.posttrain.distilled_decoding.var import DistilledVAR, DistilledVARConfig
from arvis.posttrain.distilled_decoding.method import DistilledDecoding, DistilledDecodingConfig

__all__ = ["DistilledDecoding", "DistilledDecodingConfig", "DistilledGenerator", "DistilledOutput", "DistilledRaster", "DistilledRasterConfig", "DistilledSampler", "DistilledSettings", "DistilledVAR",
           "DistilledVARConfig"]
