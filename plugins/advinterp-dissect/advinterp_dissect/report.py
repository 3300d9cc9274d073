"""The HTML report section of a dissection / sensitivity run (:class:`advinterp.report.Section`)."""
from __future__ import annotations

from pathlib import Path

from advinterp.exceptions import ParameterError
from advinterp.report import Section
from advinterp.viz import save_figure

from .analysis import SensitivityAnalysis
from .dissection import Dissection
from .views import DetectorViews

__all__ = ["dissection_section"]


def dissection_section(run_dir: str | Path, dissection: Dissection, analysis: SensitivityAnalysis | None = None,
                       views: DetectorViews | None = None, prefix: str = "dissection",
                       title: str = "Network dissection and unit sensitivity (Figs. 7-8)",
                       top_k: int = 5) -> Section:
    """Write the figures under ``run_dir/<prefix>_*.png`` and return the report section.

    Args:
        run_dir: the run directory (figure paths in the section are relative to it).
        dissection: the :class:`~advinterp_dissect.dissection.Dissection`.
        analysis: optional :class:`~advinterp_dissect.analysis.SensitivityAnalysis`
            (adds Fig. 7a/7b and the sensitivity tables).
        views: optional :class:`~advinterp_dissect.views.DetectorViews` (adds Fig. 8).
        prefix: file-name prefix of the figures.
        title: section title.
        top_k: units per layer in the "top units" table.

    Returns:
        A :class:`~advinterp.report.Section` with tables (detectors per layer and category,
        top units, p-values, detectors among the top-N sensitive units, detector views) and
        figures.
    """
    from .viz import (plot_detector_counts, plot_detector_views, plot_pvalues, plot_sensitivity_vs_iou,
                      plot_top_units)

    if not isinstance(dissection, Dissection):
        raise ParameterError("dissection_section", "dissection", dissection, "a Dissection")
    run_dir = Path(run_dir)
    figs: list[tuple[str, str]] = []

    def save(fig, name: str, caption: str) -> None:
        rel = f"{prefix}_{name}.png"
        save_figure(fig, run_dir / rel)
        figs.append((caption, rel))

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
    if analysis is not None:
        if not isinstance(analysis, SensitivityAnalysis):
            raise ParameterError("dissection_section", "analysis", analysis, "a SensitivityAnalysis or None")
        save(plot_pvalues(analysis), "pvalues", "p-value of sum IoU(k) over the top-N sensitive units vs N (Fig. 7a)")
        save(plot_detector_counts(analysis, top=True), "detectors_top",
             "Concept detectors among the top-N sensitive units per layer (Fig. 7b)")
        save(plot_sensitivity_vs_iou(analysis), "sensitivity_vs_iou", "Unit sensitivity v(k) against IoU(k)")
        text.append(f"Unit sensitivity v(k) = E||M_k(x) - M_k(x')||_2 over {analysis.n_pairs} {analysis.attack} "
                    f"pairs (success rate {analysis.success_rate:.2f}); the p-value compares the sum of IoU(k) over "
                    "the N most sensitive units with N random units.")
        tables += [("p-value per layer and N (Fig. 7a)", analysis.rows()),
                   ("Detectors among the top-N sensitive units (Fig. 7b)", analysis.detector_rows()),
                   ("Most sensitive units", [r for ls in analysis.layers.values() for r in ls.top_units(top_k)])]
    if views is not None:
        if not isinstance(views, DetectorViews):
            raise ParameterError("dissection_section", "views", views, "DetectorViews or None")
        save(plot_detector_views(views), "views",
             "Inputs segmented by M_k(x) (Ori) and M_k(x') (Adv) for concept detectors (Fig. 8)")
        tables.append(("Detector views: mask area and clean/adversarial mask agreement", views.rows()))
    return Section(title, text, tables=tables, figures=figs)
