"""Post-training: methods that take a trained pipeline, never edit its code, and save a new pipeline.

Each method is registered in :data:`METHODS` and run by ``accelerate launch -m arvis.train.posttrain
--method <name> --pipeline DIR``; see :mod:`arvis.posttrain.base` for the interface.
"""

from arvis.posttrain.base import METHODS, PostTrainingMethod, TeacherAdapters, TrainingContext
from arvis.posttrain import distilled_decoding  # noqa: F401  (registers its generators, sampler and method)
from arvis.posttrain import vapi  # noqa: F401  (registers its method)
from arvis.posttrain import controlar  # noqa: F401  (registers its generator, sampler and method)
from arvis.posttrain import sdar  # noqa: F401  (registers its generator and method)
from arvis.posttrain import sar  # noqa: F401  (registers its method)
from arvis.posttrain import orthus  # noqa: F401  (registers its method)

__all__ = ["METHODS", "PostTrainingMethod", "TeacherAdapters", "TrainingContext"]
