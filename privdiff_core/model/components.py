"""The library that model_index.json names for privdiff's own pipeline components.

diffusers loads a component listed as ["privdiff_core.model.components", "AttributeEncoder"] by
importing this module, taking the class from it, and choosing the loading method by checking the
class against the base classes *of this same module* (`ModelMixin` must be found here). One stable
module for all of them keeps saved folders loadable when a class moves to another file.
"""

from diffusers import ModelMixin, SchedulerMixin

from privdiff_core.model.attribute_encoder import AttributeEncoder
from privdiff_core.model.conditioning import ConditionEncoder
from privdiff_core.model.unet import SASUNet2DConditionModel

LIBRARY = __name__

__all__ = ["AttributeEncoder", "ConditionEncoder", "ModelMixin", "SASUNet2DConditionModel", "SchedulerMixin"]
