"""Every module in this package registers its model(s) on import; new files are found automatically."""

import importlib
import pkgutil

from aecore.models.base import (BASELINE, CONTRACTIVE, GENERATIVE, GREEDY_STAGES, HYPERNETWORK, RANKED_CODE, ROLES,
                                 SEMI_SUPERVISED, SPARSE_CODE, AutoEncoder, ModelOutput, RegularizerWeight)
from aecore.models.registry import (build_model, get_config_class, get_model_class, has_role, list_models, make_config,
                                    models_with, register_model)

_INFRA = {"base", "registry", "layers"}
for _info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    if _info.name not in _INFRA and not _info.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_info.name}")

__all__ = ["BASELINE", "CONTRACTIVE", "GENERATIVE", "GREEDY_STAGES", "HYPERNETWORK", "RANKED_CODE", "ROLES",
           "SEMI_SUPERVISED", "SPARSE_CODE", "AutoEncoder", "ModelOutput", "RegularizerWeight", "build_model",
           "get_config_class", "get_model_class", "has_role", "list_models", "make_config", "models_with",
           "register_model"]
