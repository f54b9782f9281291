"""arvis: autoregressive visual generation.

Public API::

    arvis.generate(pipeline_or_path, class_labels=[...], ...)  -> images
    arvis.load(path)                                          -> Pipeline
    arvis.caption(pipeline, images) / arvis.interleave(pipeline, prompts)  -> captions / text-and-image documents
    arvis.build("vq-tiny")                                    -> a component from a preset
    arvis.list_presets()                                      -> preset names by kind
"""

__version__ = "0.1.0"

from arvis.api import generate, load
from arvis.multimodal import caption, interleave
from arvis.pipeline import Pipeline
from arvis.presets import build, list_presets

__all__ = ["Pipeline", "__version__", "build", "caption", "generate", "interleave", "list_presets", "load"]
