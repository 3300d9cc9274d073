"""advinterp — interpret adversarial examples at the pixel, image, network and attribute level.

The public API::

    import advinterp
    model = advinterp.get_model("synthetic-cnn")               # a ModelAdapter
    x, y = advinterp.get_dataset("synthetic", n=64).tensors()
    batch = advinterp.get_attack("pgd", eps=8/255, eps_step=2/255, max_iter=10).generate(model, x, y)
    result = advinterp.get_analyzer("activation_distance").analyze(model, batch)
    print(result.table())

Components come from plugins (pluggy, project ``"advinterp"``); ``advinterp list`` shows
them. Write your own with :data:`hookimpl` — see ``docs/plugins.md``.
"""
from __future__ import annotations

__version__ = "0.1.0"

from .components import Analyzer, Attack, Component, Explainer, Probe
from .data import AdversarialBatch, Attribution, PairMaps, random_targets
from .exceptions import (AdvinterpError, DuplicateComponentError, IncompatibleModelError, MissingDependencyError,
                         ParameterError, ResultFileError, UnknownComponentError)
from .hookspecs import hookimpl, hookspec
from .model import ModelAdapter, model_fingerprint
from .params import Param
from .registry import (get_analyzer, get_attack, get_dataset, get_explainer, get_model, get_probe, get_registry,
                       get_support, list_components, list_plugins, register_plugin_object, reload_plugins)
from .results import Result
from .study import Study, run_study

__all__ = [
    "__version__", "Analyzer", "Attack", "Component", "Explainer", "Probe", "get_probe", "get_support",
    "AdversarialBatch", "Attribution",
    "PairMaps", "random_targets", "AdvinterpError", "DuplicateComponentError", "IncompatibleModelError",
    "MissingDependencyError", "ParameterError", "UnknownComponentError", "hookimpl", "hookspec", "ModelAdapter",
    "model_fingerprint", "Param", "get_analyzer", "get_attack", "get_dataset", "get_explainer", "get_model",
    "get_registry", "list_components", "list_plugins", "register_plugin_object", "reload_plugins", "Result",
    "Study", "run_study", "ResultFileError",
]
