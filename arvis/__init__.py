"""arvis: autoregressive visual generation.

Public API::

    arvis.generate(pipeline_or_path, class_labels=[...], ...)  -> images
    arvis.load(path)                                          -> Pipeline
    arvis.build("vq-tiny")                                    -> a component from a preset
    arvis.list_presets()                                      -> preset names by kind
"""

__version__ = "0.1.0"

from arvis.api import generate, load
from arvis.pipeline import Pipeline
from arvis.presets import build, list_presets

__all__ = ["Pipeline", "__version__", "build", "generate", "list_presets", "load"]
