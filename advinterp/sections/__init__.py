"""Report sections of the core's components (the ``advinterp_report_section`` hook).

One module per topic; :data:`SECTIONS` maps ``(group kind, component name)`` to the function
building the section from a :class:`~advinterp.study.views.ReportGroup` (saved results only).
Groups without an entry get :func:`advinterp.study.report.generic_section`.
"""
from __future__ import annotations

from typing import Callable

from ..report import Section
from ..study.views import ReportGroup, Run
from . import attacks, cam, data, feature_maps, models, pixels, pse, refine

__all__ = ["SECTIONS", "builtin_section", "paper_section"]

SECTIONS: dict[tuple[str, str], Callable[[ReportGroup, Run], Section]] = {
    ("data", "synthetic"): data.world_section,
    ("probe", "accuracy"): models.accuracy_section,
    ("analyzer", "activation_distance"): models.activation_distance_section,
    ("analyzer", "activation_maps"): models.activation_maps_section,
    ("attack", "*"): attacks.attacks_section,
    ("explainer", "*"): cam.explainer_section,
    ("analyzer", "is"): cam.is_section,
    ("analyzer", "pse"): pse.pse_section,
    ("analyzer", "refine"): refine.refine_section,
    ("analyzer", "feature_rmse"): feature_maps.feature_rmse_section,
    ("analyzer", "channel_masking"): feature_maps.channel_masking_section,
    ("analyzer", "filter_scaling"): feature_maps.filter_scaling_section,
    ("analyzer", "pixel_histogram"): pixels.pixel_histogram_section,
    ("analyzer", "cam_replacement"): pixels.cam_replacement_section,
}


def builtin_section(group: ReportGroup, run: Run) -> Section:
    """The core's section for ``group`` (the generic one for components it does not know);
    for a ``paper`` group, the registered comparison of that name."""
    from ..study.report import generic_section

    if group.kind == "paper":
        return paper_section(group, run)

    fn = SECTIONS.get((group.kind, group.name)) or SECTIONS.get((group.kind, "*"))
    return fn(group, run) if fn is not None else generic_section(group, run)


def paper_section(group: ReportGroup, run: Run) -> Section:
    """The section of the paper comparison ``group.name`` (registered with
    ``advinterp_register_papers``), or one saying that no plugin provides it."""
    from ..registry import get_registry

    reg = get_registry()
    if not reg.has("paper", group.name):
        known = ", ".join(i.name for i in reg.list("paper")) or "none"
        return Section(f"Comparison with {group.name}: not available", [
            f"The study asks for compare = [{group.name!r}], but no installed plugin registers a paper comparison of "
            f"that name (registered: {known}). Install the plugin that provides it and rebuild the report with "
            "advinterp report RUN_DIR."])
    return reg.info("paper", group.name).obj(group, run)

