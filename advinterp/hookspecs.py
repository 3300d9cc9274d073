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
    from .executor import Executor
    from .report import Section
    from .study import ReportGroup, Run

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
def advinterp_register_probes(register: Register) -> None:
    """Register :class:`advinterp.Probe` subclasses (``register(ProbeClass, name=None)``).

    A probe is a model-level analysis over a dataset (accuracy, network dissection, ...):
    ``run(model, data, **context) -> Result``. Users get an instance with
    ``advinterp.get_probe(name, **params)``.
    """


@hookspec
def advinterp_register_supports(register: Register) -> None:
    """Register support rules of refined attacks: ``register(rule, name)``.

    ``rule(model, batch, **context)`` returns the ``(N, 1, H, W)`` bool support of the
    :class:`advinterp.AdversarialBatch` ``batch`` (pixels an attack may change; eq. 11 of
    the PSE paper). Built in: ``S1`` (grids of high PSE significance), ``S2`` (the CAM
    region of the true class). The ``refine`` analyzer runs an attack under any of them.
    """


@hookspec
def advinterp_register_papers(register: Register) -> None:
    """Register paper comparisons: ``register(section, name)``.

    ``section(group, run)`` returns the :class:`advinterp.report.Section` that sets a run's
    numbers next to the numbers a paper reports: for each finding, the paper's value (its
    table and row cited), the measured one with its standard error, and whether the run
    reproduces it. A study asks for it with the top-level key ``compare = ["name"]``; the
    section then receives every finished step of the run (``group.kind == "paper"``,
    ``group.name == name``, ``group.steps``) and must build from saved results only, saying
    which steps it needs when they are missing rather than raising. Built in: ``xu2019``
    (the PSE paper, Xu et al., ICLR 2019). :func:`advinterp.testing.check_paper` checks one.
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


@hookspec(firstresult=True)
def advinterp_report_section(group: "ReportGroup", run: "Run") -> Optional["Section"]:
    """Return the report section of a group of study steps, or ``None`` to pass.

    ``group`` holds every step of one component (``group.kind``, ``group.name``,
    ``group.steps`` in study order; each step's ``result`` and its ``inputs``' results are
    loaded on demand from the run folder), ``run`` the run folder (``run.out``,
    ``run.save_figure(fig, name)``, ``run.write_text(name, text)``, ``run.summary``).
    Sections are built from saved results only, so ``advinterp report RUN_DIR`` can rebuild
    them without the models. ``firstresult``: a plugin answers for its own components; the
    core answers last with a generic section (each step's ``result.rows()`` as a table).
    """


@hookspec(firstresult=True)
def advinterp_study_executor(engine: str) -> Optional["Executor"]:
    """Return the executor that runs a study's shards for ``engine`` (the ``--engine``
    option), or ``None`` to pass.

    ``firstresult``: the core's in-process executor (``engine="local"``) answers last, like
    the grid-ablation backend; a plugin (e.g. one running shards on a cluster) answers for
    its own engine name. An executor has ``name: str`` and ``run(tasks, done)`` (see
    :class:`advinterp.executor.Executor`).
    """


def hook_names() -> list[str]:
    """Names of every hookspec in this module (used by the docs test and ``advinterp list``)."""
    return sorted(n for n, f in globals().items() if n.startswith("advinterp_") and callable(f))


