"""Report sections of the core's components (the ``advinterp_report_section`` hook).

One module per topic; :data:`SECTIONS` maps ``(group kind, component name)`` to the function
building the section from a :class:`~advinterp.study.views.ReportGroup` (saved results only).
Groups without an entry get :func:`advinterp.study.report.generic_section`.
"""
from __future__ import annotations

from typing import Callable

from ..report import Section
from ..study.views import ReportGroup, Run
from . import attacks, cam, data, models, pse, refine

__all__ = ["SECTIONS", "builtin_section"]

SECTIONS: dict[tuple[str, str], Callable[[ReportGroup, Run], Section]] = {
    ("data", "synthetic"): data.world_section,
    ("probe", "accuracy"): models.accuracy_section,
    ("analyzer", "activation_distance"): models.activation_distance_section,
    ("attack", "*"): attacks.attacks_section,
    ("explainer", "*"): cam.explainer_section,
    ("analyzer", "is"): cam.is_section,
    ("analyzer", "pse"): pse.pse_section,
    ("analyzer", "refine"): refine.refine_section,
}


def builtin_section(group: ReportGroup, run: Run) -> Section:
    """The core's section for ``group`` (the generic one for components it does not know)."""
    from ..study.report import generic_section

    fn = SECTIONS.get((group.kind, group.name)) or SECTIONS.get((group.kind, "*"))
    return fn(group, run) if fn is not None else generic_section(group, run)
