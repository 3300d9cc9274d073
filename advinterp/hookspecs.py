"""Every hook advinterp defines (pluggy project name ``"advinterp"``).

A plugin is a module or object with functions decorated by :data:`hookimpl` whose names
match the specs below. Collection hooks receive a ``register`` callback; call it once per
component::

    from advinterp import hookimpl

    @hookimpl
    def advinterp_register_analyzers(register):
        register(MyAnalyzer)            # name taken from MyAnalyzer.name
        register(OtherAnalyzer, name="other")

The reference for each hook is in ``docs/hooks.md`` (a test checks that every hook here is
documented there).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Optional

import pluggy

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from .ablation import GridAblationBackend

PROJECT = "advinterp"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

#: ``register(component, name=None)``: the callback the collection hooks receive.
Register = Callable[..., None]


@hookspec
def advinterp_register_attacks(register: Register) -> None:
    """Register :class:`advinterp.Attack` subclasses.

    Call ``register(AttackClass, name=None)``; ``name`` defaults to ``AttackClass.name``.
    Users get an instance with ``advinterp.get_attack(name, **params)``.
    """


@hookspec
def advinterp_register_explainers(register: Register) -> None:
    """Register :class:`advinterp.Explainer` subclasses (``register(ExplainerClass, name=None)``).

    Users get an instance with ``advinterp.get_explainer(name, **params)``.
    """


@hookspec
def advinterp_register_analyzers(register: Register) -> None:
    """Register :class:`advinterp.Analyzer` subclasses (``register(AnalyzerClass, name=None)``).

    Users get an instance with ``advinterp.get_analyzer(name, **params)``.
    """


@hookspec
def advinterp_register_datasets(register: Register) -> None:
    """Register dataset factories: ``register(factory, name)``.

    ``factory(**params)`` returns a map-style dataset whose items are ``(x, y)`` with ``x``
    a ``(C, H, W)`` float tensor in [0, 1]. Its docstring is shown by ``advinterp list``.
    """


@hookspec
def advinterp_register_models(register: Register) -> None:
    """Register model factories: ``register(factory, name)``.

    ``factory(**params)`` returns an :class:`advinterp.ModelAdapter`. Its docstring is shown
    by ``advinterp list``.
    """


@hookspec(firstresult=True)
def advinterp_grid_ablation_backend(device: "torch.device") -> Optional["GridAblationBackend"]:
    """Return the grid-ablation backend to use on ``device``, or ``None`` to pass.

    ``firstresult``: the first non-``None`` answer wins, so a compiled extension
    (registered normally) is asked before the core's pure-PyTorch reference, which is
    registered with ``trylast=True`` and always answers. A backend is an object with
    ``name: str`` and ``ablate(x_adv, x0, boxes, start, count) -> Tensor`` (see
    :class:`advinterp.ablation.GridAblationBackend`). A plugin should return ``None`` for
    devices it cannot serve.
    """


def hook_names() -> list[str]:
    """Names of every hookspec in this module (used by the docs test and ``advinterp list``)."""
    return sorted(n for n, f in globals().items() if n.startswith("advinterp_") and callable(f))


