"""SDAR: blockwise masked diffusion over raster generators (work in progress: the model; the sampler and method are not built)."""
