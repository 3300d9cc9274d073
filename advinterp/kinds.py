"""The one table of component kinds, read by the registry, :mod:`advinterp.testing`, the
study layer and the CLI.

A *kind* is one row: its name, the collection hook plugins implement, the base class its
components subclass (``None`` for factories registered with ``register(factory, name)``),
and the names of the :mod:`advinterp.testing` checks every component of the kind must pass.
Adding a kind is adding a row here (plus its hookspec in :mod:`advinterp.hookspecs`)::

    from advinterp.kinds import KINDS, kind
    kind("probe").hook            # "advinterp_register_probes"

The table holds the classes themselves, so this module imports :mod:`advinterp.components`
(and nothing above it).
"""
from __future__ import annotations

from dataclasses import dataclass

from .components import Analyzer, Attack, Explainer, Probe
from .exceptions import ParameterError

__all__ = ["Kind", "KINDS", "KIND_NAMES", "kind"]


@dataclass(frozen=True)
class Kind:
    """One kind of component.

    Attributes:
        name: ``"attack"``, ``"explainer"``, ...
        hook: the collection hookspec (``advinterp_register_<name>s``).
        base: the class components must subclass; ``None``: a callable factory registered
            with a name (``register(factory, name)``).
        checks: names of the :mod:`advinterp.testing` functions run on each component.
        doc: one line for ``advinterp list`` and the docs.
    """

    name: str
    hook: str
    base: type | None
    checks: tuple[str, ...]
    doc: str

    @property
    def plural(self) -> str:
        return f"{self.name}s"

    @property
    def getter(self) -> str:
        """The public function that instantiates one (``advinterp.get_<name>``)."""
        return f"get_{self.name}"


_COMPONENT_CHECKS = ("check_params", "check_output", "check_deterministic", "check_model_unchanged",
                     "check_bad_inputs", "check_empty")

#: Every kind, in the order ``advinterp list`` shows them.
KINDS: tuple[Kind, ...] = (
    Kind("attack", "advinterp_register_attacks", Attack, _COMPONENT_CHECKS + ("check_grad_modes",),
         "generate(model, x, y, target) -> AdversarialBatch"),
    Kind("explainer", "advinterp_register_explainers", Explainer,
         _COMPONENT_CHECKS + ("check_save_load", "check_grad_modes"),
         "explain(model, x, target) -> Attribution; explain_pair(model, batch) -> PairMaps"),
    Kind("analyzer", "advinterp_register_analyzers", Analyzer, _COMPONENT_CHECKS + ("check_save_load",),
         "analyze(model, batch, **context) -> Result"),
    Kind("probe", "advinterp_register_probes", Probe, _COMPONENT_CHECKS + ("check_save_load", "check_sharded"),
         "run(model, data, **context) -> Result: model-level analyses over a dataset"),
    Kind("support", "advinterp_register_supports", None, ("check_support",),
         "support(model, batch, **context) -> (N, 1, H, W) bool mask of refined attacks"),
    Kind("dataset", "advinterp_register_datasets", None, ("check_dataset",),
         "factory(**params) -> map-style dataset of (x, y)"),
    Kind("model", "advinterp_register_models", None, ("check_model_factory",),
         "factory(**params) -> ModelAdapter"),
    Kind("paper", "advinterp_register_papers", None, ("check_paper",),
         "section(group, run) -> Section: a run's numbers next to a paper's (study key compare = [...])"),
)

#: Kind names in table order.
KIND_NAMES: tuple[str, ...] = tuple(k.name for k in KINDS)
_BY_NAME = {k.name: k for k in KINDS}


def kind(name: str) -> Kind:
    """The row of kind ``name``; :class:`ParameterError` listing the kinds otherwise."""
    try:
        return _BY_NAME[name]
    except (KeyError, TypeError):
        raise ParameterError("advinterp kinds", "kind", name, f"one of {', '.join(KIND_NAMES)}") from None
