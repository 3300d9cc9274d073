"""Report sections of dissection, unit sensitivity and detector views (:class:`advinterp.report.Section`).

Three parts, each drawing its own figures from one saved result:

* :func:`dissection_part` -- a :class:`~advinterp_dissect.dissection.Dissection`;
* :func:`sensitivity_part` -- a :class:`~advinterp_dissect.analysis.SensitivityAnalysis`;
* :func:`views_part` -- :class:`~advinterp_dissect.views.DetectorViews`.

They make the study report's sections (the ``advinterp_report_section`` hook, :data:`SECTIONS`:
the ``dissection`` probe and the ``unit_sensitivity`` and ``detector_views`` analyzers; figure
files prefixed by the step id, NetDissect-Lite ``tally_<layer>.csv`` files under
``dissection/<step id>/``, headline numbers in ``run.summary``) and, together, the one section
of :func:`dissection_section` for a script.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from advinterp.api import ParameterError, Section, save_figure

from .analysis import SensitivityAnalysis
from .dissection import Dissection, _safe
from .views import DetectorViews

if TYPE_CHECKING:  # pragma: no cover
    from advinterp.api import ReportGroup, Run, StepView

__all__ = ["dissection_section", "dissection_part", "sensitivity_part", "views_part", "SECTIONS"]

#: ``save(figure, name, caption)``: how a part stores a figure (the caller picks the file name).
Save = Callable[[Any, str, str], None]
Tables = list[tuple[str, list[dict]]]


def dissection_part(dissection: Dissection, save: Save, top_k: int = 5) -> tuple[list[str], Tables]:
    """Figures ``detectors`` and ``top_units``; text; tables: detectors per layer and
    category, the top ``top_k`` units per layer."""
    from .viz import plot_detector_counts, plot_top_units

    if not isinstance(dissection, Dissection):
        raise ParameterError("dissection_section", "dissection", dissection, "a Dissection")
    save(plot_detector_counts(dissection, top=False), "detectors",
         f"Concept detectors (max IoU > {dissection.iou_threshold}) per category and layer, all units")
    save(plot_top_units(dissection), "top_units", "Most interpretable units per layer and their top concept")
    text = [f"Dissection of {dissection.model} over {dissection.n_images} Broden images "
            f"({dissection.dataset}); T_k = top {dissection.quantile:g} quantile of each unit's activations, "
            "M_k = S_k > T_k with S_k upsampled bilinearly to the label resolution; IoU with NetDissect's "
            "union convention; IoU(k) = mean over all concepts."]
    tables = [("Detectors per layer and category (all units)", dissection.rows()),
              ("Top units per layer", [r for ld in dissection.layers.values()
                                       for r in ld.top_units(top_k, dissection.iou_threshold)])]
    return text, tables


def sensitivity_part(analysis: SensitivityAnalysis, save: Save, top_k: int = 5) -> tuple[list[str], Tables]:
    """Figures ``pvalues`` (Fig. 7a), ``detectors_top`` (Fig. 7b) and ``sensitivity_vs_iou``;
    text; tables: p-values, detectors among the top-N sensitive units, most sensitive units."""
    from .viz import plot_detector_counts, plot_pvalues, plot_sensitivity_vs_iou

    if not isinstance(analysis, SensitivityAnalysis):
        raise ParameterError("dissection_section", "analysis", analysis, "a SensitivityAnalysis or None")
    save(plot_pvalues(analysis), "pvalues", "p-value of sum IoU(k) over the top-N sensitive units vs N (Fig. 7a)")
    save(plot_detector_counts(analysis, top=True), "detectors_top",
         "Concept detectors among the top-N sensitive units per layer (Fig. 7b)")
    save(plot_sensitivity_vs_iou(analysis), "sensitivity_vs_iou", "Unit sensitivity v(k) against IoU(k)")
    text = [f"Unit sensitivity v(k) = E||M_k(x) - M_k(x')||_2 over {analysis.n_pairs} {analysis.attack} "
            f"pairs (success rate {analysis.success_rate:.2f}); the p-value compares the sum of IoU(k) over "
            "the N most sensitive units with N random units."]
    tables = [("p-value per layer and N (Fig. 7a)", analysis.rows()),
              ("Detectors among the top-N sensitive units (Fig. 7b)", analysis.detector_rows()),
              ("Most sensitive units", [r for ls in analysis.layers.values() for r in ls.top_units(top_k)])]
    return text, tables


def views_part(views: DetectorViews, save: Save) -> tuple[list[str], Tables]:
    """Figure ``views`` (Fig. 8); table: mask area and clean/adversarial mask agreement."""
    from .viz import plot_detector_views

    if not isinstance(views, DetectorViews):
        raise ParameterError("dissection_section", "views", views, "DetectorViews or None")
    save(plot_detector_views(views), "views",
         "Inputs segmented by M_k(x) (Ori) and M_k(x') (Adv) for concept detectors (Fig. 8)")
    return [], [("Detector views: mask area and clean/adversarial mask agreement", views.rows())]


def dissection_section(run_dir: str | Path, dissection: Dissection, analysis: SensitivityAnalysis | None = None,
                       views: DetectorViews | None = None, prefix: str = "dissection",
                       title: str = "Network dissection and unit sensitivity (Figs. 7-8)",
                       top_k: int = 5) -> Section:
    """Write the figures under ``run_dir/<prefix>_*.png`` and return one report section.

    Args:
        run_dir: the run directory (figure paths in the section are relative to it).
        dissection: the :class:`~advinterp_dissect.dissection.Dissection`.
        analysis: optional :class:`~advinterp_dissect.analysis.SensitivityAnalysis`
            (adds Fig. 7a/7b and the sensitivity tables).
        views: optional :class:`~advinterp_dissect.views.DetectorViews` (adds Fig. 8).
        prefix: file-name prefix of the figures.
        title: section title.
        top_k: units per layer in the "top units" tables.

    Returns:
        A :class:`~advinterp.report.Section` with tables (detectors per layer and category,
        top units, p-values, detectors among the top-N sensitive units, detector views) and
        figures.
    """
    run_dir = Path(run_dir)
    figs: list[tuple[str, str]] = []

    def save(fig, name: str, caption: str) -> None:
        rel = f"{prefix}_{name}.png"
        save_figure(fig, run_dir / rel)
        figs.append((caption, rel))

    text, tables = dissection_part(dissection, save, top_k)
    for part in ([] if analysis is None else [sensitivity_part(analysis, save, top_k)]) + (
            [] if views is None else [views_part(views, save)]):
        text += part[0]
        tables += part[1]
    return Section(title, text, tables=tables, figures=figs)


# ---------------------------------------------------------------------------- study report sections
def _steps_section(group: "ReportGroup", run: "Run", title: str,
                   part: Callable[["StepView", Save], tuple[list[str], Tables]]) -> Section:
    """One section over the steps of ``group``: ``part(step, save)`` per step, its figures
    saved as ``<step id>_<name>.png`` and its text and captions labelled by the step id."""
    text: list[str] = []
    tables: Tables = []
    figs: list[tuple[str, str]] = []
    for step in group.steps:
        def save(fig, name: str, caption: str, step=step) -> None:
            figs.append((f"{caption} -- {step.id}", run.save_figure(fig, f"{_safe(step.id)}_{name}.png")))

        t, tb = part(step, save)
        text += [f"{step.id}: {line}" for line in t]
        tables += [(f"{caption} -- {step.id}", rows) for caption, rows in tb]
    return Section(title, text, tables=tables, figures=figs)


def dissection_probe_section(group: "ReportGroup", run: "Run") -> Section:
    """The ``dissection`` probe steps: figures and tables of each, its NetDissect-Lite
    ``tally_<layer>.csv`` files in ``dissection/<step id>/``; ``run.summary["dissection"]``
    holds per step the layer rows and the tally files."""
    summary = run.summary.setdefault("dissection", {})

    def part(step, save):
        d = step.result
        text, tables = dissection_part(d, save)
        tally = {k: p.relative_to(run.out).as_posix()
                 for k, p in d.write_tallies(run.out / "dissection" / _safe(step.id)).items()}
        summary[step.id] = {"layers": d.rows(), "tally": tally}
        return text + [f"NetDissect-Lite tally files: {', '.join(tally.values())}."], tables

    return _steps_section(group, run, "Network dissection (A8, Fig. 7b)", part)


def unit_sensitivity_section(group: "ReportGroup", run: "Run") -> Section:
    """The ``unit_sensitivity`` steps (Fig. 7); ``run.summary["unit_sensitivity"]`` holds per
    step the p-values and the detectors among the top-N sensitive units."""
    summary = run.summary.setdefault("unit_sensitivity", {})

    def part(step, save):
        a = step.result
        summary[step.id] = {"p_values": a.rows(), "detectors_top_n": a.detector_rows()}
        return sensitivity_part(a, save)

    return _steps_section(group, run, "Unit sensitivity and interpretability (A9, Fig. 7)", part)


def detector_views_section(group: "ReportGroup", run: "Run") -> Section:
    """The ``detector_views`` steps (Fig. 8); ``run.summary["detector_views"]`` holds per step
    the rows of its views."""
    summary = run.summary.setdefault("detector_views", {})

    def part(step, save):
        summary[step.id] = step.result.rows()
        return views_part(step.result, save)

    return _steps_section(group, run, "Detector views (A10, Fig. 8)", part)


#: ``(group kind, component name)`` -> the section the plugin answers with.
SECTIONS: dict[tuple[str, str], Callable[["ReportGroup", "Run"], Section]] = {
    ("probe", "dissection"): dissection_probe_section,
    ("analyzer", "unit_sensitivity"): unit_sensitivity_section,
    ("analyzer", "detector_views"): detector_views_section,
}
