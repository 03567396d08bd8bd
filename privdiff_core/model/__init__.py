"""PrivDiff-Net: VAE, attribute encoder, condition tokens, SAS cross-attention UNet, SPG guidance.

Paper: "Hide Identity, Preserve Pathology" (Akhter, Dosi, Vatsa, Singh, AAAI 2026). Read
`sas.sas_project` and `spg.spg_combine` next to their equations; `PrivDiffModels` ties the parts
together; `folder` saves and loads a trained anonymizer.
"""

from privdiff_core.model.conditioning import Conditions, ConditionsError, ConditionState
from privdiff_core.model.privdiff_net import PrivDiffModels, resolve_device
from privdiff_core.model.sas import SASAttnProcessor, sas_project
from privdiff_core.model.spg import spg_combine
from privdiff_core.model.tokens import CATEGORIES, SENSITIVE, TokenLayout

__all__ = [
    "CATEGORIES",
    "SENSITIVE",
    "ConditionState",
    "Conditions",
    "ConditionsError",
    "PrivDiffModels",
    "SASAttnProcessor",
    "TokenLayout",
    "resolve_device",
    "sas_project",
    "spg_combine",
]
